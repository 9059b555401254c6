import type { TaskEventPayload } from '@mageagent/core';
import type { PatternEventSink } from '@mageagent/patterns';
import type { TaskStore } from '@mageagent/tasks';

/**
 * Appends a running task's events to its log. Token deltas are coalesced for up to
 * `flushIntervalMs` (one Redis call per batch instead of one per token); any other
 * event flushes at once. Batches are written strictly in order.
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
    /** Called when the task turned terminal under us (cancelled): the worker stops the pattern. */
    private readonly onTaskEnded: () => void,
  ) {}

  emit(event: TaskEventPayload): void {
    const last = this.buffer[this.buffer.length - 1];
    if (event.type === 'delta') {
      if (last?.type === 'delta' && last.stepId === event.stepId) last.text += event.text;
      else this.buffer.push({ ...event });
      this.timer ??= setTimeout(() => void this.flush(), this.flushIntervalMs);
      return;
    }
    this.buffer.push(event);
    void this.flush();
  }

  /** Writes what is buffered; rejects if any write so far failed. */
  flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.buffer;
    this.buffer = [];
    if (batch.length > 0) {
      this.chain = this.chain.then(() => this.write(batch)).catch((error: unknown) => {
        this.failure ??= error;
      });
    }
    return this.chain.then(() => {
      if (this.failure !== undefined) throw this.failure;
    });
  }

  private async write(batch: TaskEventPayload[]): Promise<void> {
    const started = [...batch].reverse().find((event) => event.type === 'step.started');
    const fields = started?.type === 'step.started' ? { currentStep: started.step.id } : undefined;
    const outcome = await this.store.transition(this.taskId, { from: ['processing'], events: batch, fields });
    if (!outcome?.applied) this.onTaskEnded();
  }
}
