/** When, and how often, a service that ended on its own is started again. */
export interface RestartPolicy {
  /** Delay before the first restart; it doubles with each crash in a row. */
  backoffMs: number;
  /** The longest delay between two restarts (before jitter). */
  backoffMaxMs: number;
  /** Restarts of one service allowed within `windowMs`; needing one more is a crash loop. 0: the first crash is one. */
  maxRestarts: number;
  windowMs: number;
  /** A process that stayed up this long ran well: its next crash is restarted after `backoffMs` again. */
  stableAfterMs: number;
}

/** What to do about a service whose process just ended. */
export type RestartDecision =
  | {
      restart: true;
      delayMs: number;
      /** Restarts of this service so far, this one included. */
      restarts: number;
      /** Restarts within the policy's window, this one included. */
      restartsInWindow: number;
    }
  | { restart: false; restartsInWindow: number };

/** Jitter adds up to this fraction to a delay, so services that crashed together (a Redis blip) come back spread out. */
const JITTER = 0.2;

/**
 * The restart history of one service: the crashes in a row (for the backoff) and the restarts
 * within the window (for the crash-loop limit). Pure: time and randomness come from the caller.
 */
export class RestartBudget {
  private crashesInARow = 0;
  private restarts = 0;
  private recentRestarts: number[] = [];

  constructor(
    private readonly policy: RestartPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  /** The process ended at `now` after being up `upMs` (0 when it never became ready). */
  next(now: number, upMs: number): RestartDecision {
    if (upMs >= this.policy.stableAfterMs) this.crashesInARow = 0;
    this.recentRestarts = this.recentRestarts.filter((at) => now - at < this.policy.windowMs);
    if (this.recentRestarts.length >= this.policy.maxRestarts) return { restart: false, restartsInWindow: this.recentRestarts.length };
    this.recentRestarts.push(now);
    this.restarts += 1;
    const backoff = Math.min(this.policy.backoffMaxMs, this.policy.backoffMs * 2 ** this.crashesInARow);
    this.crashesInARow += 1;
    return {
      restart: true,
      delayMs: Math.round(backoff * (1 + JITTER * this.random())),
      restarts: this.restarts,
      restartsInWindow: this.recentRestarts.length,
    };
  }
}
