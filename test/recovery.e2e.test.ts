/**
 * A worker killed outright (SIGKILL) mid-task: BullMQ's stalled-job check hands the job to
 * another worker, which restarts the task and says so; the task completes.
 */
import { createTask, waitForTask } from './support/http';
import { eventsOf, startTestStack, streamingWorker, type TestStack } from './support/stack';

let service: TestStack;

beforeAll(async () => {
  // JOB_LOCK_MS 2000 (the test default): a dead worker's job is taken over after about 2-3 s.
  service = await startTestStack({ workers: 2, workerConcurrency: 1 });
}, 60_000);

afterAll(async () => {
  await service?.stop();
}, 30_000);

test('a task whose worker is SIGKILLed mid-call restarts on another worker and completes', async () => {
  const id = await createTask(service.api, { prompt: 'slow enough to be interrupted [[sim: tokens=40; tps=20]]' });
  const victim = await streamingWorker(service, id);
  victim.process.child.kill('SIGKILL');

  const task = await waitForTask(service.api, id, 30_000);
  expect(task.status).toBe('completed');
  expect(task.attempt).toBe(2);
  const statuses = (await eventsOf(service, id)).filter((event) => event.type === 'status');
  expect(statuses.map((event) => event.type === 'status' && event.status)).toEqual(['queued', 'processing', 'processing', 'completed']);
  const restart = statuses[2];
  expect(restart).toMatchObject({ attempt: 2, reason: expect.stringMatching(/restarted/) });
  expect(restart?.type === 'status' && restart.worker).not.toBe(victim.name);
  // The second run's answer is the whole answer, not the interrupted one's tail.
  expect(task.result?.content.trim().split(/\s+/)).toHaveLength(40);
}, 60_000);
