import { Queue, type JobsOptions } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import type { TaskPriority } from '@mageagent/core';

export const TASK_QUEUE_NAME = 'tasks';

/** The BullMQ job's payload: the task record is the source of truth, the job only carries its id. */
export interface TaskJobData {
  taskId: string;
}

/** BullMQ priorities: lower runs first; 0 (no priority) would jump every prioritised job, so all get one. */
export const BULLMQ_PRIORITY: Record<TaskPriority, number> = { high: 1, normal: 5, low: 10 };

export interface TaskQueueOptions {
  prefix: string;
  /** How many times a job is started in all, counting restarts after a crashed worker. */
  attempts: number;
}

/** Adds and removes task jobs on the BullMQ queue. */
export class TaskQueue {
  readonly queue: Queue<TaskJobData>;

  constructor(
    connection: Redis | Cluster,
    private readonly options: TaskQueueOptions,
  ) {
    this.queue = new Queue<TaskJobData>(TASK_QUEUE_NAME, {
      connection,
      prefix: options.prefix,
      // Job events are not used (the task log is); keep BullMQ's stream short.
      streams: { events: { maxLen: 100 } },
    });
  }

  /** Adds one job per task in one pipelined write (BullMQ's addBulk); rejects if any add failed. */
  async enqueueAll(tasks: readonly { taskId: string; priority: TaskPriority }[]): Promise<void> {
    await this.queue.addBulk(tasks.map(({ taskId, priority }) => ({ name: 'run', data: { taskId }, opts: this.jobOptions(taskId, priority) })));
  }

  private jobOptions(taskId: string, priority: TaskPriority): JobsOptions {
    return {
      jobId: taskId,
      priority: BULLMQ_PRIORITY[priority],
      attempts: this.options.attempts,
      backoff: { type: 'exponential', delay: 1000 },
      removeOnComplete: true,
      removeOnFail: { age: 24 * 3600, count: 10_000 },
    };
  }

  /** Removes a job that no worker holds; false when it is locked by a worker (or gone). */
  async remove(taskId: string): Promise<boolean> {
    return (await this.queue.remove(taskId)) === 1;
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}
