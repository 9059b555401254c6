import { randomUUID } from 'node:crypto';
import type { TaskRecord } from '@mageagent/core';
import type { RequestCounter } from './task-store';

/** Test support: a fresh queued task record. */
export function queuedTask(overrides: Partial<TaskRecord> = {}): TaskRecord {
  const now = new Date().toISOString();
  return {
    id: randomUUID(),
    tenant: 'default',
    app: null,
    keyId: null,
    status: 'queued',
    pattern: 'primary',
    priority: 'normal',
    input: { messages: [{ role: 'user', content: 'hi' }] },
    options: {},
    metadata: {},
    createdAt: now,
    startedAt: null,
    completedAt: null,
    expiresAt: now,
    attempt: 0,
    currentStep: null,
    result: null,
    error: null,
    lastSeq: 1,
    webhook: null,
    ...overrides,
  };
}

/**
 * Test support: a request counter of the contract RequestCounter states, on keys under `prefix`
 * (the api passes rate-limiter-flexible's script; apps/api's request-rate tests use that one).
 */
export function testRequestCounter(prefix: string, windowSeconds = 60): RequestCounter {
  return {
    lua: `redis.call('set', KEYS[1], 0, 'EX', ARGV[2], 'NX')
local count = redis.call('incrby', KEYS[1], ARGV[1])
return {count, redis.call('pttl', KEYS[1])}`,
    windowSeconds,
    keyOf: (keyId) => `${prefix}:requests:${keyId}`,
  };
}
