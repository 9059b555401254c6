/**
 * Requests per minute against a real Redis: two limiters on one Redis stand for two api replicas.
 * The window is one second here so that its end can be waited for.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { OPEN_MODE_PRINCIPAL, RateLimitedError, RequestRateExceededError, ValidationError, type Principal, type QuotaLimits } from '@mageagent/core';
import { deleteKeysWithPrefix, TaskStore } from '@mageagent/tasks';
import { queuedTask } from '../../../../packages/tasks/src/test-tasks';
import { RATE_LIMIT_COMMAND, RequestRateLimits } from './request-rate';

const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const prefix = `test-rate-${randomUUID().slice(0, 8)}`;
const limits: QuotaLimits = { requestsPerMinute: 3, maxActiveTasks: 0, maxPromptBytes: 0 };
const caller = (keyId: string): Principal => ({ ...OPEN_MODE_PRINCIPAL, keyId });

afterAll(async () => {
  await deleteKeysWithPrefix(redis, prefix);
  redis.disconnect();
});

test('replicas share one budget per key; past it a 429 says when to retry; the next window starts afresh', async () => {
  const [replicaA, replicaB] = [new RequestRateLimits(redis, prefix, 1), new RequestRateLimits(redis, prefix, 1)];
  await replicaA.consume(caller('k1'), limits);
  await replicaB.consume(caller('k1'), limits);
  await replicaA.consume(caller('k1'), limits);
  const refused = await replicaB.consume(caller('k1'), limits).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(RateLimitedError);
  expect(refused).toMatchObject({ httpStatus: 429, retryAfterSeconds: 1, details: { quota: 'requestsPerMinute', limit: 3 } });
  // Another key has its own budget.
  await expect(replicaB.consume(caller('k2'), limits)).resolves.toBeUndefined();
  await new Promise((resolve) => setTimeout(resolve, 1100));
  await expect(replicaB.consume(caller('k1'), limits)).resolves.toBeUndefined();
  await expect(replicaA.consume(caller('k1'), limits)).resolves.toBeUndefined();
});

test('a limit of 0 means none', async () => {
  const unlimited = new RequestRateLimits(redis, prefix, 1);
  for (let index = 0; index < 20; index += 1) await unlimited.consume(caller('k3'), { ...limits, requestsPerMinute: 0 });
});

test('requests that arrive together are counted together: exactly the limit passes, on one replica and across two', async () => {
  const [replicaA, replicaB] = [new RequestRateLimits(redis, prefix, 5), new RequestRateLimits(redis, prefix, 5)];
  const settle = (replica: RequestRateLimits, keyId: string, count: number, limit: number) =>
    Promise.allSettled(Array.from({ length: count }, () => replica.consume(caller(keyId), { ...limits, requestsPerMinute: limit })));
  const passed = (outcomes: PromiseSettledResult<void>[]) => outcomes.filter((outcome) => outcome.status === 'fulfilled').length;

  // One replica, ten at once against a limit of three: the first three pass, in arrival order.
  const alone = await settle(replicaA, 'k4', 10, 3);
  expect(alone.map((outcome) => outcome.status)).toEqual([...Array(3).fill('fulfilled'), ...Array(7).fill('rejected')]);
  expect((alone[3] as PromiseRejectedResult).reason).toBeInstanceOf(RateLimitedError);
  // Used up: the next one is refused from memory, without a batch of its own passing.
  await expect(replicaA.consume(caller('k4'), { ...limits, requestsPerMinute: 3 })).rejects.toBeInstanceOf(RateLimitedError);

  // Two replicas, seven each at once against a shared limit of ten: ten pass in all.
  const [fromA, fromB] = await Promise.all([settle(replicaA, 'k5', 7, 10), settle(replicaB, 'k5', 7, 10)]);
  expect(passed(fromA) + passed(fromB)).toBe(10);

  // Keys are counted apart even within one turn.
  const [k6, k7] = await Promise.all([settle(replicaA, 'k6', 4, 2), settle(replicaA, 'k7', 4, 2)]);
  expect([passed(k6), passed(k7)]).toEqual([2, 2]);
});

test('Redis refusing the count fails every request of the batch with its error (not a 429)', async () => {
  // Nothing listens on port 1: every command fails at once, as the api's do while Redis is down.
  const broken = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  broken.on('error', () => {});
  const limiter = new RequestRateLimits(broken, prefix, 5);
  const outcomes = await Promise.allSettled([limiter.consume(caller('k8'), limits), limiter.consume(caller('k8'), limits)]);
  expect(outcomes.map((outcome) => outcome.status)).toEqual(['rejected', 'rejected']);
  for (const outcome of outcomes) expect((outcome as PromiseRejectedResult).reason).not.toBeInstanceOf(RateLimitedError);
  broken.disconnect();
});

test('one round of counts at a time: requests arriving while one is in Redis, over several turns, are counted together next', async () => {
  const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  try {
    const replica = new RequestRateLimits(client, prefix, 5);
    // The limit's limiter made (it defines its script on the client), then that script observed on
    // the real client, with the first count held until released.
    await replica.consume(caller('k9'), { ...limits, requestsPerMinute: 100 });
    const counted: number[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const scripted = client as unknown as { rlflxIncr: (...args: unknown[]) => Promise<unknown> };
    const increment = scripted.rlflxIncr.bind(client);
    scripted.rlflxIncr = async (...args: unknown[]) => {
      counted.push(Number((args[0] as string[])[1]));
      if (counted.length === 1) await held;
      return increment(...args);
    };
    const first = replica.consume(caller('k8'), { ...limits, requestsPerMinute: 100 });
    await new Promise((resolve) => setImmediate(resolve));
    const later: Promise<void>[] = [];
    for (let turn = 0; turn < 4; turn += 1) {
      later.push(replica.consume(caller('k8'), { ...limits, requestsPerMinute: 100 }), replica.consume(caller('k8'), { ...limits, requestsPerMinute: 100 }));
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(counted).toEqual([1]);
    release();
    await Promise.all([first, ...later]);
    // The points counted per call: 1, then the 8 that arrived meanwhile.
    expect(counted).toEqual([1, 8]);
  } finally {
    client.disconnect();
  }
});

test('the script the api connection sends without auto-pipelining is the one the limiter defines', () => {
  const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { lazyConnect: true });
  expect(typeof (client as unknown as Record<string, unknown>)[RATE_LIMIT_COMMAND]).toBe('undefined');
  new RequestRateLimits(client, prefix, 5);
  expect(typeof (client as unknown as Record<string, unknown>)[RATE_LIMIT_COMMAND]).toBe('function');
  client.disconnect();
});

describe('requests counted with the tasks they create', () => {
  /** An api replica: its limiter, and a task store that counts with the limiter's counter (as services.ts wires them). */
  function replica(windowSeconds = 5) {
    const rates = new RequestRateLimits(redis, prefix, windowSeconds);
    expect(rates.counter).toBeDefined();
    const store = new TaskStore(redis, prefix, { retentionSeconds: 60, requestCounter: rates.counter });
    return { rates, store };
  }
  const create = (store: TaskStore, keyId: string, limit: number) =>
    store.createAll([queuedTask({ keyId })], [{ requestsPerMinute: limit }]).then(([outcome]) => outcome);

  test("the creation script counts with the limiter's own script and key: one count per key across routes and replicas", async () => {
    const [a, b] = [replica(), replica()];
    expect(await create(a.store, 'c1', 4)).toBeNull();
    await b.rates.consume(caller('c1'), { ...limits, requestsPerMinute: 4 });
    expect(await create(b.store, 'c1', 4)).toBeNull();
    await a.rates.consume(caller('c1'), { ...limits, requestsPerMinute: 4 });
    expect(await redis.get(a.rates.counter!.keyOf('c1'))).toBe('4');
    const refused = await create(a.store, 'c1', 4);
    expect(refused).toBeInstanceOf(RequestRateExceededError);
    expect(refused).toMatchObject({ httpStatus: 429, retryAfterSeconds: 5, details: { quota: 'requestsPerMinute', limit: 4 } });
    await expect(b.rates.consume(caller('c1'), { ...limits, requestsPerMinute: 4 })).rejects.toBeInstanceOf(RequestRateExceededError);
  });

  test('a request that creates no task is counted before its answer, once; at the limit its answer is the 429', async () => {
    const { rates } = replica();
    const tight = { ...limits, requestsPerMinute: 2 };
    const invalid = new ValidationError('invalid task', []);
    const first = rates.pending(caller('c2'), tight)!;
    expect(await first.answerFor(invalid)).toBe(invalid);
    // Counted once, however often it is asked.
    expect(await first.answerFor(invalid)).toBe(invalid);
    await first.now();
    const second = rates.pending(caller('c2'), tight)!;
    await second.now();
    expect(await redis.get(rates.counter!.keyOf('c2'))).toBe('2');
    const third = rates.pending(caller('c2'), tight)!;
    expect(await third.answerFor(invalid)).toBeInstanceOf(RequestRateExceededError);
    // Nothing to defer without a limit.
    expect(rates.pending(caller('c2'), { ...limits, requestsPerMinute: 0 })).toBeUndefined();
  });

  test("the creation script's refusal makes the key refused from memory until its window ends, on every route", async () => {
    const client = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    const rates = new RequestRateLimits(client, prefix, 1);
    const store = new TaskStore(client, prefix, { retentionSeconds: 60, requestCounter: rates.counter });
    const tight = { ...limits, requestsPerMinute: 1 };
    const first = rates.pending(caller('c3'), tight)!;
    expect(await store.createAll([queuedTask({ keyId: 'c3' })], [{ requestsPerMinute: first.withTask() }])).toEqual([null]);
    const second = rates.pending(caller('c3'), tight)!;
    const [refusal] = await store.createAll([queuedTask({ keyId: 'c3' })], [{ requestsPerMinute: second.withTask() }]);
    expect(await second.answerFor(refusal)).toBe(refusal);
    // Redis is gone: only memory can answer now, and it answers the 429 on both paths.
    client.disconnect();
    expect(() => rates.pending(caller('c3'), tight)).toThrow(RequestRateExceededError);
    await expect(rates.consume(caller('c3'), tight)).rejects.toBeInstanceOf(RequestRateExceededError);
    // Other keys are not refused from memory (they fail to be counted instead).
    await expect(rates.consume(caller('c4'), tight)).rejects.not.toBeInstanceOf(RateLimitedError);
    // The window ends: the key is no longer refused from memory.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(rates.pending(caller('c3'), tight)).toBeDefined();
  });

  test('a key whose limit is raised (the keys file reloaded) is counted again at once, against the same count', async () => {
    const rates = new RequestRateLimits(redis, prefix, 5);
    const tight = { ...limits, requestsPerMinute: 2 };
    await rates.consume(caller('c5'), tight);
    await rates.consume(caller('c5'), tight);
    await expect(rates.consume(caller('c5'), tight)).rejects.toBeInstanceOf(RequestRateExceededError);
    // Refused from memory under the old limit, on both paths.
    expect(() => rates.pending(caller('c5'), tight)).toThrow(RequestRateExceededError);
    const raised = { ...limits, requestsPerMinute: 4 };
    expect(rates.pending(caller('c5'), raised)).toBeDefined();
    // Three counted so far (the refused one too): one more passes under 4, then the 429 again.
    await expect(rates.consume(caller('c5'), raised)).resolves.toBeUndefined();
    await expect(rates.consume(caller('c5'), raised)).rejects.toMatchObject({ details: { limit: 4 } });
  });
});
