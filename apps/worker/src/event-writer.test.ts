import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createRedis, deleteKeysWithPrefix, TaskStore } from '@mageagent/tasks';
import { TaskEventWriter } from './event-writer';

const prefix = `test-writer-${randomUUID().slice(0, 8)}`;
let redis: Redis;
let store: TaskStore;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'commands');
  store = new TaskStore(redis, prefix, { retentionSeconds: 60 });
});

afterAll(async () => {
  await deleteKeysWithPrefix(redis, prefix);
  redis.disconnect();
});

async function runningTask(): Promise<string> {
  const id = randomUUID();
  const now = new Date().toISOString();
  await store.create({
    id, status: 'queued', pattern: 'primary', priority: 'normal', input: { messages: [] }, options: {}, metadata: {},
    createdAt: now, startedAt: null, completedAt: null, expiresAt: now, attempt: 0, currentStep: null, result: null, error: null, lastSeq: 1,
  });
  await store.transition(id, { from: ['queued'], to: 'processing' });
  return id;
}

test('deltas of one step are coalesced; other events flush at once and keep their order', async () => {
  const id = await runningTask();
  const writer = new TaskEventWriter(store, id, 50, () => undefined);
  writer.emit({ type: 'step.started', step: { id: 's-1', name: 's', role: 'primary', model: 'm', host: 'h', attempt: 1 } });
  for (const text of ['a', 'b', 'c']) writer.emit({ type: 'delta', stepId: 's-1', text });
  writer.emit({ type: 'step.completed', stepId: 's-1', durationMs: 1, usage: { promptTokens: 1, completionTokens: 3, totalTokens: 4 } });
  await writer.flush();
  const events = await store.readEvents(id, 2);
  expect(events.map((event) => event.type)).toEqual(['step.started', 'delta', 'step.completed']);
  expect(events[1]).toMatchObject({ type: 'delta', text: 'abc' });
  expect((await store.require(id)).currentStep).toBe('s-1');
});

test('a task that ended under the writer (cancelled) is reported, and nothing more is written', async () => {
  const id = await runningTask();
  await store.cancel(id);
  let ended = 0;
  const writer = new TaskEventWriter(store, id, 10, () => (ended += 1));
  writer.emit({ type: 'warning', message: 'late' });
  await writer.flush();
  expect(ended).toBe(1);
  expect((await store.readEvents(id)).map((event) => event.type)).toEqual(['status', 'status', 'status']);
});
