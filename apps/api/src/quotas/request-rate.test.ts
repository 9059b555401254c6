/**
 * Requests per minute against a real Redis: two limiters on one Redis stand for two api replicas.
 * The window is one second here so that its end can be waited for.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { OPEN_MODE_PRINCIPAL, RateLimitedError, type Principal, type QuotaLimits } from '@mageagent/core';
import { deleteKeysWithPrefix } from '@mageagent/tasks';
import { RequestRateLimits } from './request-rate';

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
