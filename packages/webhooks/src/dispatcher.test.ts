import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { createLogger, type TaskWebhook } from '@mageagent/core';
import { createRedis, deleteKeysWithPrefix, TaskStore } from '@mageagent/tasks';
import { queuedTask } from '../../tasks/src/test-tasks';
import { WebhookDispatcher, type WebhookDispatcherOptions } from './dispatcher';
import { WEBHOOK_QUEUE_NAME } from './queue';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const logger = createLogger({ service: 'test', level: 'error' });
const webhook: TaskWebhook = { url: 'http://127.0.0.1:9/hook', events: ['completed', 'failed', 'cancelled'], deliveries: [] };

let prefix: string;
let redis: Redis;
let queue: Queue;
const connections: Redis[] = [];
const dispatchers: WebhookDispatcher[] = [];

beforeEach(() => {
  prefix = `test-dispatch-${randomUUID().slice(0, 8)}`;
  redis = createRedis(REDIS_URL, 'worker');
  queue = new Queue(WEBHOOK_QUEUE_NAME, { connection: redis, prefix });
});

afterEach(async () => {
  await Promise.all(dispatchers.splice(0).map((dispatcher) => dispatcher.stop()));
  await queue.close();
  await deleteKeysWithPrefix(redis, prefix);
  for (const connection of [...connections.splice(0), redis]) connection.disconnect();
});

/** A dispatcher on connections of its own, as each worker process has. */
async function startDispatcher(options: Partial<WebhookDispatcherOptions> = {}): Promise<WebhookDispatcher> {
  const commands = createRedis(REDIS_URL, 'worker');
  const blocking = createRedis(REDIS_URL, 'worker');
  connections.push(commands, blocking);
  const dispatcher = new WebhookDispatcher({ redis: commands, blocking, prefix, retry: { attempts: 3, backoffMs: 10 }, logger, waitSeconds: 0.1, ...options });
  dispatchers.push(dispatcher);
  await dispatcher.start();
  return dispatcher;
}

const keys = () => ({
  outbox: `${prefix}:webhooks:outbox`,
  dispatchers: `${prefix}:webhook-dispatch:dispatchers`,
  claimed: (id: string) => `${prefix}:webhook-dispatch:claimed:${id}`,
  alive: (id: string) => `${prefix}:webhook-dispatch:alive:${id}`,
});

async function waitForJobs(count: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while ((await queue.getJobCountByTypes('wait')) < count) {
    if (Date.now() > deadline) throw new Error(`${await queue.getJobCountByTypes('wait')} of ${count} delivery jobs after 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('a task with a webhook that ends becomes one delivery job, whose id is the task id', async () => {
  const store = new TaskStore(redis, prefix, { retentionSeconds: 60 });
  const withWebhook = queuedTask({ webhook });
  const without = queuedTask();
  await store.createAll([withWebhook, without]);
  await startDispatcher();
  await store.cancel(withWebhook.id);
  await store.cancel(without.id);
  await waitForJobs(1);
  const job = await queue.getJob(withWebhook.id);
  expect(job?.data).toEqual({ taskId: withWebhook.id });
  expect(job?.opts).toMatchObject({ attempts: 3, backoff: { type: 'exponential', delay: 10 } });
  expect(await redis.llen(keys().outbox)).toBe(0);
  expect(await queue.getJobCountByTypes('wait', 'delayed', 'active')).toBe(1);
});

test('the same task twice in the outbox (a recovered entry) is one job', async () => {
  const taskId = randomUUID();
  await redis.rpush(keys().outbox, taskId, taskId);
  await startDispatcher();
  await waitForJobs(1);
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(await redis.llen(keys().outbox)).toBe(0);
  expect(await queue.getJobCountByTypes('wait')).toBe(1);
});

test('entries left claimed by a dispatcher that died are given back and dispatched; a live one keeps its own', async () => {
  const orphan = randomUUID();
  const held = randomUUID();
  // What a killed process leaves: its registration and claimed list, its liveness key expired.
  await redis.sadd(keys().dispatchers, 'dead-worker', 'live-worker');
  await redis.rpush(keys().claimed('dead-worker'), orphan);
  await redis.rpush(keys().claimed('live-worker'), held);
  await redis.set(keys().alive('live-worker'), '1', 'PX', 10_000);

  await startDispatcher();
  await waitForJobs(1);
  expect(await queue.getJob(orphan)).toBeDefined();
  expect(await queue.getJob(held)).toBeUndefined();
  expect(await redis.exists(keys().claimed('dead-worker'))).toBe(0);
  expect(await redis.lrange(keys().claimed('live-worker'), 0, -1)).toEqual([held]);
  expect(await redis.sismember(keys().dispatchers, 'live-worker')).toBe(1);
  expect(await redis.sismember(keys().dispatchers, 'dead-worker')).toBe(0);
});

test('a dispatcher whose heartbeat lapses while it is away loses its entries to the others', async () => {
  await startDispatcher({ livenessTtlMs: 300 });
  const stray = randomUUID();
  // A dispatcher that registered, claimed an entry, and stopped renewing (killed, frozen).
  await redis.sadd(keys().dispatchers, 'frozen');
  await redis.set(keys().alive('frozen'), '1', 'PX', 200);
  await redis.rpush(keys().claimed('frozen'), stray);
  await waitForJobs(1);
  expect(await queue.getJob(stray)).toBeDefined();
  expect(await redis.exists(keys().claimed('frozen'))).toBe(0);
});

test('several dispatchers at once add each entry exactly once, and leave nothing claimed', async () => {
  await Promise.all([startDispatcher(), startDispatcher(), startDispatcher()]);
  const taskIds = Array.from({ length: 300 }, () => randomUUID());
  for (let index = 0; index < taskIds.length; index += 50) await redis.rpush(keys().outbox, ...taskIds.slice(index, index + 50));
  await waitForJobs(taskIds.length);
  const jobIds = (await queue.getJobs(['wait'], 0, -1)).map((job) => job.id);
  expect(new Set(jobIds)).toEqual(new Set(taskIds));
  expect(await redis.llen(keys().outbox)).toBe(0);
  for (const dispatcher of dispatchers) expect(await redis.llen(keys().claimed(dispatcher.id))).toBe(0);
});

test('stopping gives back what is still claimed and deregisters', async () => {
  const dispatcher = await startDispatcher();
  await dispatcher.stop();
  dispatchers.splice(dispatchers.indexOf(dispatcher), 1);
  const leftOver = randomUUID();
  await redis.rpush(keys().claimed(dispatcher.id), leftOver);
  // A second stop (the shutdown step running after a failed round) gives the entry back.
  await dispatcher.stop();
  expect(await redis.lrange(keys().outbox, 0, -1)).toEqual([leftOver]);
  expect(await redis.sismember(keys().dispatchers, dispatcher.id)).toBe(0);
  expect(await redis.exists(keys().alive(dispatcher.id))).toBe(0);
});
