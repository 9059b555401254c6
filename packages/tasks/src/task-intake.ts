import type { TaskErrorInfo, TaskRecord } from '@mageagent/core';
import type { TaskQueue } from './task-queue';
import { TaskExistsError, type TaskStore } from './task-store';

interface Pending {
  task: TaskRecord;
  resolve: () => void;
  reject: (error: Error) => void;
}

const NOT_QUEUED: TaskErrorInfo = { code: 'INTERNAL', message: 'the task could not be queued', retryable: true };

/**
 * Group commit for new tasks. Tasks submitted during one turn of the event loop are
 * written together when it ends (setImmediate): their records in one pipelined write,
 * then their jobs in one BullMQ `addBulk`, on the same connection, so every record
 * reaches Redis before its job and a worker never sees a job without its task.
 *
 * Under load this turns two Redis writes per request into two per batch, with no timer
 * and no added wait: a lone request is written as soon as the current turn ends.
 *
 * Each task still gets its own outcome: a record that could not be written takes its
 * job back out; a job that could not be added marks its record failed.
 */
export class TaskIntake {
  private pending: Pending[] = [];

  constructor(
    private readonly store: TaskStore,
    private readonly queue: TaskQueue,
  ) {}

  /** Resolves once the task's record and its job are both in Redis. */
  submit(task: TaskRecord): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.pending.push({ task, resolve, reject }) === 1) setImmediate(() => this.flush());
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
    const tasks = batch.map((entry) => entry.task);
    // Records first: createAll hands its write to the connection before addBulk can.
    const created = this.store.createAll(tasks);
    const enqueued = this.queue.enqueueAll(tasks.map((task) => ({ taskId: task.id, priority: task.priority }))).then(
      () => null,
      (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
    );
    const [problems, enqueueError] = await Promise.all([created, enqueued]);
    await Promise.all(
      batch.map(async ({ task, resolve, reject }, index) => {
        const problem = problems[index];
        if (problem) {
          // The job id is the task id: when the record existed already, the job is that task's.
          if (!enqueueError && !(problem instanceof TaskExistsError)) await this.queue.remove(task.id).catch(() => undefined);
          reject(problem);
        } else if (enqueueError) {
          // Some jobs of a failed batch may exist: a worker skips a task that is not queued.
          await this.store.fail(task.id, NOT_QUEUED).catch(() => undefined);
          reject(enqueueError);
        } else {
          resolve();
        }
      }),
    );
  }
}
