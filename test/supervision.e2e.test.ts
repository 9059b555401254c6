/**
 * A supervised stack (what `npm start` runs): a worker, the simulator or the api killed outright
 * comes back under the same name, environment and port, and the service keeps working.
 */
import type { SupervisionEvent } from '../apps/launcher/src/supervisor';
import { createTask, requestJson, waitForTask, eventually } from './support/http';
import { hostsOf } from './support/hosts';
import { startTestStack, type TestStack } from './support/stack';
import { quickSupervision, replacementOf } from './support/supervision';

const events: SupervisionEvent[] = [];
let service: TestStack;

beforeAll(async () => {
  // One worker: a task that completes after its restart was run by the new process.
  service = await startTestStack({ workers: 1, workerConcurrency: 2, supervise: quickSupervision(events) });
}, 60_000);

afterAll(async () => {
  await service?.stop();
  // stop() ended every service; none of that is a crash to restart.
  expect(events.filter((event) => event.type === 'restarting')).toHaveLength(3);
}, 30_000);

async function completes(prompt: string): Promise<void> {
  const task = await waitForTask(service.api, await createTask(service.api, { prompt, pattern: 'primary' }), 30_000);
  expect(task.status).toBe('completed');
}

test('a worker killed outright comes back under its name and runs tasks', async () => {
  const killed = service.stack.workers[0]!;
  killed.child.kill('SIGKILL');

  const next = await replacementOf(killed, () => service.stack.workers[0]);
  expect(next.name).toBe('worker-1');
  expect(service.stack.workers).toHaveLength(1);
  expect(events).toContainEqual(expect.objectContaining({ type: 'restarting', service: 'worker-1', exit: 'SIGKILL', beforeReady: false, restart: 1 }));
  expect(events).toContainEqual({ type: 'restarted', service: 'worker-1', pid: next.child.pid, restart: 1 });
  // Only the new worker can run it, in the stack's Redis prefix against its simulator: it kept its environment.
  await completes('after the worker restart');
}, 60_000);

test('the simulator killed outright comes back on the same port, and tasks complete', async () => {
  const killed = service.stack.sim!;
  killed.child.kill('SIGKILL');

  const next = await replacementOf(killed, () => service.stack.sim);
  const backAt = Date.now();
  expect(next.port).toBe(killed.port);
  expect(service.stack.simUrl).toBe(service.sim);
  // Workers probed the simulator while it was down and fail calls to it fast until a probe finds it up.
  // An up record probed after the restart and older than a quarter probe interval (75 ms here) has
  // been read by every worker.
  await eventually(
    async () =>
      (await hostsOf(service.api)).every(
        ({ health }) =>
          health.status === 'up' &&
          health.checkedAt !== undefined &&
          Date.parse(health.checkedAt) >= backAt &&
          Date.now() - Date.parse(health.checkedAt) >= 150,
      ) || undefined,
    15_000,
    'the hosts to be probed up again',
  );
  await completes('after the simulator restart');
}, 60_000);

test('the api killed outright comes back on the same port', async () => {
  const killed = service.stack.api;
  killed.child.kill('SIGKILL');

  await replacementOf(killed, () => service.stack.api);
  expect(service.stack.apiUrl).toBe(service.api);
  expect((await requestJson(`${service.api}/healthz`)).status).toBe(200);
  await completes('after the api restart');
}, 60_000);
