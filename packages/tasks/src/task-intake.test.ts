import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createRedis, deleteKeysWithPrefix } from './redis';
import { TaskIntake } from './task-intake';
import { BULLMQ_PRIORITY, TaskQueue } from './task-queue';
import { TaskExistsError, TaskStore } from './task-store';
import { queuedTask } from './test-tasks';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefixes: string[] = [];
let redis: Redis;

beforeAll(() => {
  redis = createRedis(REDIS_URL, 'commands', 'test-intake');
});

afterAll(async () => {
  for (const prefix of prefixes) await deleteKeysWithPrefix(redis, prefix);
  redis.disconnect();
});

/** A store, queue and intake on a prefix of their own. */
function setup() {
  const prefix = `test-intake-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  const store = new TaskStore(redis, prefix, { retentionSeconds: 60 });
  const queue = new TaskQueue(redis, { prefix, attempts: 3 });
  return { prefix, store, queue, intake: new TaskIntake(store, queue) };
}

test('tasks submitted in one turn are all written: record, first event and a job with their priority', async () => {
  const { store, queue, intake } = setup();
  const tasks = [queuedTask({ priority: 'high' }), ...Array.from({ length: 30 }, () => queuedTask()), queuedTask({ priority: 'low' })];
  await Promise.all(tasks.map((task) => intake.submit(task)));
  for (const task of tasks) {
    expect(await store.get(task.id)).toMatchObject({ id: task.id, status: 'queued', lastSeq: 1 });
    expect(await store.readEvents(task.id)).toEqual([expect.objectContaining({ seq: 1, type: 'status', status: 'queued' })]);
    const job = await queue.queue.getJob(task.id);
    expect(job?.data).toEqual({ taskId: task.id });
    expect(job?.opts.priority).toBe(BULLMQ_PRIORITY[task.priority]);
  }
  expect(await queue.queue.getPrioritizedCount()).toBe(tasks.length);
  await queue.close();
});

test('a duplicate id is refused on its own; the existing task and its job stay, the rest of the batch lands', async () => {
  const { store, queue, intake } = setup();
  const existing = queuedTask({ metadata: { first: true } });
  await intake.submit(existing);
  const others = [queuedTask(), queuedTask()];
  const outcomes = await Promise.allSettled([intake.submit({ ...existing, metadata: { second: true } }), ...others.map((task) => intake.submit(task))]);
  expect(outcomes[0]).toMatchObject({ status: 'rejected', reason: expect.any(TaskExistsError) });
  expect(outcomes.slice(1).map((outcome) => outcome.status)).toEqual(['fulfilled', 'fulfilled']);
  expect((await store.get(existing.id))?.metadata).toEqual({ first: true });
  expect(await queue.queue.getJob(existing.id)).toBeDefined();
  for (const task of others) expect(await queue.queue.getJob(task.id)).toBeDefined();
  await queue.close();
});

test('a record that cannot be written takes its job back out; nothing of it is left', async () => {
  const { store, queue, intake } = setup();
  const broken = queuedTask();
  // A stray key of the wrong type where the task's event log goes makes Redis refuse the record.
  await redis.set(store.keys.events(broken.id), 'not a list');
  const fine = queuedTask();
  const outcomes = await Promise.allSettled([intake.submit(broken), intake.submit(fine)]);
  expect(outcomes[0]).toMatchObject({ status: 'rejected', reason: expect.objectContaining({ message: expect.stringMatching(/WRONGTYPE/) }) });
  expect(outcomes[1].status).toBe('fulfilled');
  expect(await store.get(broken.id)).toBeUndefined();
  expect(await queue.queue.getJob(broken.id)).toBeUndefined();
  expect(await queue.queue.getJob(fine.id)).toBeDefined();
  await queue.close();
});

test('when the jobs cannot be added, every task of the batch is rejected and its record marked failed', async () => {
  const { prefix, store, queue, intake } = setup();
  await intake.submit(queuedTask()); // the queue's keys exist
  // A stray key of the wrong type where BullMQ keeps prioritised jobs makes every add fail.
  await redis.del(`${prefix}:tasks:prioritized`);
  await redis.set(`${prefix}:tasks:prioritized`, 'not a sorted set');
  const tasks = [queuedTask(), queuedTask(), queuedTask()];
  const outcomes = await Promise.allSettled(tasks.map((task) => intake.submit(task)));
  expect(outcomes.map((outcome) => outcome.status)).toEqual(['rejected', 'rejected', 'rejected']);
  for (const task of tasks) {
    const stored = await store.get(task.id);
    expect(stored).toMatchObject({ status: 'failed', error: { code: 'INTERNAL', retryable: true } });
    expect((await store.readEvents(task.id)).at(-1)).toMatchObject({ type: 'status', status: 'failed' });
  }
  await queue.close();
});
