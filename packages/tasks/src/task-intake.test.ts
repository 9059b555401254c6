import { randomUUID } from 'node:crypto';
import { Worker } from 'bullmq';
import { RequestRateExceededError, type TaskRecord } from '@mageagent/core';
import type { Redis } from 'ioredis';
import { createRedis, deleteKeysWithPrefix, redisReady } from './redis';
import { TaskIntake, TaskNotQueuedError } from './task-intake';
import { BULLMQ_PRIORITY, TASK_QUEUE_NAME, type TaskJobData, TaskQueue } from './task-queue';
import { TaskExistsError, TaskNotStorableError, TaskStore } from './task-store';
import { queuedTask, testRequestCounter } from './test-tasks';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const prefixes: string[] = [];
let redis: Redis;

beforeAll(async () => {
  redis = createRedis(REDIS_URL, 'requests', { connectionName: 'test-intake' });
  await redisReady(redis, 5000);
});

afterAll(async () => {
  for (const prefix of prefixes) await deleteKeysWithPrefix(redis, prefix);
  redis.disconnect();
});

/**
 * The store's real createAll, observed (the size of each call's batch), with its first call held
 * until `release()`; `firstAnswer`, when given, answers that call instead of Redis.
 */
function holdFirstCall(store: TaskStore, firstAnswer?: (tasks: readonly TaskRecord[]) => Array<Error | null>): { batches: number[]; release: () => void } {
  const batches: number[] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const createAll = store.createAll.bind(store);
  store.createAll = async (tasks, limits, jobs) => {
    batches.push(tasks.length);
    if (batches.length > 1) return createAll(tasks, limits, jobs);
    await held;
    return firstAnswer ? firstAnswer(tasks) : createAll(tasks, limits, jobs);
  };
  return { batches, release };
}

