/**
 * Cancellation across processes: one worker running one task at a time, so a second task
 * stays queued while the first hangs on the model.
 */
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type { TaskEvent } from '@mageagent/core';
import { createTask, eventually, postJson, requestJson, waitForTask } from './support/http';
import { REDIS_URL, startTestStack, type TestStack } from './support/stack';

let service: TestStack;

beforeAll(async () => {
  service = await startTestStack({ workers: 1, workerConcurrency: 1 });
}, 60_000);

afterAll(async () => {
  await service?.stop();
}, 30_000);

const stats = async () => (await requestJson(`${service.sim}/sim/stats`)).body;

test('cancelling a queued task removes its job; cancelling a running one aborts its model request', async () => {
  const before = await stats();
  const running = await createTask(service.api, { prompt: 'hold the GPU [[sim: hang]]' });
  await eventually(async () => ((await stats()).inFlight === before.inFlight + 1 ? true : undefined), 10_000, 'the hang request');
  const queued = await createTask(service.api, { prompt: 'waiting in line' });
  expect((await requestJson(`${service.api}/tasks/${queued}`)).body.status).toBe('queued');

  const cancelledQueued = await postJson(`${service.api}/tasks/${queued}/cancel`, {});
  expect(cancelledQueued.status).toBe(200);
  expect(cancelledQueued.body).toMatchObject({ id: queued, status: 'cancelled', error: { code: 'CANCELLED' } });
  const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue('tasks', { connection, prefix: service.prefix });
  try {
    expect(await queue.getJob(queued)).toBeUndefined();
  } finally {
    await queue.close();
    connection.disconnect();
  }

  const cancelledRunning = await postJson(`${service.api}/tasks/${running}/cancel`, {});
  expect(cancelledRunning.body).toMatchObject({ id: running, status: 'cancelled' });
  await eventually(async () => ((await stats()).aborted === before.aborted + 1 ? true : undefined), 10_000, 'the sim to see the abort');
  expect((await stats()).inFlight).toBe(before.inFlight);

  // The freed worker takes the next task; the cancelled ones never complete later.
  const next = await createTask(service.api, { prompt: 'after the cancels' });
  expect((await waitForTask(service.api, next)).status).toBe('completed');
  for (const id of [queued, running]) {
    const task = (await requestJson(`${service.api}/tasks/${id}`)).body;
    expect(task.status).toBe('cancelled');
    expect(task.result).toBeNull();
    const events = (await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${id}/events`)).body.events;
    expect(events[events.length - 1]).toMatchObject({ type: 'status', status: 'cancelled' });
    expect(events.filter((event) => event.type === 'status' && event.status === 'cancelled')).toHaveLength(1);
  }
});

test('cancelling twice, or cancelling a finished task, answers the task unchanged', async () => {
  const id = await createTask(service.api, { prompt: 'quick' });
  const done = await waitForTask(service.api, id);
  expect(done.status).toBe('completed');
  const cancel = await postJson(`${service.api}/tasks/${id}/cancel`, {});
  expect(cancel.status).toBe(200);
  expect(cancel.body).toMatchObject({ status: 'completed', result: done.result, lastSeq: done.lastSeq });

  const hanging = await createTask(service.api, { prompt: 'hang again [[sim: hang]]' });
  const first = await postJson(`${service.api}/tasks/${hanging}/cancel`, {});
  const second = await postJson(`${service.api}/tasks/${hanging}/cancel`, {});
  expect(first.body.status).toBe('cancelled');
  expect(second.body).toEqual(first.body);
});
