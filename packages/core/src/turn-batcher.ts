/**
 * Group commit for work that costs a Redis round trip per call: items added during one turn of the
 * event loop are handed over together when it ends (setImmediate, no timer, so a lone item waits
 * for nothing). One batch is handled at a time; items added meanwhile form the next batch, handed
 * over as soon as it is done, so batches grow with the load instead of queueing up as many small
 * calls. Used by the task intake and the requests-per-minute count.
 *
 * `handle` settles every item of its batch itself (resolves or rejects what waits on it); a
 * rejection of `handle` is not an outcome for anyone, only the end of that batch.
 */
export class TurnBatcher<T> {
  private pending: T[] = [];
  private scheduled = false;
  private handling = false;

  constructor(private readonly handle: (batch: T[]) => Promise<void>) {}

  add(item: T): void {
    this.pending.push(item);
    if (!this.scheduled && !this.handling) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.scheduled = false;
    if (this.handling || this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.handling = true;
    const next = () => {
      this.handling = false;
      this.flush();
    };
    this.handle(batch).then(next, next);
  }
}
