import type { Directives } from './directives';
import { REQUEST_MEMORY, RequestCounter } from './request-counter';

/**
 * The directives that make a call fail. `fail-times=N` lets the first N identical calls obey them
 * and answers the rest normally, so a test can show a server that fails and then recovers.
 */
const FAULT_KEYS = ['error', 'retry-after', 'retry-after-ms', 'hang', 'hang-after', 'disconnect-after', 'malformed', 'malformed-after'];

/** Distinct requests remembered for `fail-times=` (see `REQUEST_MEMORY`). */
export const FAIL_TIMES_MEMORY = REQUEST_MEMORY;

/**
 * Counts calls per request for `fail-times=N`, so every retry of one pattern step counts against
 * the same N while other steps count on their own (see `RequestCounter` for what "same" means).
 */
export class FailTimesCounter {
  private readonly counter: RequestCounter;

  constructor(memory: number = FAIL_TIMES_MEMORY) {
    this.counter = new RequestCounter(memory);
  }

  /**
   * Counts this call and returns the directives it obeys: all of them while it is among the first
   * `fail-times` calls of its request (or carries no `fail-times`), none of the fault keys after.
   */
  apply(directives: Directives, model: string, messages: ReadonlyArray<{ role: string; content: string }>): Directives {
    const times = directives['fail-times'];
    if (typeof times !== 'string' || !/^\d+$/.test(times.trim())) return directives;
    const call = this.counter.count(model, messages);
    if (call <= Number(times)) return directives;
    const recovered = { ...directives };
    for (const fault of FAULT_KEYS) delete recovered[fault];
    return recovered;
  }

  reset(): void {
    this.counter.reset();
  }
}
