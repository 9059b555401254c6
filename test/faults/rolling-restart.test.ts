/**
 * A rolling restart: every worker in turn gets SIGTERM under load (as a deploy does) and the
 * supervised launcher starts its replacement. A stopping worker takes no new jobs, lets its
 * running tasks finish within the grace, and hands back the rest: their records go back to
 * `queued` saying why, their jobs back to the queue without using one of their attempts (the
 * stack runs with TASK_ATTEMPTS=1, so a used attempt would fail the task). Nothing is lost.
 */
import type { TaskEvent } from '@mageagent/core';
import type { SupervisionEvent } from '../../apps/launcher/src/supervisor';
import { quickSupervision } from '../support/supervision';
import { eventLog, expectNothingLost, printTable, replaceWorker, runUnderLoad, startFaultStack, standardRows, type FaultStack } from './harness';

let fault: FaultStack;
const supervision: SupervisionEvent[] = [];

beforeAll(async () => {
  fault = await startFaultStack({
    workers: 3,
    workerConcurrency: 4,
    supervise: quickSupervision(supervision),
    // A short grace so that some tasks outlast it and are handed back; one attempt per task.
    env: { SHUTDOWN_GRACE_MS: '300', TASK_ATTEMPTS: '1' },
  });
}, 60_000);

afterAll(async () => {
  await fault?.stop();
}, 60_000);

test('SIGTERM to every worker in turn under load: tasks finish or are handed back, none is lost, no attempt is used up', async () => {
  const run = await runUnderLoad(fault, {
    durationMs: 8000,
    disruptAfterMs: 1500,
    body: { prompt: 'deploy under me [[sim: tokens=40; tps=40; ttft=60]]', pattern: 'primary' },
    disrupt: async () => {
      for (const name of fault.stack.workers.map((worker) => worker.name)) await replaceWorker(fault, name, 'SIGTERM');
    },
  });
  const logs = await Promise.all(run.accepted.map((id) => eventLog(fault.api, id)));
  const handBacks = logs
    .flat()
    .filter((event): event is Extract<TaskEvent, { type: 'status' }> => event.type === 'status' && event.status === 'queued' && event.reason !== undefined);
  const handedBackTasks = new Set(handBacks.map((event) => event.taskId));
  const restarts = supervision.filter((event) => event.type === 'restarted');
  printTable('Rolling restart: SIGTERM to each of 3 workers in turn, SHUTDOWN_GRACE_MS 300, TASK_ATTEMPTS 1', [
    ...standardRows(run),
    {
      metric: 'tasks handed back to the queue (then completed)',
      value: `${handedBackTasks.size} (${[...handedBackTasks].filter((id) => run.finished.get(id)?.status === 'completed').length} completed)`,
    },
    { metric: 'workers replaced', value: restarts.length, target: '3' },
  ]);
  expectNothingLost(run);
  expect(restarts).toHaveLength(3);
  expect(handBacks.length).toBeGreaterThan(0);
  expect(handBacks.every((event) => /handed back/.test(event.reason ?? ''))).toBe(true);
  // A handed-back task starts again from the queue, saying so.
  const again = logs.flat().filter((event) => event.type === 'status' && event.status === 'processing' && /handed it back/.test(event.reason ?? ''));
  expect(again.length).toBe(handBacks.length);
}, 180_000);
