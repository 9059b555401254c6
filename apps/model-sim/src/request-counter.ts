import { createHash } from 'node:crypto';

/**
 * Distinct requests remembered. A fault suite sends a few dozen; the bound only keeps a long-running
 * simulator (benchmarks, the embedded default) from growing without end. Past it the request first
 * seen longest ago is forgotten, and its next call counts as the first again.
 */
export const REQUEST_MEMORY = 10_000;

/**
 * Counts calls per request. Two calls are the same request when they go to the same model with the
 * same messages (directives included, as they are part of the messages): every retry of one
 * pattern step, and every sample a step draws at once, count against the same request, while other
 * steps count on their own.
 */
export class RequestCounter {
  private readonly calls = new Map<string, number>();

  constructor(private readonly memory: number = REQUEST_MEMORY) {}

  /** Counts this call and returns how many calls of its request there have been, this one included. */
  count(model: string, messages: ReadonlyArray<{ role: string; content: string }>): number {
    const key = createHash('sha256')
      .update(JSON.stringify([model, messages]))
      .digest('base64');
    const call = (this.calls.get(key) ?? 0) + 1;
    if (!this.calls.has(key) && this.calls.size >= this.memory) {
      const oldest = this.calls.keys().next();
      if (oldest.done !== true) this.calls.delete(oldest.value);
    }
    // Updating an existing key keeps its place in the Map's order, so "oldest" means first seen.
    this.calls.set(key, call);
    return call;
  }

  reset(): void {
    this.calls.clear();
  }
}
