import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createRedis, deleteKeysWithPrefix, redisReady, TaskQueue } from '@mageagent/tasks';
import { ApiMetrics } from './api-metrics';
import { QueueStatsCache, queueStatsOf } from './queue-stats';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `test-queue-stats-${randomUUID().slice(0, 8)}`;
let redis: Redis;
let queue: TaskQueue;

beforeAll(async () => {
  redis = createRedis(REDIS_URL, 'requests', { connectionName: 'test-queue-stats' });
  await redisReady(redis, 5000);
  queue = new TaskQueue(redis, { prefix, attempts: 1 });
});

afterAll(async () => {
  await queue.close();
  await deleteKeysWithPrefix(redis, prefix);
  redis.disconnect();
});

test('backlog is waiting + prioritized + active; delayed and finished jobs are not backlog', () => {
  expect(queueStatsOf({ waiting: 2, prioritized: 3, active: 4, delayed: 5, completed: 6, failed: 7 })).toEqual({
    waiting: 2,
    prioritized: 3,
    active: 4,
    delayed: 5,
    completed: 6,
    failed: 7,
    backlog: 9,
  });
  // Missing states are 0, nonsense is not passed on.
  expect(queueStatsOf({ prioritized: 1, active: Number.NaN })).toMatchObject({ waiting: 0, active: 0, backlog: 1 });
});

test('counts the real queue, reuses an answer for its TTL and shares one count between concurrent callers', async () => {
  let now = 1_000;
  let counts = 0;
  const counter = {
    getJobCounts: (...types: Parameters<typeof queue.queue.getJobCounts>) => {
      counts += 1;
      return queue.queue.getJobCounts(...types);
    },
  };
  const cache = new QueueStatsCache(counter, { ttlMs: 500, timeoutMs: 1000, now: () => now });
  await queue.enqueueAll([
    { taskId: randomUUID(), priority: 'normal' },
    { taskId: randomUUID(), priority: 'high' },
  ]);
  const [first, second] = await Promise.all([cache.get(), cache.get()]);
  expect(first).toMatchObject({ prioritized: 2, backlog: 2, active: 0 });
  expect(second).toBe(first);
  expect(counts).toBe(1);

  await queue.enqueueAll([{ taskId: randomUUID(), priority: 'low' }]);
  now += 499;
  expect((await cache.get()).backlog).toBe(2);
  now += 1;
  expect((await cache.get()).backlog).toBe(3);
  expect(counts).toBe(2);
  expect(cache.redisUp).toBe(true);
});

test('a Redis outage: the count fails fast, queue gauges are left out and mageagent_redis_up is 0', async () => {
  // Nothing listens on port 1: connection refused, as with Redis down.
  const down = createRedis('redis://127.0.0.1:1', 'requests', { connectionName: 'test-queue-stats-down' });
  down.on('error', () => undefined);
  const downQueue = new TaskQueue(down, { prefix, attempts: 1 });
  downQueue.queue.on('error', () => undefined);
  try {
    const cache = new QueueStatsCache(downQueue.queue, { ttlMs: 1000, timeoutMs: 1000 });
    const metrics = new ApiMetrics({ queueStats: cache, openStreams: () => 2, defaultMetrics: false });
    const started = Date.now();
    const text = await metrics.registry.metrics();
    expect(Date.now() - started).toBeLessThan(1500);
    expect(text).toContain('mageagent_redis_up 0');
    expect(text).not.toMatch(/^mageagent_queue_jobs\{/m);
    expect(text).not.toMatch(/^mageagent_queue_backlog /m);
    expect(text).toContain('mageagent_sse_streams_open 2');
    await expect(cache.get()).rejects.toThrow();
    expect(cache.redisUp).toBe(false);
  } finally {
    await downQueue.close().catch(() => undefined);
    down.disconnect();
  }
});

test('with Redis up, the same registry reports every state and the backlog', async () => {
  const cache = new QueueStatsCache(queue.queue, { ttlMs: 0, timeoutMs: 1000 });
  const metrics = new ApiMetrics({ queueStats: cache, openStreams: () => 0, defaultMetrics: false });
  const text = await metrics.registry.metrics();
  for (const state of ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'])
    expect(text).toMatch(new RegExp(`^mageagent_queue_jobs\\{state="${state}"\\} \\d+$`, 'm'));
  expect(text).toMatch(/^mageagent_queue_backlog 3$/m);
  expect(text).toContain('mageagent_redis_up 1');
});
