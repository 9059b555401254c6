import { randomUUID } from 'node:crypto';
import type { TaskRecord } from '@mageagent/core';

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
