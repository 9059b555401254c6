import { randomUUID } from 'node:crypto';
import { v7 as uuidv7 } from 'uuid';
import type { Redis } from 'ioredis';
import { RequestRateExceededError, type RateLimitedError, type TaskEvent } from '@mageagent/core';
import { createRedis } from './redis';
import { TaskStore, type TransitionRequest } from './task-store';
import { TaskEventBus } from './event-bus';
import { followTask } from './task-follower';
import { queuedTask, testRequestCounter } from './test-tasks';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefix = `test-store-${randomUUID().slice(0, 8)}`;
let redis: Redis;
let subscriber: Redis;
let store: TaskStore;
let bus: TaskEventBus;

const newTask = () => queuedTask({ metadata: { source: 'test' } });

beforeAll(() => {
  redis = createRedis(REDIS_URL, 'worker');
  subscriber = createRedis(REDIS_URL, 'subscriber');
  store = new TaskStore(redis, prefix, { retentionSeconds: 60 });
  bus = new TaskEventBus(subscriber, store.keys);
});

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
  subscriber.disconnect();
});

const result = { content: 'done', toolCalls: [], steps: [], usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 }, model: 'm' };

test('create then get round-trips the record with its first event', async () => {
  const task = newTask();
  await store.create(task);
  const stored = await store.get(task.id);
  expect(stored).toMatchObject({ id: task.id, status: 'queued', metadata: { source: 'test' }, lastSeq: 1, result: null });
  const events = await store.readEvents(task.id);
  expect(events).toEqual([{ taskId: task.id, seq: 1, at: task.createdAt, type: 'status', status: 'queued' }]);
  await expect(store.create(task)).rejects.toThrow(/exists/);
  expect(await store.ttl(task.id)).toBeGreaterThan(50);
});

test('transitions are guarded: a late completed never overwrites cancelled', async () => {
  const task = newTask();
  await store.create(task);
  expect(await store.transition(task.id, { from: ['queued'], to: 'processing' })).toMatchObject({ applied: true, previousStatus: 'queued' });
  expect(await store.cancel(task.id)).toMatchObject({ applied: true, previousStatus: 'processing' });
  expect(await store.complete(task.id, result)).toEqual({ applied: false, currentStatus: 'cancelled' });
  expect(await store.append(task.id, { type: 'delta', stepId: 's', text: 'late' })).toEqual({ applied: false, currentStatus: 'cancelled' });
  const stored = await store.require(task.id);
  expect(stored.status).toBe('cancelled');
  expect(stored.result).toBeNull();
  const types = (await store.readEvents(task.id)).map((event) => `${event.seq}:${event.type}:${'status' in event ? event.status : ''}`);
  expect(types).toEqual(['1:status:queued', '2:status:processing', '3:status:cancelled']);
});

