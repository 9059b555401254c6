import type { Logger } from './logger';

export interface ShutdownStep {
  name: string;
  run: () => Promise<void>;
}

export interface ShutdownOptions {
  /**
   * The process exits (code 1) this long after the signal even if a step still hangs (a
   * dependency that is down, a client that does not let go), so a deploy is never held up
   * without end. Unset: no deadline.
   */
  deadlineMs?: number;
  exit?: (code: number) => void;
}

/**
 * Named shutdown steps run in order on SIGTERM/SIGINT, each in its own try/catch so one
 * failing step does not skip the rest. A second signal exits at once.
 */
export function onShutdown(logger: Logger, steps: ShutdownStep[], options: ShutdownOptions = {}): void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      exit(1);
      return;
    }
    stopping = true;
    logger.info('shutting down', { signal });
    if (options.deadlineMs !== undefined) {
      const deadline = setTimeout(() => {
        logger.error('shutdown did not finish in time; exiting', { deadlineMs: options.deadlineMs });
        exit(1);
      }, options.deadlineMs);
      deadline.unref();
    }
    void (async () => {
      for (const step of steps) {
        try {
          await step.run();
        } catch (error) {
          logger.error('shutdown step failed', { step: step.name, error: String(error) });
        }
      }
      exit(0);
    })();
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  // Started by a launcher over IPC: when it goes away, so does this process (cleanly).
  if (process.send) process.once('disconnect', () => handler('SIGTERM'));
}
