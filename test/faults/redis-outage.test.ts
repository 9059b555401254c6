/**
 * Faults of Redis itself, under load: killed and started again on the same port, and frozen
 * (SIGSTOP: connections open, nothing answers, as with a hung server or a network partition).
 *
 * While it is away, api routes answer 503 with Retry-After within the bound (never hang, never
 * 500); workers and the api stay up; open SSE streams and socket subscriptions survive; when
 * Redis is back everything resumes by itself: every accepted task completes, and every client
 * has every event exactly once.
 */
import { expectNothingLost, printTable, runUnderLoad, sleep, startFaultStack, standardRows, type FaultStack } from './harness';

let fault: FaultStack;

beforeAll(async () => {
  fault = await startFaultStack({ workers: 2, workerConcurrency: 4 });
}, 60_000);

afterAll(async () => {
  await fault?.stop();
}, 60_000);

const OUTAGE_MS = 1500;

/** Worker and api processes that died or were replaced since `pids` was taken. */
function processesGone(pids: Array<number | undefined>): number {
  const now = [fault.stack.api, ...fault.stack.workers];
  return now.filter((service, index) => service.child.pid !== pids[index] || service.child.exitCode !== null).length;
}

test('Redis killed and restarted under load: nothing accepted is lost, no event is lost or repeated, nothing hangs', async () => {
  const pids = [fault.stack.api, ...fault.stack.workers].map((service) => service.child.pid);
  const run = await runUnderLoad(fault, {
    disrupt: async () => {
      await fault.redis.stop('SIGKILL');
      await sleep(OUTAGE_MS);
      await fault.redis.start();
    },
  });
  printTable(`Redis killed for ${OUTAGE_MS} ms under load (restarted on the same port, AOF)`, [
    ...standardRows(run),
    { metric: 'worker or api processes that died', value: processesGone(pids), target: '0' },
  ]);
  expectNothingLost(run);
  expect(run.log.unavailable.length).toBeGreaterThan(0);
  expect(run.log.unavailable.every((exchange) => (exchange.body as { error?: { code?: string } }).error?.code === 'UNAVAILABLE')).toBe(true);
  expect(processesGone(pids)).toBe(0);
}, 180_000);

test('Redis frozen (no answers, connections open) under load: 503 within the bound, then everything resumes', async () => {
  const pids = [fault.stack.api, ...fault.stack.workers].map((service) => service.child.pid);
  const run = await runUnderLoad(fault, {
    disrupt: async () => {
      fault.redis.pause();
      await sleep(OUTAGE_MS);
      fault.redis.resume();
    },
  });
  printTable(`Redis frozen (SIGSTOP) for ${OUTAGE_MS} ms under load`, [
    ...standardRows(run),
    { metric: 'worker or api processes that died', value: processesGone(pids), target: '0' },
  ]);
  expectNothingLost(run);
  expect(run.log.unavailable.length).toBeGreaterThan(0);
  expect(processesGone(pids)).toBe(0);
}, 180_000);
