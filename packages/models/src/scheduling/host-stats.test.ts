import { parseModelsConfig } from '../config';
import { HostStatsReader } from './host-stats';
import { SchedulingTestBed, sleep, until } from './test-support';

const bed = new SchedulingTestBed();
afterAll(() => bed.close());

test('GET /hosts data: config, leases with their owners, waiters, health and the busy fraction', async () => {
  const [busy, idle] = [bed.newHost(), bed.newHost()];
  const config = parseModelsConfig(
    `
hosts:
  ${busy}: { memoryGB: 128, headroomGB: 16, maxConcurrentGenerations: 1 }
  ${idle}: { memoryGB: 64 }
roles:
  primary: { model: big, endpoint: "http://127.0.0.1:1/v1", host: ${busy}, memoryGB: 77 }
  competitor: { model: coder, endpoint: "http://127.0.0.1:1/v1", host: ${busy}, memoryGB: 18 }
  judge: { model: coder, endpoint: "http://127.0.0.1:1/v1", host: ${busy}, memoryGB: 18 }
  validator: { model: small, endpoint: "http://127.0.0.1:2/v1", host: ${idle}, memoryGB: 5 }
`,
    'inline.yaml',
    {},
  );
  const scheduler = await bed.scheduler({ [busy]: 1, [idle]: 1 });
  const reader = new HostStatsReader(bed.connection(), bed.prefix, config);
  await bed.admin.set(bed.leases.keys.health(busy), JSON.stringify({ status: 'up', checkedAt: new Date().toISOString(), latencyMs: 3, intervalMs: 5000 }));
  await bed.admin.set(bed.leases.keys.health(idle), JSON.stringify({ status: 'up', checkedAt: new Date(Date.now() - 60_000).toISOString(), intervalMs: 5000 }));

  const earlier = await scheduler.acquire(busy, { owner: 'task-0' });
  await sleep(200);
  await earlier.release();
  const held = await scheduler.acquire(busy, { owner: 'task-1', priority: 'high' });
  const waiting = scheduler.acquire(busy, { owner: 'task-2' });
  await until(async () => (await bed.waitersOn(busy)) === 1, 'a waiter');

  const [busyReport, idleReport] = await reader.read();
  expect(busyReport).toMatchObject({
    name: busy,
    models: { primary: 'big', competitor: 'coder', judge: 'coder' },
    memory: { memoryGB: 128, headroomGB: 16, budgetGB: 112, modelsGB: 95 },
    maxConcurrentGenerations: 1,
    leases: [{ owner: 'task-1', worker: 'test:0', priority: 'high', heldMs: expect.any(Number), expiresInMs: expect.any(Number) }],
    waiters: 1,
    health: { status: 'up', latencyMs: 3 },
  });
  expect(busyReport!.health.stale).toBeUndefined();
  expect(busyReport!.leases[0]!.expiresInMs).toBeGreaterThan(1000);
  // 200 ms released plus the time the second lease has been held, over the last minute.
  expect(busyReport!.busyFraction).toBeGreaterThan(0.002);
  expect(busyReport!.busyFraction).toBeLessThan(0.1);
  expect(idleReport).toMatchObject({ name: idle, leases: [], waiters: 0, busyFraction: 0, health: { status: 'up', stale: true } });

  await held.release();
  await (await waiting).release();
  await bed.closeSchedulers();
});
