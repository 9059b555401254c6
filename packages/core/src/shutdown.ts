import type { Logger } from './logger';

export interface ShutdownStep {
  name: string;
  run: () => Promise<void>;
}

/**
 * Named shutdown steps run in order on SIGTERM/SIGINT, each in its own try/catch so one
 * failing step does not skip the rest. A second signal exits at once.
 */
export function onShutdown(logger: Logger, steps: ShutdownStep[], exit: (code: number) => void = process.exit): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) {
      exit(1);
      return;
    }
    stopping = true;
    logger.info('shutting down', { signal });
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
