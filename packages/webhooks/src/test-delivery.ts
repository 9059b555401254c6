import { randomUUID } from 'node:crypto';
import { Queue, type Worker } from 'bullmq';
import { createLogger } from '@mageagent/core';
import { createRedis, deleteKeysWithPrefix, TaskStore } from '@mageagent/tasks';
import { createWebhookWorker, type WebhookJobOutcome } from './delivery';
import { WebhookDispatcher } from './dispatcher';
import { WEBHOOK_QUEUE_NAME, type WebhookJobData } from './queue';
import { DerivedWebhookSecrets, type WebhookSecrets } from './secrets';

/** The master secret test deliveries sign with (unless given other secrets). */
export const TEST_WEBHOOK_MASTER = 'the master webhook secret of the tests, 32+ chars';

export interface TestDeliveryOptions {
  redisUrl: string;
  /** Key prefix; a fresh one by default. */
  prefix?: string;
  allowPrivate?: boolean;
  secrets?: WebhookSecrets;
  attempts?: number;
}

/** A worker process's webhook side, in-process: a task store, a dispatcher and a delivery worker. */
export interface TestDelivery {
  prefix: string;
  store: TaskStore;
  /** The `webhooks` queue, for looking at jobs. */
  queue: Queue<WebhookJobData, WebhookJobOutcome>;
  worker: Worker<WebhookJobData, WebhookJobOutcome>;
  dispatcher: WebhookDispatcher;
  /** Stops everything, deletes the prefix's keys and closes the connections. */
  stop(): Promise<void>;
}

/** Test support: starts a dispatcher and a delivery worker on connections of their own, as the worker process does. */
export async function startTestDelivery(options: TestDeliveryOptions): Promise<TestDelivery> {
  const prefix = options.prefix ?? `test-deliver-${randomUUID().slice(0, 8)}`;
  const logger = createLogger({ service: 'test', level: 'error' });
  const commands = createRedis(options.redisUrl, 'worker');
  const blocking = createRedis(options.redisUrl, 'worker');
  const bullmq = createRedis(options.redisUrl, 'bullmq');
  const store = new TaskStore(commands, prefix, { retentionSeconds: 60 });
  const dispatcher = new WebhookDispatcher({
    redis: commands,
    blocking,
    prefix,
    retry: { attempts: options.attempts ?? 3, backoffMs: 20 },
    logger,
    waitSeconds: 0.1,
  });
  const worker = createWebhookWorker({
    connection: bullmq,
    prefix,
    concurrency: 4,
    store,
    secrets: options.secrets ?? new DerivedWebhookSecrets({ master: TEST_WEBHOOK_MASTER }),
    allowPrivate: options.allowPrivate ?? true,
    timeoutMs: 2000,
    logger,
  });
  await dispatcher.start();
  void worker.run();
  const queue = new Queue<WebhookJobData, WebhookJobOutcome>(WEBHOOK_QUEUE_NAME, { connection: commands, prefix });
  queue.on('error', () => undefined);
  return {
    prefix,
    store,
    queue,
    worker,
    dispatcher,
    async stop() {
      await Promise.all([worker.close(), dispatcher.stop(), queue.close()]);
      await deleteKeysWithPrefix(commands, prefix);
      for (const connection of [commands, blocking, bullmq]) connection.disconnect();
    },
  };
}
