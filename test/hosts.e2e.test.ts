/**
 * GPU host scheduling end to end: simulator, api and 4 worker processes × concurrency 4 on a
 * real Redis; the simulator's per-host accounting is the judge of what reached each "GPU".
 */
import type { TaskRecord } from '@mageagent/core';
import { callsOn, handoffGaps, hostsOf, percentile, simStats, type HostReport } from './support/hosts';
import { createTask, eventually, postJson, waitForTask } from './support/http';
import { startTestStack, type TestStack } from './support/stack';

let service: TestStack;
const HOST = 'sim-mac';

beforeAll(async () => {
  service = await startTestStack({ workers: 4, workerConcurrency: 4 });
}, 60_000);

afterAll(async () => {
  await service?.stop();
}, 30_000);

beforeEach(async () => {
  await postJson(`${service.sim}/sim/reset`, {});
});

/** Resolves once GET /hosts shows `count` calls waiting for the host. */
const waitersReach = (count: number) =>
  eventually(async () => ((await hostsOf(service.api))[0]!.waiters === count ? true : undefined), 5000, `${count} waiters`);

/** When the task's (first) call got the host: its step started, then waited for the lease. */
const grantedAt = (task: TaskRecord) => {
  const step = task.result!.steps[0]!;
  return Date.parse(step.startedAt) + (step.waitMs ?? 0);
};

test('20 mixed tasks from 4 workers × 4 all complete, with never more than one call on the host', async () => {
  const patterns = ['compete', 'validated', 'tools'];
  const ids = await Promise.all(
    Array.from({ length: 20 }, (_, index) =>
      createTask(service.api, { prompt: `mixed task ${index} [[sim: ttft=15]]`, pattern: patterns[index % patterns.length] }),
    ),
  );
  const tasks = await Promise.all(ids.map((id) => waitForTask(service.api, id, 30_000)));
  expect(tasks.map((task) => task.status)).toEqual(Array(20).fill('completed'));

  const stats = await simStats(service.sim);
  expect(stats.maxInFlightByHost[HOST]).toBe(1);
  const steps = tasks.flatMap((task) => task.result!.steps);
  expect(stats.requestsByHost[HOST]).toBe(steps.length);
  // Every step records its lease wait; with 16 tasks at once on one GPU most of them waited.
  for (const step of steps) expect(typeof step.waitMs).toBe('number');
  expect(steps.filter((step) => step.waitMs! > 15).length).toBeGreaterThan(steps.length / 2);
  // The GPU did not sit idle between calls while work waited.
  const gaps = handoffGaps(callsOn(stats, HOST));
  // The p99 < 20 ms target is measured by `npm run bench`; here, with other suites running, only that
  // handoffs are pushed rather than polled.
  expect(percentile(gaps, 50)).toBeLessThan(50);
}, 60_000);

test('a high-priority task queued last gets the host first; each priority is served in arrival order', async () => {
  // The blocker holds the host until it is cancelled, however long queueing the others takes.
  const blocker = await createTask(service.api, { prompt: 'hold the host [[sim: hang]]', priority: 'low' });
  await eventually(async () => ((await hostsOf(service.api))[0]!.leases[0]?.owner === blocker ? true : undefined), 5000, 'the blocker to hold the host');
  const queued: Array<{ id: string; priority: 'low' | 'normal' | 'high' }> = [];
  for (const priority of ['low', 'normal', 'low', 'normal', 'high'] as const) {
    queued.push({ id: await createTask(service.api, { prompt: `queued ${priority} [[sim: ttft=10]]`, priority }), priority });
    await waitersReach(queued.length);
  }
  await postJson(`${service.api}/tasks/${blocker}/cancel`, {});
  const tasks = await Promise.all(queued.map(({ id }) => waitForTask(service.api, id)));
  const order = tasks
    .map((task, index) => ({ label: `${queued[index]!.priority}-${index}`, at: grantedAt(task) }))
    .sort((a, b) => a.at - b.at)
    .map(({ label }) => label);
  expect(order).toEqual(['high-4', 'normal-1', 'normal-3', 'low-0', 'low-2']);
  expect((await waitForTask(service.api, blocker)).status).toBe('cancelled');
});

