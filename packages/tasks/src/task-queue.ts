import { Queue, type JobsOptions } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import type { TaskPriority } from '@mageagent/core';

export const TASK_QUEUE_NAME = 'tasks';

/**
 * The BullMQ job's payload: the task record is the source of truth, the job only carries its id,
 * and, when tracing is on, the W3C trace context (`traceparent`, `tracestate`) of the request
 * that created it, so the worker's task span continues that trace across the queue hop.
 */
export interface TaskJobData {
  taskId: string;
  trace?: Record<string, string>;
}

/** One job to add: a task, its priority and the trace context it was created in. */
export interface TaskJob {
  taskId: string;
  priority: TaskPriority;
  trace?: Record<string, string> | undefined;
}

/** BullMQ priorities: lower runs first; 0 (no priority) would jump every prioritised job, so all get one. */
export const BULLMQ_PRIORITY: Record<TaskPriority, number> = { high: 1, normal: 5, low: 10 };

/** How many finished jobs BullMQ keeps, and for how long: whichever bound is reached first removes them. */
export interface JobRetention {
  /** Most jobs kept (the newest); 0 keeps none. */
  count: number;
  /** Seconds a job is kept after it finished. */
  ageSeconds: number;
}

/**
 * The defaults: finished jobs only serve the queue dashboard and /queue/stats (the task record is
 * the source of truth and has its own retention), so completed ones are kept an hour, failed ones
 * (what an operator investigates) a day; the counts bound Redis memory under any load.
 */
export const DEFAULT_JOB_RETENTION: { completed: JobRetention; failed: JobRetention } = {
  completed: { count: 1000, ageSeconds: 3600 },
  failed: { count: 10_000, ageSeconds: 24 * 3600 },
};

export interface TaskQueueOptions {
  prefix: string;
  /** How many times a job is started in all, counting restarts after a crashed worker. */
  attempts: number;
  /** How many finished jobs are kept, and how long (default DEFAULT_JOB_RETENTION). */
  retention?: { completed: JobRetention; failed: JobRetention };
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
  async enqueueAll(tasks: readonly TaskJob[]): Promise<void> {
    await this.queue.addBulk(
      tasks.map(({ taskId, priority, trace }) => ({ name: 'run', data: trace ? { taskId, trace } : { taskId }, opts: this.jobOptions(taskId, priority) })),
    );
  }

  private jobOptions(taskId: string, priority: TaskPriority): JobsOptions {
    return {
      jobId: taskId,
      priority: BULLMQ_PRIORITY[priority],
      attempts: this.options.attempts,
      backoff: { type: 'exponential', delay: 1000 },
      // BullMQ applies these when the job finishes (they travel with the job, so the api's setting holds whichever worker runs it).
      removeOnComplete: keepJobs(this.options.retention?.completed ?? DEFAULT_JOB_RETENTION.completed),
      removeOnFail: keepJobs(this.options.retention?.failed ?? DEFAULT_JOB_RETENTION.failed),
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

/** BullMQ's KeepJobs: `true` (remove at once) when nothing is to be kept. */
function keepJobs(retention: JobRetention): JobsOptions['removeOnComplete'] {
  if (retention.count === 0 || retention.ageSeconds === 0) return true;
  return { count: retention.count, age: retention.ageSeconds };
}
