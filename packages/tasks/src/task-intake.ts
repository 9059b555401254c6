import { context, trace } from '@opentelemetry/api';
import {
  QueueFullError,
  RateLimitedError,
  setSpanError,
  SpanKind,
  traceCarrier,
  tracer,
  tracingActive,
  TurnBatcher,
  type Span,
  type TaskRecord,
} from '@mageagent/core';
import { causedByRedisOutage } from './redis';
import type { JobWriter, TaskJob, TaskQueue } from './task-queue';
import { JobNotAddedError, TaskExistsError, TaskNotStorableError, type CreateLimits, type TaskStore } from './task-store';

interface Pending {
  task: TaskRecord;
  limits: CreateLimits | undefined;
  /**
   * The task's creation span (none when tracing is off); its context goes into the job, so the
   * worker's span continues the trace.
   */
  span: Span | undefined;
  /** When it was submitted (performance.now()). */
  submittedAt: number;
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
 * written together when it ends (setImmediate), with no timer: a lone request is written as soon
 * as the current turn ends. One batch is written at a time: tasks submitted while it is in Redis
 * form the next batch, written as soon as it is done, so batches grow with the load instead of
 * queueing up as many small writes (measured: about 9% more tasks/s at 32 clients). Under load this
 * turns the Redis writes of every request into those of one batch:
 * - normally one script call that writes each task's record and its BullMQ job together, with
 *   BullMQ's own add-job script running inside the task store's (TaskQueue.jobWriter);
 * - where this BullMQ version's jobs cannot be written that way, or until the queue is ready, the
 *   records in one call, then the jobs of the records that were written in one BullMQ `addBulk`.
 *
 * Every task gets its own outcome, and one task's failure is never its batch's:
 * - a record that cannot be serialised or written fails that task alone, and it gets no job;
 * - so a job never exists without its record, and a worker never meets a job it cannot run;
 * - if the jobs cannot be added, the batch's records are deleted again (best effort, and any job
 *   of the batch that did land is removed): the clients are told the tasks were not accepted,
 *   so nothing of them may run.
 */
export class TaskIntake {
  /** One batch in Redis at a time; the next forms meanwhile (see TurnBatcher). */
  private readonly batcher = new TurnBatcher<Pending>((batch) =>
    this.write(batch).catch((error: unknown) => {
      // Not expected (every outcome is handled in write), but no submitter may be left waiting.
      const reason = error instanceof Error ? error : new Error(String(error));
      for (const { reject } of batch) reject(reason);
    }),
  );
  /** BullMQ's add-job script, once the queue is ready (undefined before, or where it cannot be used). */
  private writer: JobWriter | undefined;
  private asking: Promise<boolean> | undefined;

  constructor(
    private readonly store: TaskStore,
    private readonly queue: TaskQueue,
    private readonly options: { /** false: always the two-step path (records, then addBulk). */ jobsWithRecords?: boolean } = {},
  ) {
    void this.jobsWithRecords();
  }

  /**
   * Resolves to whether new tasks' jobs are written in the same call as their records (the
   * normal case once the queue is ready). Asks the queue once, and again after a failure (Redis
   * unreachable); until then tasks take the two-step path.
   */
  jobsWithRecords(): Promise<boolean> {
    if (this.options.jobsWithRecords === false) return Promise.resolve(false);
    this.asking ??= this.queue.jobWriter().then(
      (writer) => {
        this.writer = writer;
        return writer !== undefined;
      },
      () => {
        this.asking = undefined;
        return false;
      },
    );
    return this.asking;
  }

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
      this.batcher.add({ task, limits, span, submittedAt: performance.now(), resolve: () => done(), reject: done });
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

  /**
   * The batch that just failed, every task of it, for want of Redis (unreachable, or not
   * answering within the command timeout), with its error and when it was done. Tasks submitted
   * while it was in Redis get the same answer at once instead of a command timeout of their own:
   * otherwise, while Redis hangs, each batch would wait for the one before it and clients would
   * hear of it after several timeouts rather than one.
   */
  private outage: { error: Error; endedAt: number } | undefined;