test('a tools task behind three running compete tasks starts its call before they finish', async () => {
  const competes = await Promise.all([0, 1, 2].map((index) => createTask(service.api, { prompt: `compete ${index} [[sim: ttft=40]]`, pattern: 'compete' })));
  await eventually(async () => ((await hostsOf(service.api))[0]!.waiters >= 3 ? true : undefined), 5000, 'the competes to queue');
  const tools = await waitForTask(service.api, await createTask(service.api, { prompt: 'what time is it [[sim: ttft=5]]', pattern: 'tools' }));
  const finished = await Promise.all(competes.map((id) => waitForTask(service.api, id)));
  expect(tools.status).toBe('completed');
  for (const compete of finished) expect(grantedAt(tools)).toBeLessThan(Date.parse(compete.completedAt!));
});

test('a task cancelled or timed out while waiting for the host leaves the queue at once', async () => {
  const blocker = await createTask(service.api, { prompt: 'hold the host [[sim: ttft=1500]]' });
  await eventually(async () => ((await hostsOf(service.api))[0]!.leases.length === 1 ? true : undefined), 5000, 'the blocker to hold the host');
  const cancelled = await createTask(service.api, { prompt: 'never runs' });
  const timedOut = await createTask(service.api, { prompt: 'never runs either', options: { timeoutMs: 500 } });
  await waitersReach(2);

  const cancelledAt = Date.now();
  await postJson(`${service.api}/tasks/${cancelled}/cancel`, {});
  await waitersReach(1);
  expect(Date.now() - cancelledAt).toBeLessThan(500);
  const failed = await waitForTask(service.api, timedOut);
  expect(failed).toMatchObject({ status: 'failed', error: { code: 'TASK_TIMEOUT' } });
  await waitersReach(0);
  expect(Date.parse(failed.completedAt!) - Date.parse(failed.startedAt!)).toBeLessThan(1000);

  expect((await waitForTask(service.api, blocker)).status).toBe('completed');
  expect((await waitForTask(service.api, cancelled)).status).toBe('cancelled');
  // Only the blocker's call reached the GPU.
  expect((await simStats(service.sim)).requestsByHost[HOST]).toBe(1);
});

test('GET /hosts reports models, memory, leases with their owner, waiters, health and busy fraction', async () => {
  const holder = await createTask(service.api, { prompt: 'hold the host [[sim: ttft=600]]' });
  const report = await eventually(
    async () => {
      const [host] = await hostsOf(service.api);
      return host?.leases.length === 1 ? host : undefined;
    },
    5000,
    'a lease',
  );
  expect(report).toMatchObject<Partial<HostReport>>({
    name: HOST,
    models: {
      primary: 'sim/qwen2.5-72b-instruct-8bit',
      competitor: 'sim/qwen2.5-coder-32b-instruct-4bit',
      validator: 'sim/qwen2.5-coder-7b-instruct-4bit',
      tools: 'sim/hermes-3-llama-3.1-8b-8bit',
    },
    memory: { memoryGB: 128, headroomGB: 16, budgetGB: 112, modelsGB: 109 },
    maxConcurrentGenerations: 1,
    waiters: 0,
  });
  expect(report.leases[0]).toMatchObject({ owner: holder, priority: 'normal', worker: expect.stringMatching(/:\d+$/) });
  expect(report.health).toMatchObject({ status: 'up', intervalMs: 300 });
  // Earlier tests kept the GPU busy for seconds of the last minute.
  expect(report.busyFraction).toBeGreaterThan(0);
  await waitForTask(service.api, holder);
});
