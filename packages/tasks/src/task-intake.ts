import { context, trace } from '@opentelemetry/api';
import { setSpanError, SpanKind, traceCarrier, tracer, tracingActive, type Span, type TaskRecord } from '@mageagent/core';
import type { TaskQueue } from './task-queue';
import type { CreateLimits, TaskStore } from './task-store';

interface Pending {
  task: TaskRecord;
  limits: CreateLimits | undefined;
  /**
   * The task's creation span (none when tracing is off); its context goes into the job, so the
   * worker's span continues the trace.
   */
  span: Span | undefined;
  resolve: () => void;
  reject: (error: Error) => void;
}

/** Something the intake could not do, with what it was doing; the api maps it to an answer. */
export class TaskNotQueuedError extends Error {
  constructor(cause: unknown) {
    super(`the task could not be queued: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'TaskNotQueuedError';
  }
}

/**
 * Group commit for new tasks. Tasks submitted during one turn of the event loop are
 * written together when it ends (setImmediate): their records in one pipelined write,
 * then the jobs of the records that were written in one BullMQ `addBulk`. Under load this
 * turns two Redis writes per request into two per batch, with no timer: a lone request is
 * written as soon as the current turn ends.
 *
 * Every task gets its own outcome, and one task's failure is never its batch's:
 * - a record that cannot be serialised or written fails that task alone, and it gets no job;
 * - so a job never exists without its record, and a worker never meets a job it cannot run;
 * - if the jobs cannot be added, the batch's records are deleted again (best effort, and any job
 *   of the batch that did land is removed): the clients are told the tasks were not accepted,
 *   so nothing of them may run.
 */
export class TaskIntake {
  private pending: Pending[] = [];

  constructor(
    private readonly store: TaskStore,
    private readonly queue: TaskQueue,
  ) {}

  /** Resolves once the task's record and its job are both in Redis; rejects with why not. */
  submit(task: TaskRecord, limits?: CreateLimits): Promise<void> {
    // A producer span per task, child of the request's span: the batch is written later, in
    // whichever request's context flushes it, so each job carries its own task's context.
    const span = tracingActive() ? this.startSpan(task) : undefined;
    return new Promise<void>((resolve, reject) => {
      const done = (error?: Error) => {
        if (span) {
          if (error) setSpanError(span, error);
          span.end();
        }
        if (error) reject(error);
        else resolve();
      };
      if (this.pending.push({ task, limits, span, resolve: () => done(), reject: done }) === 1) setImmediate(() => this.flush());
    });
  }

  private startSpan(task: TaskRecord): Span {
    return tracer().startSpan('task create', {
      kind: SpanKind.PRODUCER,
      attributes: {
        'mageagent.task.id': task.id,
        'mageagent.task.pattern': task.pattern,
        'mageagent.task.priority': task.priority,
        'mageagent.tenant': task.tenant,
        'messaging.system': 'bullmq',
        'messaging.operation.type': 'send',
        'messaging.destination.name': 'tasks',
      },
    });
  }

  private flush(): void {
    const batch = this.pending;
    this.pending = [];
    this.write(batch).catch((error: unknown) => {
      // Not expected (every outcome is handled below), but no submitter may be left waiting.
      const reason = error instanceof Error ? error : new Error(String(error));
      for (const { reject } of batch) reject(reason);
    });
  }

  private async write(batch: Pending[]): Promise<void> {
    const problems = await this.store.createAll(
      batch.map((entry) => entry.task),
      batch.map((entry) => entry.limits),
    );
    const written: Pending[] = [];
    batch.forEach((entry, index) => {
      const problem = problems[index];
      if (problem) entry.reject(problem);
      else written.push(entry);
    });
    if (written.length === 0) return;
    const tasks = written.map(({ task }) => task);
    try {
      await this.queue.enqueueAll(
        written.map(({ task, span }) => ({ taskId: task.id, priority: task.priority, trace: span && traceCarrier(trace.setSpan(context.active(), span)) })),
      );
    } catch (error) {
      // Undone before the clients hear of it, so a client told "not accepted" finds nothing.
      await this.abandon(tasks);
      const notQueued = new TaskNotQueuedError(error);
      for (const { reject } of written) reject(notQueued);
      return;
    }
    for (const { resolve } of written) resolve();
  }

  /**
   * Undoes the batch's writes after its jobs could not be added. When Redis is unreachable this
   * fails as well; the records then stay `queued` without a job, invisible (nobody has their ids)
   * and deleted when their retention ends, and no worker ever runs them.
   */
  private async abandon(tasks: TaskRecord[]): Promise<void> {
    const taskIds = tasks.map((task) => task.id);
    // Jobs first: a worker that finds a job without its record drops it.
    await Promise.allSettled(taskIds.map((taskId) => this.queue.remove(taskId)));
    await this.store.discard(tasks).catch(() => undefined);
  }
}
