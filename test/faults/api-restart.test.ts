/**
 * The api stopped (SIGTERM, as a deploy does) and killed (SIGKILL) under load, under the
 * supervised launcher, which starts it again on the same port. A stopping api stops accepting,
 * ends its SSE streams with a `reconnect` event, tells sockets `server-shutdown`, and exits
 * within its grace; clients reconnect (Last-Event-ID, `after`) and lose nothing. Tasks run on:
 * they live on the workers and in Redis, not in the api.
 */
import type { SupervisionEvent } from '../../apps/launcher/src/supervisor';
import { quickSupervision, replacementOf } from '../support/supervision';
import { expectNothingLost, printTable, runUnderLoad, startFaultStack, standardRows, type FaultStack } from './harness';

let fault: FaultStack;
const supervision: SupervisionEvent[] = [];
const GRACE_MS = 3000;

beforeAll(async () => {
  fault = await startFaultStack({ workers: 2, workerConcurrency: 4, supervise: quickSupervision(supervision), env: { SHUTDOWN_GRACE_MS: String(GRACE_MS) } });
}, 60_000);

afterAll(async () => {
  await fault?.stop();
}, 60_000);

for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
  test(`api ${signal === 'SIGTERM' ? 'stopped (SIGTERM)' : 'killed (SIGKILL)'} under load: clients reconnect and lose nothing; tasks run on`, async () => {
    let exitedAfterMs = Number.NaN;
    const run = await runUnderLoad(fault, {
      // Long enough that streams are open when the api goes.
      body: { prompt: 'outlive the api [[sim: tokens=60; tps=40; ttft=60]]', pattern: 'primary' },
      disrupt: async () => {
        const api = fault.stack.api;
        const sent = Date.now();
        const exited = api.exited.then(() => (exitedAfterMs = Date.now() - sent));
        api.child.kill(signal);
        await exited;
        await replacementOf(api, () => fault.stack.api);
      },
    });
    const hints = [...run.sse, ...run.sockets].reduce((total, record) => total + record.hints, 0);
    const reconnects = [...run.sse, ...run.sockets].reduce((total, record) => total + record.reconnects, 0);
    printTable(`api ${signal} under load, supervised (restarted on the same port), SHUTDOWN_GRACE_MS ${GRACE_MS}`, [
      ...standardRows(run),
      { metric: 'api exited after the signal', value: `${Math.round(exitedAfterMs)} ms`, target: signal === 'SIGTERM' ? `≤ ${GRACE_MS} ms` : '' },
      { metric: 'reconnect hints received (SSE `reconnect`, socket `server-shutdown`)', value: hints, target: signal === 'SIGTERM' ? '> 0' : '' },
      { metric: 'client reconnects', value: reconnects },
    ]);
    expectNothingLost(run);
    expect(reconnects).toBeGreaterThan(0);
    if (signal === 'SIGTERM') {
      expect(exitedAfterMs).toBeLessThanOrEqual(GRACE_MS + 500);
      expect(hints).toBeGreaterThan(0);
    }
  }, 180_000);
}
