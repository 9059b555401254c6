import type { TaskEventPayload } from '@mageagent/core';
import type { PatternEventSink } from '@mageagent/patterns';
import type { TaskStore } from '@mageagent/tasks';

/**
 * Appends a running task's events to its log. Token deltas are coalesced for up to
 * `flushIntervalMs` (one Redis call per batch instead of one per token); any other
 * event flushes at once. Batches are written strictly in order, each fenced by the attempt
 * the worker runs, so a worker whose task was taken over stops writing into it.
 *
 * While Redis is unreachable the writes wait in the connection's queue and go out in order
 * when it is back (each carries a write id, so a resend is never applied twice).
 */
export class TaskEventWriter implements PatternEventSink {
  private buffer: TaskEventPayload[] = [];
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private failure: unknown;

  constructor(
    private readonly store: TaskStore,
    private readonly taskId: string,
    private readonly flushIntervalMs: number,
    /** The attempt this worker runs; writes are refused once the task's attempt is another. */
    private readonly attempt: number | undefined,
    /** Called when the task turned terminal under us (cancelled) or was taken over: the worker stops the pattern. */
    private readonly onTaskEnded: () => void,
  ) {}

  emit(event: TaskEventPayload): void {
    const last = this.buffer[this.buffer.length - 1];
    if (event.type === 'delta') {
      if (last?.type === 'delta' && last.stepId === event.stepId) last.text += event.text;
      else this.buffer.push({ ...event });
      this.timer ??= setTimeout(() => this.write(), this.flushIntervalMs);
      return;
    }
    this.buffer.push(event);
    this.write();
  }

  /** Writes what is buffered; rejects if any write so far failed. */
  async flush(): Promise<void> {
    this.write();
    await this.chain;
    if (this.failure !== undefined) throw this.failure;
  }

  /** Hands the buffer to the write chain; never rejects (a failure is kept for flush() to report). */
  private write(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.buffer;
    this.buffer = [];
    if (batch.length === 0) return;
    this.chain = this.chain
      .then(() => this.append(batch))
      .catch((error: unknown) => {
        this.failure ??= error;
      });
  }

  private async append(batch: TaskEventPayload[]): Promise<void> {
    const started = [...batch].reverse().find((event) => event.type === 'step.started');
    const fields = started?.type === 'step.started' ? { currentStep: started.step.id } : undefined;
    const outcome = await this.store.transition(this.taskId, { from: ['processing'], events: batch, fields, fence: this.attempt });
    if (!outcome?.applied) this.onTaskEnded();
  }
}