  private async write(batch: Pending[]): Promise<void> {
    const outage = this.outage;
    this.outage = undefined;
    if (outage !== undefined) {
      const caught = batch.filter((entry) => entry.submittedAt <= outage.endedAt);
      for (const { reject } of caught) reject(outage.error);
      batch = batch.filter((entry) => entry.submittedAt > outage.endedAt);
      if (batch.length === 0) return;
    }
    // A batch whose every task failed for want of Redis is an outage (above); one that Redis
    // partly took (one of its calls failed, say) is not.
    let unavailable: Error | undefined;
    let failedForRedis = 0;
    const watched = batch.map((entry) => ({
      ...entry,
      reject: (error: Error) => {
        if (causedByRedisOutage(error)) {
          unavailable ??= error;
          failedForRedis += 1;
        }
        entry.reject(error);
      },
    }));
    await this.writeBatch(watched);
    if (unavailable !== undefined && failedForRedis === batch.length) this.outage = { error: unavailable, endedAt: performance.now() };
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    if (!this.writer) void this.jobsWithRecords();
    if (this.writer) return this.writeWithJobs(batch, this.writer);
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
      await this.queue.enqueueAll(written.map(jobOf));
    } catch (error) {
      // Undone before the clients hear of it, so a client told "not accepted" finds nothing.
      await this.abandon(tasks);
      const notQueued = new TaskNotQueuedError(error);
      for (const { reject } of written) reject(notQueued);
      return;
    }
    for (const { resolve } of written) resolve();
  }

  /** Records and jobs in one call: each task is written whole (record and job) or not at all. */
  private async writeWithJobs(batch: Pending[], writer: JobWriter): Promise<void> {
    const problems = await this.store.createAll(
      batch.map((entry) => entry.task),
      batch.map((entry) => entry.limits),
      { writer, jobs: batch.map(jobOf) },
    );
    // A failed call (Redis unreachable, or its reply lost) may still have written its tasks: they
    // are undone before the clients hear "not accepted". A refusal or a script error wrote nothing.
    const unsure = batch.filter((_, index) => {
      const problem = problems[index];
      return problem && !NOTHING_WRITTEN.some((refusal) => problem instanceof refusal);
    });
    if (unsure.length > 0) await this.abandon(unsure.map(({ task }) => task));
    batch.forEach((entry, index) => {
      const problem = problems[index];
      if (problem instanceof JobNotAddedError) entry.reject(new TaskNotQueuedError(problem.cause));
      else if (problem) entry.reject(problem);
      else entry.resolve();
    });
  }

  /**
   * Undoes the batch's writes after its jobs could not be added. When Redis is unreachable this
   * fails as well; the records then stay `queued` without a job, invisible (nobody has their ids)
   * and deleted when their retention ends, and no worker ever runs them.
   */
  private async abandon(tasks: TaskRecord[]): Promise<void> {
    // Jobs and records at once: whichever is left if the other's removal fails is harmless (a
    // worker that finds a job without its record drops it; a record without a job is never run),
    // and while Redis hangs the clients wait for one command timeout here, not two.
    await Promise.allSettled([...tasks.map((task) => this.queue.remove(task.id)), this.store.discard(tasks)]);
  }
}

/** What createAll answers for a task when it wrote nothing of it (a refusal, or a write it undid). */
const NOTHING_WRITTEN = [TaskExistsError, QueueFullError, RateLimitedError, TaskNotStorableError, JobNotAddedError];

/** A pending task's job, with the trace context of its creation span (when tracing). */
function jobOf({ task, span }: Pending): TaskJob {
  return { taskId: task.id, priority: task.priority, trace: span && traceCarrier(trace.setSpan(context.active(), span)) };
}