test('unknown tasks answer undefined, not an error', async () => {
  expect(await store.get(randomUUID())).toBeUndefined();
  expect(await store.transition(randomUUID(), { from: ['queued'], to: 'processing' })).toBeUndefined();
  await expect(store.require('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });
});

test('completion writes the result event before the terminal status, with contiguous seqs', async () => {
  const task = newTask();
  await store.create(task);
  await store.transition(task.id, { from: ['queued'], to: 'processing' });
  await store.append(task.id, { type: 'delta', stepId: 's1', text: 'a' }, { type: 'delta', stepId: 's1', text: 'b' });
  expect(await store.complete(task.id, result)).toMatchObject({ applied: true, lastSeq: 6 });
  const events = await store.readEvents(task.id);
  expect(events.map((event) => event.seq)).toEqual([1, 2, 3, 4, 5, 6]);
  expect(events.slice(-2).map((event) => event.type)).toEqual(['result', 'status']);
  expect((await store.readEvents(task.id, 4)).map((event) => event.seq)).toEqual([5, 6]);
  expect((await store.require(task.id)).result).toEqual(result);
});

test('a follower gets every event exactly once, in order, across replay and live', async () => {
  const task = newTask();
  await store.create(task);
  await store.transition(task.id, { from: ['queued'], to: 'processing' });
  const received: TaskEvent[] = [];
  const ended = new Promise<string>((resolve) => {
    void followTask(store, bus, task.id, { afterSeq: 1, onEvent: (event) => received.push(event), onEnd: resolve });
  });
  for (let index = 0; index < 50; index += 1) {
    await store.append(task.id, { type: 'delta', stepId: 's1', text: String(index) });
  }
  await store.complete(task.id, result);
  expect(await ended).toBe('terminal');
  expect(received.map((event) => event.seq)).toEqual(Array.from({ length: 53 }, (_, index) => index + 2));
  expect(bus.subscribedChannels).toBe(0);
});

/** Follows a task that already completed (4 events) from `afterSeq`; what arrived and why it ended. */
async function followFinished(afterSeq: number): Promise<{ reason: string; received: number[] }> {
  const task = newTask();
  await store.create(task);
  await store.transition(task.id, { from: ['queued'], to: 'processing' });
  await store.complete(task.id, result);
  const received: number[] = [];
  const reason = await new Promise<string>((resolve) => {
    void followTask(store, bus, task.id, { afterSeq, onEvent: (event) => received.push(event.seq), onEnd: resolve });
  });
  return { reason, received };
}

test('a follower of a finished task replays from the resume point and ends', async () => {
  expect(await followFinished(2)).toEqual({ reason: 'terminal', received: [3, 4] });
});

test('a follower resumed at the last event of a finished task ends at once', async () => {
  expect(await followFinished(4)).toEqual({ reason: 'terminal', received: [] });
});

test('many followers of one task share one channel subscription', async () => {
  const task = newTask();
  await store.create(task);
  const follows = Array.from({ length: 20 }, () => followTask(store, bus, task.id, { onEvent: () => undefined }));
  await Promise.all(follows.map((follow) => follow.ready));
  expect(bus.subscribedChannels).toBe(1);
  expect(bus.listenerCount).toBe(20);
  for (const follow of follows) follow.close();
  expect(bus.subscribedChannels).toBe(0);
});

test('a follower closed before its subscription is confirmed leaves nothing subscribed', async () => {
  const task = newTask();
  await store.create(task);
  const ends: string[] = [];
  const follow = followTask(store, bus, task.id, { onEvent: () => undefined, onEnd: (reason) => ends.push(reason) });
  follow.close();
  await follow.ready;
  expect(ends).toEqual(['closed']);
  expect(bus.subscribedChannels).toBe(0);
  expect(bus.listenerCount).toBe(0);
});

test('a follower of an unknown task ends with an error instead of waiting', async () => {
  const reason = await new Promise<string>((resolve) => {
    followTask(store, bus, randomUUID(), { onEvent: () => undefined, onEnd: resolve });
  });
  expect(reason).toBe('error');
  expect(bus.subscribedChannels).toBe(0);
});

test('a follower fetches what pub/sub never delivered: the periodic check catches up from the log', async () => {
  const task = newTask();
  await store.create(task);
  await store.transition(task.id, { from: ['queued'], to: 'processing' });
  const received: number[] = [];
  let ended: string | undefined;
  const follow = followTask(store, bus, task.id, {
    resyncMs: 50,
    onEvent: (event) => received.push(event.seq),
    onEnd: (reason) => {
      ended = reason;
    },
  });
  await follow.ready;
  // Events written to the log without being published, as when a publish is lost.
  const at = new Date().toISOString();
  await redis.rpush(store.keys.events(task.id), JSON.stringify({ taskId: task.id, seq: 3, at, type: 'warning', message: 'unpublished' }));
  await redis.rpush(store.keys.events(task.id), JSON.stringify({ taskId: task.id, seq: 4, at, type: 'status', status: 'cancelled' }));
  await redis.hset(store.keys.task(task.id), 'seq', '4', 'status', 'cancelled');
  for (let waited = 0; ended === undefined && waited < 2000; waited += 25) await new Promise((resolve) => setTimeout(resolve, 25));
  expect(ended).toBe('terminal');
  expect(received).toEqual([1, 2, 3, 4]);
});

test('a write sent twice with one write id (a resend after a reconnect) is applied once', async () => {
  const task = newTask();
  await store.create(task);
  await store.transition(task.id, { from: ['queued'], to: 'processing' });
  const write: TransitionRequest = { from: ['processing'], events: [{ type: 'delta', stepId: 's1', text: 'once' }], writeId: randomUUID() };
  const first = await store.transition(task.id, write);
  const again = await store.transition(task.id, write);
  expect(first).toEqual({ applied: true, lastSeq: 3, previousStatus: 'processing' });
  expect(again).toEqual(first);
  expect((await store.readEvents(task.id)).map((event) => event.type)).toEqual(['status', 'status', 'delta']);
});

test('a fenced write applies only while the record is at that attempt', async () => {
  const task = newTask();
  await store.create(task);
  expect(await store.transition(task.id, { from: ['queued'], to: 'processing', fence: 0, fields: { attempt: '1' } })).toMatchObject({ applied: true });
  // A second start that read attempt 0 too loses the race.
  expect(await store.transition(task.id, { from: ['queued', 'processing'], to: 'processing', fence: 0, fields: { attempt: '1' } })).toEqual({
    applied: false,
    currentStatus: 'processing',
  });
  expect(await store.complete(task.id, result, 2)).toEqual({ applied: false, currentStatus: 'processing' });
  expect(await store.complete(task.id, result, 1)).toMatchObject({ applied: true });
});

describe('bounds, the tenant index and the webhook outbox', () => {
  const boundsPrefix = `test-bounds-${randomUUID().slice(0, 8)}`;
  const scoped = () => new TaskStore(redis, boundsPrefix, { retentionSeconds: 60, maxQueuedTasks: 3 });

  afterAll(async () => {
    const keys = await redis.keys(`${boundsPrefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  });

  test("a key's active tasks are bounded; a task that ends gives its place back", async () => {
    const bounded = scoped();
    const keyId = `key-${randomUUID().slice(0, 6)}`;
    const first = queuedTask({ keyId });
    const second = queuedTask({ keyId });
    await bounded.create(first, { maxActiveTasks: 1 });
    await expect(bounded.create(second, { maxActiveTasks: 1 })).rejects.toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: expect.any(Number) });
    expect(await bounded.get(second.id)).toBeUndefined();
    await bounded.transition(first.id, { from: ['queued'], to: 'processing' });
    await bounded.complete(first.id, result);
    await bounded.create(second, { maxActiveTasks: 1 });
    expect(await redis.get(bounded.keys.activeTasks(keyId))).toBe('1');
    await bounded.cancel(second.id);
    expect(await redis.get(bounded.keys.activeTasks(keyId))).toBe('0');
  });

  test('a discarded task gives its place back and leaves the index', async () => {
    const bounded = scoped();
    const task = queuedTask({ keyId: `key-${randomUUID().slice(0, 6)}`, tenant: 'acme' });
    await bounded.create(task, { maxActiveTasks: 5 });
    expect(await redis.zrange(bounded.keys.tenantTasks('acme'), '0', '-1')).toContain(task.id);
    await bounded.discard([task]);
    expect(await bounded.get(task.id)).toBeUndefined();
    expect(await redis.get(bounded.keys.activeTasks(task.keyId ?? ''))).toBe('0');
    expect(await redis.zrange(bounded.keys.tenantTasks('acme'), '0', '-1')).not.toContain(task.id);
  });

  test('new tasks are refused while the queue holds maxQueuedTasks jobs', async () => {
    const bounded = scoped();
    const [wait] = bounded.keys.queueBacklog('tasks');
    await redis.del(wait);
    await redis.rpush(wait, 'job-1', 'job-2', 'job-3');
    await expect(bounded.create(queuedTask())).rejects.toMatchObject({ code: 'QUEUE_FULL', httpStatus: 503 });
    await redis.lpop(wait);
    await bounded.create(queuedTask());
    await redis.del(wait);
  });

  test('the queue bound counts the tasks of the same batch: a batch cannot overshoot it', async () => {
    const bounded = scoped();
    const [wait] = bounded.keys.queueBacklog('tasks');
    await redis.del(wait);
    await redis.rpush(wait, 'job-1');
    const batch = Array.from({ length: 5 }, () => queuedTask());
    const outcomes = await bounded.createAll(batch);
    expect(outcomes.map((outcome) => outcome?.constructor.name ?? 'created')).toEqual([
      'created',
      'created',
      'QueueFullError',
      'QueueFullError',
      'QueueFullError',
    ]);
    expect(await bounded.get(batch[1]!.id)).toBeDefined();
    expect(await bounded.get(batch[2]!.id)).toBeUndefined();
    await redis.del(wait);
  });

  test('a key at its active-task bound in the middle of a batch: the tasks before are written, the ones after are refused', async () => {
    const bounded = scoped();
    const keyId = `key-${randomUUID().slice(0, 6)}`;
    const batch = Array.from({ length: 4 }, () => queuedTask({ keyId }));
    const outcomes = await bounded.createAll(
      batch,
      batch.map(() => ({ maxActiveTasks: 2 })),
    );
    expect(outcomes.map((outcome) => outcome === null)).toEqual([true, true, false, false]);
    expect(outcomes[2]).toMatchObject({ code: 'RATE_LIMITED' });
    expect(await redis.get(bounded.keys.activeTasks(keyId))).toBe('2');
  });

  test('a task whose write fails half-way is undone whole; the tasks after it in the batch are written', async () => {
    const bounded = scoped();
    // A stray key of another type where the tenant index goes: the task's log and record are
    // written before its index entry fails.
    await redis.set(bounded.keys.tenantTasks('broken'), 'not a sorted set');
    const keyId = `key-${randomUUID().slice(0, 6)}`;
    const [before, broken, after] = [queuedTask({ keyId }), queuedTask({ keyId, tenant: 'broken' }), queuedTask({ keyId })];
    const outcomes = await bounded.createAll([before!, broken!, after!]);
    expect(outcomes[0]).toBeNull();
    expect(outcomes[1]?.message).toMatch(/WRONGTYPE/);
    expect(outcomes[2]).toBeNull();
    expect(await bounded.get(broken!.id)).toBeUndefined();
    expect(await bounded.readEvents(broken!.id)).toEqual([]);
    expect(await redis.get(bounded.keys.activeTasks(keyId))).toBe('2');
    expect(await redis.get(bounded.keys.tenantTasks('broken'))).toBe('not a sorted set');
    await redis.del(bounded.keys.tenantTasks('broken'));
  });

  test('a batch larger than one script call is written whole, in order, and indexed', async () => {
    const bounded = new TaskStore(redis, boundsPrefix, { retentionSeconds: 60 });
    const tenant = `big-${randomUUID().slice(0, 6)}`;
    const batch = Array.from({ length: 300 }, () => queuedTask({ id: uuidv7(), tenant }));
    expect(await bounded.createAll(batch)).toEqual(batch.map(() => null));
    expect(await redis.zcard(bounded.keys.tenantTasks(tenant))).toBe(300);
    expect(await redis.ttl(bounded.keys.tenantTasks(tenant))).toBeGreaterThan(60);
    expect((await bounded.get(batch[299]!.id))?.status).toBe('queued');
    const again = await bounded.createAll([batch[0]!, queuedTask({ tenant })]);
    expect(again[0]).toMatchObject({ name: 'TaskExistsError' });
    expect(again[1]).toBeNull();
  });

  describe('requests counted with their tasks', () => {
    const counter = testRequestCounter(boundsPrefix);

    test('each task counts its request in the same call; past the limit it is refused with what is left of the window; a task refused for another bound still counts', async () => {
      const counted = new TaskStore(redis, boundsPrefix, { retentionSeconds: 60, requestCounter: counter });
      const keyId = `key-${randomUUID().slice(0, 6)}`;
      const batch = Array.from({ length: 5 }, () => queuedTask({ keyId }));
      const outcomes = await counted.createAll(
        batch,
        batch.map(() => ({ maxActiveTasks: 2, requestsPerMinute: 3 })),
      );
      expect(outcomes.map((outcome) => (outcome === null ? 'created' : ((outcome as RateLimitedError).details as { quota: string }).quota))).toEqual([
        'created',
        'created',
        'maxActiveTasks',
        'requestsPerMinute',
        'requestsPerMinute',
      ]);
      expect(outcomes[3]).toBeInstanceOf(RequestRateExceededError);
      const refusal = outcomes[3] as RequestRateExceededError;
      expect(refusal).toMatchObject({ httpStatus: 429, limit: 3, retryAfterSeconds: 60 });
      expect(refusal.msBeforeNext).toBeGreaterThan(55_000);
      expect(refusal.msBeforeNext).toBeLessThanOrEqual(60_000);
      expect(await redis.get(counter.keyOf(keyId))).toBe('5');
      expect(await counted.get(batch[3]!.id)).toBeUndefined();
      // Tasks that do not ask to be counted are not, and other keys have counts of their own.
      const other = queuedTask({ keyId: `key-${randomUUID().slice(0, 6)}` });
      expect(await counted.createAll([queuedTask({ keyId }), other], [{}, { requestsPerMinute: 3 }])).toEqual([null, null]);
      expect(await redis.get(counter.keyOf(keyId))).toBe('5');
      expect(await redis.get(counter.keyOf(other.keyId!))).toBe('1');
    });

    test('the count starts afresh when its window ends', async () => {
      const counted = new TaskStore(redis, boundsPrefix, { retentionSeconds: 60, requestCounter: { ...counter, windowSeconds: 1 } });
      const keyId = `key-${randomUUID().slice(0, 6)}`;
      const limits = [{ requestsPerMinute: 1 }];
      expect(await counted.createAll([queuedTask({ keyId })], limits)).toEqual([null]);
      expect((await counted.createAll([queuedTask({ keyId })], limits))[0]).toBeInstanceOf(RequestRateExceededError);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      expect(await counted.createAll([queuedTask({ keyId })], limits)).toEqual([null]);
    });

    test('a store without a counter fails a task that asks to be counted, alone', async () => {
      const uncounted = scoped();
      const outcomes = await uncounted.createAll([queuedTask(), queuedTask()], [{ requestsPerMinute: 5 }, {}]);
      expect(outcomes[0]?.message).toMatch(/no request counter/);
      expect(outcomes[1]).toBeNull();
    });
  });

  test('a task with a webhook enters the outbox when it ends, once; its delivery attempts are on its record', async () => {
    const bounded = scoped();
    const task = queuedTask({ webhook: { url: 'https://example.com/hook', events: ['completed', 'failed', 'cancelled'], deliveries: [] } });
    await bounded.create(task);
    await bounded.transition(task.id, { from: ['queued'], to: 'processing' });
    expect(await redis.lrange(bounded.keys.webhookOutbox(), 0, -1)).not.toContain(task.id);
    await bounded.complete(task.id, result);
    await bounded.cancel(task.id);
    expect((await redis.lrange(bounded.keys.webhookOutbox(), 0, -1)).filter((id) => id === task.id)).toHaveLength(1);
    const delivery = { webhookId: 'msg_1', attempt: 1, at: new Date().toISOString(), durationMs: 12, status: 500, ok: false, error: 'HTTP 500' };
    await bounded.recordWebhookDelivery(task.id, delivery);
    expect((await bounded.require(task.id)).webhook).toEqual({
      url: 'https://example.com/hook',
      events: ['completed', 'failed', 'cancelled'],
      deliveries: [delivery],
    });
    expect(await bounded.ttl(task.id)).toBeGreaterThan(0);
    expect(await redis.ttl(bounded.keys.webhookDeliveries(task.id))).toBeGreaterThan(0);
  });
});

describe('listing a tenant’s tasks', () => {
  const listPrefix = `test-list-${randomUUID().slice(0, 8)}`;
  const store_ = () => new TaskStore(redis, listPrefix, { retentionSeconds: 60 });

  afterAll(async () => {
    const keys = await redis.keys(`${listPrefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  });

  test('newest first, paged by cursor, filtered by status, pattern and creation time; other tenants and expired tasks never appear', async () => {
    const listing = store_();
    const base = Date.now() - 60_000;
    // Ids are time-ordered (uuid v7), as the api makes them: one per second, oldest first.
    const tasks = Array.from({ length: 25 }, (_, index) =>
      queuedTask({
        id: uuidv7({ msecs: base + index * 1000 }),
        tenant: 'acme',
        pattern: index % 2 === 0 ? 'primary' : 'validated',
        createdAt: new Date(base + index * 1000).toISOString(),
      }),
    );
    for (const task of tasks) await listing.create(task);
    await listing.create(queuedTask({ id: uuidv7(), tenant: 'globex' }));
    await listing.cancel(tasks[24]!.id);
    await redis.del(listing.keys.task(tasks[23]!.id)); // expired

    const first = await listing.list('acme', { limit: 10 });
    expect(first.tasks.map((task) => task.id)).toEqual([tasks[24], ...tasks.slice(14, 23).reverse()].map((task) => task!.id));
    expect(first.tasks[0]).toMatchObject({ status: 'cancelled', errorCode: 'CANCELLED', pattern: 'primary' });
    const second = await listing.list('acme', { limit: 10, before: first.next });
    const third = await listing.list('acme', { limit: 10, before: second.next });
    const all = [...first.tasks, ...second.tasks, ...third.tasks].map((task) => task.id);
    expect(all).toEqual([tasks[24], ...tasks.slice(0, 23).reverse()].map((task) => task!.id));
    expect(third.next).toBeUndefined();
    expect(await redis.zrange(listing.keys.tenantTasks('acme'), '0', '-1')).not.toContain(tasks[23]!.id);

    expect((await listing.list('acme', { limit: 50, status: ['cancelled'] })).tasks.map((task) => task.id)).toEqual([tasks[24]!.id]);
    expect((await listing.list('acme', { limit: 50, pattern: 'validated' })).tasks).toHaveLength(11);
    const recent = await listing.list('acme', { limit: 50, createdAfter: new Date(base + 20_000) });
    expect(recent.tasks.map((task) => task.id)).toEqual([tasks[24], tasks[22], tasks[21], tasks[20]].map((task) => task!.id));
    expect((await listing.list('globex', { limit: 50 })).tasks).toHaveLength(1);
    expect((await listing.list('nobody', { limit: 50 })).tasks).toEqual([]);
  });

  test('a rare filter answers a short page with a cursor instead of reading the whole index', async () => {
    const listing = store_();
    const base = Date.now() - 120_000;
    for (let index = 0; index < 30; index += 1) {
      await listing.create(queuedTask({ id: uuidv7({ msecs: base + index * 100 }), tenant: 'scan', pattern: index === 2 ? 'rare' : 'primary' }));
    }
    const page = await listing.list('scan', { limit: 5, pattern: 'rare', scanLimit: 10 });
    expect(page.tasks).toEqual([]);
    expect(page.next).toBeDefined();
    let found: string[] = [];
    let next = page.next;
    while (next !== undefined) {
      const more = await listing.list('scan', { limit: 5, pattern: 'rare', scanLimit: 10, before: next });
      found = found.concat(more.tasks.map((task) => task.id));
      next = more.next;
    }
    expect(found).toHaveLength(1);
  });
});