// Both ways of writing a batch: records and jobs in one script call (BullMQ's add-job script
// inside the store's), and the two-step fallback (records, then BullMQ's addBulk).
describe.each([
  ['in one call with their records', true],
  ['after their records (addBulk)', false],
])('jobs written %s', (_, jobsWithRecords) => {
  /** A store, queue and intake on a prefix of their own, the intake on the path under test. */
  async function setup() {
    const prefix = `test-intake-${randomUUID().slice(0, 8)}`;
    prefixes.push(prefix);
    const store = new TaskStore(redis, prefix, { retentionSeconds: 60, requestCounter: testRequestCounter(prefix) });
    const queue = new TaskQueue(redis, { prefix, attempts: 3 });
    const intake = new TaskIntake(store, queue, { jobsWithRecords });
    expect(await intake.jobsWithRecords()).toBe(jobsWithRecords);
    return { prefix, store, queue, intake };
  }

  test('tasks submitted in one turn are all written: record, first event and a job with their priority', async () => {
    const { store, queue, intake } = await setup();
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

  test("requests are counted with their tasks: past the key's limit a task is refused and nothing of it is written, job included", async () => {
    const { store, queue, intake } = await setup();
    const tasks = Array.from({ length: 4 }, () => queuedTask({ keyId: 'counted' }));
    const outcomes = await Promise.allSettled(tasks.map((task) => intake.submit(task, { requestsPerMinute: 2 })));
    expect(outcomes.map((outcome) => outcome.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected']);
    expect(outcomes[2]).toMatchObject({ reason: expect.any(RequestRateExceededError) });
    for (const [index, task] of tasks.entries()) {
      expect(await store.get(task.id)).toEqual(index < 2 ? expect.objectContaining({ id: task.id }) : undefined);
      expect(await queue.queue.getJob(task.id)).toEqual(index < 2 ? expect.objectContaining({ id: task.id }) : undefined);
    }
    await queue.close();
  });

  test('a duplicate id is refused on its own; the existing task and its job stay, the rest of the batch lands', async () => {
    const { store, queue, intake } = await setup();
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
    const { store, queue, intake } = await setup();
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

  test('when the jobs cannot be added, every task of the batch is rejected, its record is gone and no job of it can run', async () => {
    const { prefix, store, queue, intake } = await setup();
    await intake.submit(queuedTask()); // the queue's keys exist
    // A stray key of the wrong type where BullMQ keeps prioritised jobs makes every add fail.
    await redis.del(`${prefix}:tasks:prioritized`);
    await redis.set(`${prefix}:tasks:prioritized`, 'not a sorted set');
    const tasks = [queuedTask(), queuedTask(), queuedTask()];
    const outcomes = await Promise.allSettled(tasks.map((task) => intake.submit(task)));
    expect(outcomes).toEqual(tasks.map(() => ({ status: 'rejected', reason: expect.any(TaskNotQueuedError) })));
    await redis.del(`${prefix}:tasks:prioritized`);
    for (const task of tasks) {
      expect(await store.get(task.id)).toBeUndefined();
      expect(await store.readEvents(task.id)).toEqual([]);
      // The refused add may leave BullMQ's job hash behind, in no list a worker takes jobs from.
      expect(await queue.queue.getJobState(task.id)).toBe('unknown');
    }
    await queue.close();
  });

  test('one batch is written at a time: what arrives meanwhile, over several turns, is the next batch, written once it is done', async () => {
    const { store, queue, intake } = await setup();
    const { batches, release } = holdFirstCall(store);
    const first = intake.submit(queuedTask());
    await new Promise((resolve) => setImmediate(resolve));
    const later: Promise<void>[] = [];
    for (let turn = 0; turn < 5; turn += 1) {
      later.push(intake.submit(queuedTask()), intake.submit(queuedTask()));
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(batches).toEqual([1]);
    release();
    await Promise.all([first, ...later]);
    expect(batches).toEqual([1, 10]);
    expect(await queue.queue.getPrioritizedCount()).toBe(11);
    await queue.close();
  });

  test('while Redis does not answer, tasks submitted during the failing batch get its answer at once instead of a timeout of their own; later ones try again', async () => {
    const { store, queue, intake } = await setup();
    // The first call fails as the real one does when Redis hangs: each task gets the command timeout.
    const { batches, release } = holdFirstCall(store, (tasks) => tasks.map(() => new Error('Command timed out')));
    const first = intake.submit(queuedTask());
    await new Promise((resolve) => setImmediate(resolve));
    const during = [intake.submit(queuedTask()), intake.submit(queuedTask())];
    await new Promise((resolve) => setImmediate(resolve));
    release();
    const outcomes = await Promise.allSettled([first, ...during]);
    expect(outcomes.map((outcome) => outcome.status === 'rejected' && (outcome.reason as Error).message)).toEqual([
      'Command timed out',
      'Command timed out',
      'Command timed out',
    ]);
    // The two submitted meanwhile cost no call of their own.
    expect(batches).toEqual([1]);
    const after = queuedTask();
    await intake.submit(after);
    expect(batches).toEqual([1, 1]);
    expect(await store.get(after.id)).toMatchObject({ id: after.id, status: 'queued' });
    await queue.close();
  });

  test('a batch Redis partly took is no outage: tasks submitted meanwhile are written', async () => {
    const { store, queue, intake } = await setup();
    // One of the first batch's tasks fails for want of Redis, the other does not.
    const { batches, release } = holdFirstCall(store, (tasks) => tasks.map((_, index) => (index === 0 ? new Error('Command timed out') : null)));
    const first = [intake.submit(queuedTask()), intake.submit(queuedTask())];
    await new Promise((resolve) => setImmediate(resolve));
    const during = [queuedTask(), queuedTask()];
    const written = during.map((task) => intake.submit(task));
    await new Promise((resolve) => setImmediate(resolve));
    release();
    expect((await Promise.allSettled(first)).map((outcome) => outcome.status)).toEqual(['rejected', 'fulfilled']);
    await Promise.all(written);
    expect(batches).toEqual([2, 2]);
    for (const task of during) expect(await store.get(task.id)).toMatchObject({ id: task.id, status: 'queued' });
    await queue.close();
  });

  test('a task that cannot be serialised fails alone: the rest of its batch lands, and it gets no job', async () => {
    const { store, queue, intake } = await setup();
    // Nesting deep enough to overflow JSON.stringify's stack (the api refuses such input earlier;
    // the store must still never let one task's failure reach its batch).
    const metadata: Record<string, unknown> = {};
    let innermost = metadata;
    for (let level = 0; level < 20_000; level += 1) {
      const next: Record<string, unknown> = {};
      innermost.a = next;
      innermost = next;
    }
    const poisoned = queuedTask({ metadata });
    const neighbours = Array.from({ length: 5 }, () => queuedTask());
    const outcomes = await Promise.allSettled([...neighbours.slice(0, 2), poisoned, ...neighbours.slice(2)].map((task) => intake.submit(task)));
    expect(outcomes[2]).toMatchObject({ status: 'rejected', reason: expect.any(TaskNotStorableError) });
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(5);
    expect(await store.get(poisoned.id)).toBeUndefined();
    expect(await queue.queue.getJob(poisoned.id)).toBeUndefined();
    for (const task of neighbours) {
      expect(await store.get(task.id)).toMatchObject({ status: 'queued' });
      expect(await queue.queue.getJob(task.id)).toBeDefined();
    }
    await queue.close();
  });
});

test('a job written with its record is the job BullMQ writes itself: same hash, same place in the queue, and a Worker runs it', async () => {
  const prefix = `test-intake-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  const queue = new TaskQueue(redis, { prefix, attempts: 3 });
  const intake = new TaskIntake(new TaskStore(redis, prefix, { retentionSeconds: 60 }), queue);
  expect(await intake.jobsWithRecords()).toBe(true);
  // The reference: the same jobs added by BullMQ's addBulk, on a prefix of their own.
  const reference = `test-intake-${randomUUID().slice(0, 8)}`;
  prefixes.push(reference);
  const referenceQueue = new TaskQueue(redis, { prefix: reference, attempts: 3 });
  const tasks = [queuedTask({ priority: 'low' }), queuedTask({ priority: 'high' }), queuedTask({ priority: 'normal' })];
  for (const task of tasks) {
    await intake.submit(task);
    await referenceQueue.enqueueAll([{ taskId: task.id, priority: task.priority }]);
  }
  for (const task of tasks) {
    const ours = await redis.hgetall(`${prefix}:tasks:${task.id}`);
    const theirs = await redis.hgetall(`${reference}:tasks:${task.id}`);
    expect(Number(ours.timestamp)).toBeGreaterThan(Date.now() - 60_000);
    const comparable = ({ timestamp, opts, ...rest }: Record<string, string>) => ({ ...rest, opts: JSON.parse(opts ?? 'null') as unknown });
    expect(comparable(ours)).toEqual(comparable(theirs));
    expect(await redis.zscore(`${prefix}:tasks:prioritized`, task.id)).toBe(await redis.zscore(`${reference}:tasks:prioritized`, task.id));
  }
  expect(await redis.zrange(`${prefix}:tasks:marker`, '0', '-1')).toEqual(await redis.zrange(`${reference}:tasks:marker`, '0', '-1'));
  expect(await redis.xlen(`${prefix}:tasks:events`)).toBe(await redis.xlen(`${reference}:tasks:events`));
  // A BullMQ worker takes them in priority order.
  const taken: string[] = [];
  const connection = createRedis(REDIS_URL, 'bullmq', { connectionName: 'test-intake-worker' });
  const worker = new Worker<TaskJobData>(
    TASK_QUEUE_NAME,
    async (job) => {
      taken.push(job.data.taskId);
    },
    { connection, prefix },
  );
  try {
    await waitFor(() => taken.length === tasks.length);
    expect(taken).toEqual([tasks[1]!.id, tasks[2]!.id, tasks[0]!.id]);
  } finally {
    await worker.close();
    connection.disconnect();
    await queue.close();
    await referenceQueue.close();
  }
});

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
