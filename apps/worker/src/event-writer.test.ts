import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createRedis, deleteKeysWithPrefix, TaskStore } from '@mageagent/tasks';
import { queuedTask } from '../../../packages/tasks/src/test-tasks';
import { TaskEventWriter } from './event-writer';

const prefix = `test-writer-${randomUUID().slice(0, 8)}`;
let redis: Redis;
let store: TaskStore;

beforeAll(() => {
  redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', 'worker');
  store = new TaskStore(redis, prefix, { retentionSeconds: 60 });
});

afterAll(async () => {
  await deleteKeysWithPrefix(redis, prefix);
  redis.disconnect();
});

async function runningTask(): Promise<string> {
  const { id } = queuedTask();
  await store.create(queuedTask({ id }));
  await store.transition(id, { from: ['queued'], to: 'processing', fields: { attempt: '1' } });
  return id;
}

test('deltas of one step are coalesced; other events flush at once and keep their order', async () => {
  const id = await runningTask();
  const writer = new TaskEventWriter(store, id, 50, 1, () => undefined);
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
  const writer = new TaskEventWriter(store, id, 10, 1, () => (ended += 1));
  writer.emit({ type: 'warning', message: 'late' });
  await writer.flush();
  expect(ended).toBe(1);
  expect((await store.readEvents(id)).map((event) => event.type)).toEqual(['status', 'status', 'status']);
});

test('a worker whose task was taken over (another attempt) is told so, and its events are refused', async () => {
  const id = await runningTask();
  // Another worker restarts the task: attempt 2.
  await store.transition(id, { from: ['processing'], to: 'processing', fence: 1, fields: { attempt: '2' } });
  let ended = 0;
  const stale = new TaskEventWriter(store, id, 10, 1, () => (ended += 1));
  stale.emit({ type: 'warning', message: 'from the worker that lost the task' });
  await stale.flush();
  expect(ended).toBe(1);
  const current = new TaskEventWriter(store, id, 10, 2, () => (ended += 1));
  current.emit({ type: 'warning', message: 'from the worker that owns it' });
  await current.flush();
  expect(ended).toBe(1);
  const warnings = (await store.readEvents(id)).filter((event) => event.type === 'warning');
  expect(warnings).toEqual([expect.objectContaining({ message: 'from the worker that owns it' })]);
});

test('a write Redis refuses is reported by flush(), never as an unhandled rejection', async () => {
  const id = await runningTask();
  // A stray key of the wrong type where the log goes: the append script fails.
  await redis.del(store.keys.events(id));
  await redis.set(store.keys.events(id), 'not a list');
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    const writer = new TaskEventWriter(store, id, 5, 1, () => undefined);
    writer.emit({ type: 'warning', message: 'refused' });
    writer.emit({ type: 'delta', stepId: 's-1', text: 'also refused' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await expect(writer.flush()).rejects.toThrow(/WRONGTYPE/);
    await new Promise((resolve) => setImmediate(resolve));
    expect(unhandled).toEqual([]);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});
