/**
 * Fault: a worker is killed (SIGKILL) while it streams a task, under the supervised launcher,
 * once beside another worker and once as the only worker. The launcher starts it again; BullMQ's
 * stalled-job check hands its tasks on (after the job lock lapses); each task restarts with
 * `attempt` + 1, says so in its events, and completes. Nothing accepted is lost, and clients
 * see every event once.
 */
import type { SupervisionEvent } from '../../apps/launcher/src/supervisor';
import { quickSupervision } from '../support/supervision';
import { expectNothingLost, printTable, replaceWorker, runUnderLoad, startFaultStack, standardRows, workerStreaming, type FaultStack } from './harness';

/** A dead worker's job is taken over about a lock duration after its last renewal. */
const CRASH_ENV = { JOB_LOCK_MS: '2000', HOST_LEASE_TTL_MS: '2000' };

async function killMidStream(fault: FaultStack, accepted: readonly string[]): Promise<{ taskId: string }> {
  const victim = await workerStreaming(fault, accepted);
  const process = fault.stack.workers.find((worker) => worker.child.pid === victim.pid);
  if (!process) throw new Error('the streaming worker is gone');
  await replaceWorker(fault, process.name, 'SIGKILL');
  return { taskId: victim.taskId };
}

for (const workers of [2, 1]) {
  describe(`${workers === 1 ? 'the only worker' : 'one of two workers'} killed mid-stream`, () => {
    let fault: FaultStack;
    const supervision: SupervisionEvent[] = [];

    beforeAll(async () => {
      fault = await startFaultStack({ workers, workerConcurrency: 4, supervise: quickSupervision(supervision), env: CRASH_ENV });
    }, 60_000);

    afterAll(async () => {
      await fault?.stop();
    }, 60_000);

    test('the launcher restarts it; its tasks restart elsewhere (or on it) and complete; nothing is lost', async () => {
      let interrupted: string | undefined;
      const run = await runUnderLoad(fault, {
        // Two seconds of streaming per task: long enough that the task found streaming is still streaming when the kill lands, on a loaded machine too.
        body: { prompt: 'crash me [[sim: tokens=80; tps=40; ttft=60]]', pattern: 'primary' },
        disrupt: async (accepted) => {
          interrupted = (await killMidStream(fault, accepted)).taskId;
        },
      });
      const restarted = interrupted === undefined ? undefined : run.finished.get(interrupted);
      const restarts = supervision.filter((event) => event.type === 'restarted');
      printTable(`Worker SIGKILLed mid-stream (${workers === 1 ? 'the only worker' : 'one of two'}), supervised launcher, JOB_LOCK_MS 2000`, [
        ...standardRows(run),
        {
          metric: 'the interrupted task',
          value: `${restarted?.status ?? 'not finished'}, attempt ${restarted?.attempt ?? '?'}`,
          target: 'completed, attempt 2',
        },
        { metric: 'worker restarts by the launcher', value: restarts.length, target: '1' },
        {
          metric: 'interrupted task: created → completed',
          value: restarted?.completedAt ? `${Date.parse(restarted.completedAt) - Date.parse(restarted.createdAt)} ms` : '?',
        },
      ]);
      expectNothingLost(run);
      expect(restarted).toMatchObject({ status: 'completed', attempt: 2 });
      expect(restarts).toHaveLength(1);
      // The restart says so, naming another worker process than the one that died.
      const statuses = await fetch(`${fault.api}/tasks/${interrupted}/events`)
        .then((response) => response.json() as Promise<{ events: Array<{ type: string; status?: string; attempt?: number; reason?: string }> }>)
        .then((body) => body.events.filter((event) => event.type === 'status'));
      expect(statuses.map((event) => event.status)).toEqual(['queued', 'processing', 'processing', 'completed']);
      expect(statuses[2]).toMatchObject({ attempt: 2, reason: expect.stringMatching(/restarted/) });
    }, 180_000);
  });
}
