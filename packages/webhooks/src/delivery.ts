import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import { isTerminal, type Logger, type WebhookDelivery, type WebhookEvent } from '@mageagent/core';
import { isRedisUnavailable, type TaskStore } from '@mageagent/tasks';
import { webhookBody } from './body';
import { postWebhook } from './post';
import { WEBHOOK_QUEUE_NAME, type WebhookJobData } from './queue';
import type { WebhookSecrets } from './secrets';
import { signWebhook, webhookIdFor } from './signing';
import { checkWebhookTarget } from './target';

export interface WebhookDeliveryOptions {
  store: TaskStore;
  secrets: WebhookSecrets;
  /** Allow private targets (WEBHOOK_ALLOW_PRIVATE); see WebhookTargetOptions. */
  allowPrivate: boolean;
  /** One attempt's limit: connect, send, and the receiver's status line (WEBHOOK_TIMEOUT_MS). */
  timeoutMs: number;
  logger: Logger;
}

/** What a delivery job did: its BullMQ return value. */
export type WebhookJobOutcome = 'delivered' | 'not subscribed' | 'no webhook';

/** An attempt that did not deliver; BullMQ retries the job after its backoff, while attempts remain. */
export class WebhookAttemptFailedError extends Error {
  override readonly name = 'WebhookAttemptFailedError';
}

/**
 * The processor of the `webhooks` queue: one attempt to deliver one task's webhook. It reads the task
 * at delivery time, delivers only a status the webhook asked for, signs the body with the tenant's
 * secret, checks the target after resolving it and connects to the address it checked. Every
 * attempt is recorded on the task (`webhook.deliveries`). A 2xx delivers; another answer or none is
 * retried by BullMQ; a refused target or a missing secret fails at once, unretried (retrying cannot
 * change them, and each retry would be one more request a hostile URL gets to aim).
 */
export function createWebhookProcessor(options: WebhookDeliveryOptions) {
  return async (job: Job<WebhookJobData>, _token?: string, signal?: AbortSignal): Promise<WebhookJobOutcome> => {
    const { taskId } = job.data;
    const task = await options.store.get(taskId);
    // Expired (retention) before its turn, or never had one: nothing to send.
    if (!task?.webhook) return 'no webhook';
    if (!isTerminal(task.status) || !task.webhook.events.includes(task.status as WebhookEvent)) return 'not subscribed';

    const webhookId = webhookIdFor(taskId);
    const attempt = job.attemptsMade + 1;
    const startedAt = new Date();
    const record = (outcome: Pick<WebhookDelivery, 'ok' | 'status' | 'error'>) =>
      options.store.recordWebhookDelivery(taskId, {
        webhookId,
        attempt,
        at: startedAt.toISOString(),
        durationMs: Date.now() - startedAt.getTime(),
        ...outcome,
      });
    const logger = options.logger.child({ taskId, tenant: task.tenant, webhookId, attempt });

    const secret = options.secrets.secretFor(task.tenant);
    if (secret === undefined) {
      const error = `no webhook signing secret for tenant "${task.tenant}" (set WEBHOOK_SECRET): not sent`;
      await record({ ok: false, error });
      logger.warn('webhook not sent: no signing secret for the tenant');
      throw new UnrecoverableError(error);
    }
    const target = await checkWebhookTarget(task.webhook.url, { allowPrivate: options.allowPrivate });
    if (!target.allowed) {
      // A name that does not resolve (now) is retried like an unreachable receiver; a refused address never is.
      const error = target.retryable ? target.reason : `target refused: ${target.reason}`;
      await record({ ok: false, error });
      logger.warn(target.retryable ? 'webhook target not resolved' : 'webhook target refused', { reason: target.reason, address: target.address });
      throw target.retryable ? new WebhookAttemptFailedError(error) : new UnrecoverableError(error);
    }

    const body = JSON.stringify(webhookBody(task));
    const headers = {
      'content-type': 'application/json',
      'user-agent': 'mageagent-webhooks',
      ...signWebhook(secret, webhookId, body, startedAt),
    };
    let outcome: Pick<WebhookDelivery, 'ok' | 'status' | 'error'>;
    try {
      const { status } = await postWebhook({ url: target.url, addresses: target.addresses, body, headers, timeoutMs: options.timeoutMs, signal });
      outcome = status >= 200 && status < 300 ? { ok: true, status } : { ok: false, status, error: answerError(status) };
    } catch (error) {
      outcome = { ok: false, error: error instanceof Error ? error.message : String(error) };
    }
    await record(outcome);
    if (!outcome.ok) throw new WebhookAttemptFailedError(outcome.error ?? 'not delivered');
    logger.info('webhook delivered', { status: outcome.status });
    return 'delivered';
  };
}

function answerError(status: number): string {
  return status >= 300 && status < 400 ? `the receiver answered HTTP ${status} (redirects are not followed)` : `the receiver answered HTTP ${status}`;
}

export interface WebhookWorkerOptions extends WebhookDeliveryOptions {
  /** A `bullmq` connection of the webhooks' own, so deliveries never wait behind task work. */
  connection: Redis | Cluster;
  prefix: string;
  /** Deliveries in flight at once in this process (WEBHOOK_CONCURRENCY). */
  concurrency: number;
}

/**
 * The BullMQ Worker of the `webhooks` queue (created paused: call `run()`). Separate from the task
 * worker: its own queue, connection and concurrency, so a slow or failing receiver never holds up a
 * task.
 */
export function createWebhookWorker(options: WebhookWorkerOptions): Worker<WebhookJobData, WebhookJobOutcome> {
  const worker = new Worker<WebhookJobData, WebhookJobOutcome>(WEBHOOK_QUEUE_NAME, createWebhookProcessor(options), {
    connection: options.connection,
    prefix: options.prefix,
    concurrency: options.concurrency,
    // A delivery never runs longer than its timeout plus two Redis writes; the lock outlasts that.
    lockDuration: Math.max(30_000, 2 * options.timeoutMs),
    autorun: false,
  });
  worker.on('failed', (job, error) => {
    if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) {
      options.logger.warn('webhook given up', { taskId: job.data.taskId, attempts: job.attemptsMade, error: error.message });
    }
  });
  // BullMQ reports every failed reconnect attempt here; an outage is logged once by the connections.
  worker.on('error', (error) => {
    if (!isRedisUnavailable(error)) options.logger.error('webhook worker error', { error: String(error) });
  });
  return worker;
}
