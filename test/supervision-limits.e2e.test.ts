/**
 * The limits of supervision: a service that cannot start again trips the crash-loop limit and
 * the whole stack stops; stop() cancels restarts, pending or under way, and leaves no process.
 */
import { copyFileSync, mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SupervisionEvent } from '../apps/launcher/src/supervisor';
import { eventually } from './support/http';
import { childrenOf } from './support/processes';
import { startTestStack } from './support/stack';
import { hasExited, quickSupervision } from './support/supervision';

/** Worker processes this test process started and that still run. */
const workerProcesses = () => childrenOf(process.pid).filter((child) => child.command.includes('apps/worker/src/main.ts'));

test('a worker that cannot start again trips the crash-loop limit, and the whole stack stops', async () => {
  const directory = mkdtempSync(path.join(os.tmpdir(), 'crash-loop-'));
  const modelsConfig = path.join(directory, 'models.yaml');
  copyFileSync(path.resolve(__dirname, '../config/models.sim.yaml'), modelsConfig);
  const events: SupervisionEvent[] = [];
  const service = await startTestStack({ workers: 1, simulatedModelsConfig: modelsConfig, supervise: quickSupervision(events, { maxRestarts: 2 }) });
  try {
    // Every service read the config at start-up; a worker started from now on finds none and exits with code 1.
    unlinkSync(modelsConfig);
    service.stack.workers[0]!.child.kill('SIGKILL');

    const crashLoop = await eventually(async () => events.find((event) => event.type === 'crash-loop'), 60_000, 'a crash loop');
    expect(crashLoop).toEqual({ type: 'crash-loop', service: 'worker-1', exit: 1, beforeReady: true, restartsInWindow: 2, windowMs: 60_000 });
    expect(events.map((event) => `${event.type} ${event.service}`)).toEqual(['restarting worker-1', 'restarting worker-1', 'crash-loop worker-1']);
    expect(events[1]).toMatchObject({ exit: 1, beforeReady: true, restart: 2 });
    // The stack stops itself; stop() answers the same stop.
    await service.stack.stop();
    for (const stopped of [service.stack.api, service.stack.sim!, ...service.stack.workers]) expect(hasExited(stopped)).toBe(true);
    expect(workerProcesses()).toEqual([]);
  } finally {
    await service.stop();
    rmSync(directory, { recursive: true, force: true });
  }
}, 90_000);

test('stop() cancels a pending restart, and what it stops is not restarted', async () => {
  const events: SupervisionEvent[] = [];
  const restartDelayMs = 1000;
  const service = await startTestStack({ workers: 1, supervise: quickSupervision(events, { backoffMs: restartDelayMs, backoffMaxMs: restartDelayMs }) });
  const killed = service.stack.workers[0]!;
  killed.child.kill('SIGKILL');
  await eventually(async () => events.find((event) => event.type === 'restarting'), 10_000, 'the restart to be scheduled');
  const stoppedAt = Date.now();
  await service.stop();

  expect(events.map((event) => `${event.type} ${event.service}`)).toEqual(['restarting worker-1']);
  expect(service.stack.workers).toEqual([killed]);
  // Proving that nothing starts needs waiting past the moment it would have (at most 1.2 s after the kill).
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, stoppedAt + restartDelayMs * 1.5 - Date.now())));
  expect(workerProcesses()).toEqual([]);
  expect(events).toHaveLength(1);
}, 60_000);

test('stop() during a restart under way kills the half-started process', async () => {
  const events: SupervisionEvent[] = [];
  const service = await startTestStack({ workers: 1, supervise: quickSupervision(events, { backoffMs: 0 }) });
  const killed = service.stack.workers[0]!;
  killed.child.kill('SIGKILL');
  // The new worker process exists but is not ready yet (it is not in `workers`).
  await eventually(
    async () => (workerProcesses().some((child) => child.pid !== killed.child.pid) && service.stack.workers[0] === killed) || undefined,
    10_000,
    'a new worker process to be starting',
  );
  await service.stop();

  expect(workerProcesses()).toEqual([]);
  expect(events.filter((event) => event.type !== 'restarting')).toEqual([]);
}, 60_000);
