/**
 * A worker SIGKILLed while its call holds the GPU host's lease: the host is free again within
 * the lease TTL, and the task completes on another worker.
 */
import { callsOn, hostsOf, simStats } from './support/hosts';
import { createTask, eventually, postJson, waitForTask } from './support/http';
import { startTestStack, streamingWorker, type TestStack } from './support/stack';

const LEASE_TTL_MS = 1500;
let service: TestStack;

beforeAll(async () => {
  service = await startTestStack({ workers: 2, workerConcurrency: 2, env: { HOST_LEASE_TTL_MS: String(LEASE_TTL_MS) } });
}, 60_000);

afterAll(async () => {
  await service?.stop();
}, 30_000);

test('a worker killed mid-call frees its host within the lease TTL; its task completes elsewhere', async () => {
  await postJson(`${service.sim}/sim/reset`, {});
  const victimTask = await createTask(service.api, { prompt: 'long call [[sim: tokens=60; tps=20]]' });
  const victim = await streamingWorker(service, victimTask);
  victim.process.child.kill('SIGKILL');
  const killedAt = Date.now();

  // The dead worker's lease is still there, with its owner, until it lapses.
  const [host] = await hostsOf(service.api);
  expect(host!.leases).toEqual([expect.objectContaining({ owner: victimTask, worker: victim.name })]);
  // Submit only once the dead process's sockets are closed (the simulator saw its call end): until
  // then Redis may hand BullMQ's wake-up for the new job to the dead worker's blocking connection,
  // and the live worker would only notice the job at its next stalled-jobs check.
  await eventually(async () => ((await simStats(service.sim)).inFlightByHost['sim-mac'] === 0 ? true : undefined), 2000, 'the dead call to end');
  const next = await createTask(service.api, { prompt: 'short call [[sim: ttft=0; tps=0; tokens=5]]' });
  expect((await waitForTask(service.api, next)).status).toBe('completed');

  const restarted = await waitForTask(service.api, victimTask, 30_000);
  expect(restarted).toMatchObject({ status: 'completed', attempt: 2 });
  const stats = await simStats(service.sim);
  expect(stats.maxInFlightByHost['sim-mac']).toBe(1);
  const [killedCall, firstAfter] = callsOn(stats, 'sim-mac');
  expect(killedCall!.aborted).toBe(true);
  // Freed by expiry: at most one TTL after the kill (and not before the last renewal's TTL/3 margin).
  const freedAfter = firstAfter!.startedAt - killedAt;
  expect(freedAfter).toBeGreaterThan(LEASE_TTL_MS / 2);
  expect(freedAfter).toBeLessThan(LEASE_TTL_MS + 300);
}, 60_000);
