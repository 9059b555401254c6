import { createHash } from 'node:crypto';
import type { Directives } from './directives';

/**
 * The directives that make a call fail. `fail-times=N` lets the first N identical calls obey them
 * and answers the rest normally, so a test can show a server that fails and then recovers.
 */
const FAULT_KEYS = ['error', 'retry-after', 'retry-after-ms', 'hang', 'hang-after', 'disconnect-after', 'malformed', 'malformed-after'];

/**
 * Distinct requests remembered. A fault suite sends a few dozen; the bound only keeps a long-running
 * simulator (benchmarks, the embedded default) from growing without end. Past it the request first
 * seen longest ago is forgotten, and its next call fails again as if new.
 */
export const FAIL_TIMES_MEMORY = 10_000;

/**
 * Counts calls per request for `fail-times=N`. Two calls are the same request when they go to the
 * same model with the same messages (directives included, as they are part of the messages), so
 * every retry of one pattern step counts against the same N while other steps count on their own.
 */
export class FailTimesCounter {
  private readonly calls = new Map<string, number>();

  constructor(private readonly memory: number = FAIL_TIMES_MEMORY) {}

  /**
   * Counts this call and returns the directives it obeys: all of them while it is among the first
   * `fail-times` calls of its request (or carries no `fail-times`), none of the fault keys after.
   */
  apply(directives: Directives, model: string, messages: ReadonlyArray<{ role: string; content: string }>): Directives {
    const times = directives['fail-times'];
    if (typeof times !== 'string' || !/^\d+$/.test(times.trim())) return directives;
    const key = createHash('sha256').update(JSON.stringify([model, messages])).digest('base64');
    const call = (this.calls.get(key) ?? 0) + 1;
    if (!this.calls.has(key) && this.calls.size >= this.memory) {
      const oldest = this.calls.keys().next();
      if (oldest.done !== true) this.calls.delete(oldest.value);
    }
    this.calls.set(key, call);
    if (call <= Number(times)) return directives;
    const recovered = { ...directives };
    for (const fault of FAULT_KEYS) delete recovered[fault];
    return recovered;
  }

  reset(): void {
    this.calls.clear();
  }
}
