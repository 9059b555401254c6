import type { ChildProcess } from 'node:child_process';
import { RestartBudget, type RestartPolicy } from './restart-budget';

/** How a process ended: its exit code, or the name of the signal that ended it. */
export type ExitStatus = number | string;

/** "code 1" or "signal SIGKILL", for log lines. */
export function describeExit(exit: ExitStatus): string {
  if (typeof exit === 'number') return `code ${exit}`;
  return exit.startsWith('SIG') ? `signal ${exit}` : exit;
}

/** A running child process the launcher started and may start again under the same name. */
export interface SupervisedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** Resolves with the exit code (or signal name) when the process ends. */
  readonly exited: Promise<ExitStatus>;
}

/** A start function's rejection when the process ended before it was ready (so the supervisor knows how). */
export class StartFailedError extends Error {
  override readonly name = 'StartFailedError';

  constructor(
    message: string,
    readonly exit: ExitStatus,
  ) {
    super(message);
  }
}

/** What a supervisor tells its owner. */
export type SupervisionEvent =
  | {
      /** A service ended on its own and will be started again after `delayMs`. */
      type: 'restarting';
      service: string;
      exit: ExitStatus;
      /** True when it was a restart that ended before the service was ready. */
      beforeReady: boolean;
      /** Restarts of this service so far, this one included. */
      restart: number;
      /** Restarts of this service within the policy's window, this one included. */
      restartsInWindow: number;
      delayMs: number;
    }
  | {
      /** A restarted service is ready again. */
      type: 'restarted';
      service: string;
      pid: number | undefined;
      restart: number;
    }
  | {
      /** A service needed more restarts within the window than the policy allows; nothing is restarted any more. */
      type: 'crash-loop';
      service: string;
      exit: ExitStatus;
      beforeReady: boolean;
      restartsInWindow: number;
      windowMs: number;
    };

/** Supervision as the launcher's owners configure it: the policy plus an observer. */
export interface SupervisionOptions extends RestartPolicy {
  /** Told of every restart, every return and a crash loop; must not throw. */
  onEvent?: (event: SupervisionEvent) => void;
}

/**
 * The supervisor an owner of child processes (a Stack, the private Redis) runs when asked to:
 * after a crash loop the owner stops itself, so nothing is left half running.
 */
export function supervisorFor(options: SupervisionOptions | undefined, stopOwner: () => Promise<void>): Supervisor | undefined {
  if (options === undefined) return undefined;
  return new Supervisor(options, (event) => {
    options.onEvent?.(event);
    if (event.type === 'crash-loop') void stopOwner();
  });
}

/**
 * Starts processes again when they end on their own, with exponential backoff and a crash-loop
 * limit per service name. Its owner decides what a crash loop means (the launcher stops
 * everything) and points its references at each new process through `adopt`.
 */
export class Supervisor {
  private stopping = false;
  private readonly budgets = new Map<string, RestartBudget>();
  private readonly pendingRestarts = new Set<NodeJS.Timeout>();
  private readonly startsUnderWay = new Set<Promise<void>>();

  constructor(
    private readonly policy: RestartPolicy,
    private readonly onEvent: (event: SupervisionEvent) => void,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * Watches a ready process: when it ends before `stop()`, `start` runs again (after the backoff)
   * and `adopt` receives the new process once it is ready, which is then watched in turn.
   */
  watch<Process extends SupervisedProcess>(process: Process, start: () => Promise<Process>, adopt: (next: Process) => void): void {
    const readyAt = Date.now();
    void process.exited.then((exit) => this.ended(process.name, exit, Date.now() - readyAt, false, start, adopt));
  }

  /** No more restarts: cancels pending ones and waits for any start under way to settle (the owner stops what it adopted). */
  async stop(): Promise<void> {
    this.stopping = true;
    for (const timer of this.pendingRestarts) clearTimeout(timer);
    this.pendingRestarts.clear();
    await Promise.allSettled([...this.startsUnderWay]);
  }

  private ended<Process extends SupervisedProcess>(
    name: string,
    exit: ExitStatus,
    upMs: number,
    beforeReady: boolean,
    start: () => Promise<Process>,
    adopt: (next: Process) => void,
  ): void {
    if (this.stopping) return;
    const decision = this.budgetOf(name).next(Date.now(), upMs);
    if (!decision.restart) {
      // A crash loop ends supervision of everything: the owner stops the rest, which must not come back.
      this.stopping = true;
      this.onEvent({ type: 'crash-loop', service: name, exit, beforeReady, restartsInWindow: decision.restartsInWindow, windowMs: this.policy.windowMs });
      return;
    }
    const { delayMs, restarts, restartsInWindow } = decision;
    this.onEvent({ type: 'restarting', service: name, exit, beforeReady, restart: restarts, restartsInWindow, delayMs });
    const timer = setTimeout(() => {
      this.pendingRestarts.delete(timer);
      const restart = this.restart(name, restarts, start, adopt).finally(() => this.startsUnderWay.delete(restart));
      this.startsUnderWay.add(restart);
    }, delayMs);
    this.pendingRestarts.add(timer);
  }

  private async restart<Process extends SupervisedProcess>(
    name: string,
    restarts: number,
    start: () => Promise<Process>,
    adopt: (next: Process) => void,
  ): Promise<void> {
    if (this.stopping) return;
    let next: Process;
    try {
      next = await start();
    } catch (error) {
      this.ended(name, error instanceof StartFailedError ? error.exit : 'start failed', 0, true, start, adopt);
      return;
    }
    // Adopted even when stopping began meanwhile, so the owner's stop reaches it.
    adopt(next);
    if (this.stopping) return;
    this.onEvent({ type: 'restarted', service: name, pid: next.child.pid, restart: restarts });
    this.watch(next, start, adopt);
  }

  private budgetOf(name: string): RestartBudget {
    let budget = this.budgets.get(name);
    if (budget === undefined) {
      budget = new RestartBudget(this.policy, this.random);
      this.budgets.set(name, budget);
    }
    return budget;
  }
}
