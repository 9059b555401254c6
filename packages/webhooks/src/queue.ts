import type { JobsOptions } from 'bullmq';

/** The BullMQ queue of webhook deliveries (beside `tasks`, under the same prefix). */
export const WEBHOOK_QUEUE_NAME = 'webhooks';

/** A delivery job's payload: the task record (read at delivery time) says the rest. */
export interface WebhookJobData {
  taskId: string;
}

/** How often a delivery is tried, and how long between tries. */
export interface WebhookRetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** The wait before the first retry; doubles for each next one (with jitter). */
  backoffMs: number;
}

/**
 * How long a finished delivery job is kept: while it exists, adding the same task again is a no-op,
 * which is what collapses a duplicate from an outbox entry recovered after its job was added.
 */
const KEEP_COMPLETED = { age: 3600, count: 10_000 };
const KEEP_FAILED = { age: 24 * 3600, count: 10_000 };

export function webhookJobOptions(taskId: string, retry: WebhookRetryPolicy): JobsOptions {
  return {
    // One job per task, whoever adds it and however often.
    jobId: taskId,
    attempts: retry.attempts,
    // Spread out: receivers that fell over together should not be hit together when they return.
    backoff: { type: 'exponential', delay: retry.backoffMs, jitter: 0.2 },
    removeOnComplete: KEEP_COMPLETED,
    removeOnFail: KEEP_FAILED,
  };
}
