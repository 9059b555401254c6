/**
 * Webhooks through a Redis outage: two "worker processes" (dispatcher and delivery worker each, on
 * connections of their own) against a private redis-server that is killed and restarted while tasks
 * end. Tasks that ended before, during and after the outage all get their webhook, nothing throws
 * and no promise is left rejected unhandled.
 */
import { queuedTask } from '../../packages/tasks/src/test-tasks';
import { startTestDelivery, type TestDelivery } from '../../packages/webhooks/src/test-delivery';
import { startTestReceiver, type TestReceiver } from '../../packages/webhooks/src/test-receiver';
import { eventually } from '../support/http';
import { RedisServer } from '../support/redis-server';
import { printTable, sleep } from './harness';

const OUTAGE_MS = 1500;
const TASKS = 30;

let redis: RedisServer;
let receiver: TestReceiver;
const processes: TestDelivery[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  redis = await RedisServer.start();
  receiver = await startTestReceiver();
}, 30_000);

afterAll(async () => {
  await Promise.all(processes.map((delivery) => delivery.stop()));
  await receiver?.close();
  await redis?.close();
  process.off('unhandledRejection', onUnhandled);
}, 30_000);

test('Redis killed while tasks end: every task still gets its webhook, once it is back', async () => {
  const prefix = 'webhook-outage';
  processes.push(await startTestDelivery({ redisUrl: redis.url, prefix }), await startTestDelivery({ redisUrl: redis.url, prefix }));
  const [{ store }] = processes as [TestDelivery, TestDelivery];
  const tasks = Array.from({ length: TASKS }, () => queuedTask({ webhook: { url: `${receiver.url}/hook`, events: ['cancelled'], deliveries: [] } }));
  await store.createAll(tasks);
  const third = TASKS / 3;

  await Promise.all(tasks.slice(0, third).map((task) => store.cancel(task.id)));
  await redis.stop('SIGKILL');
  // Ended while Redis is away: the writes wait on the worker connection and are applied when it is back.
  const duringOutage = Promise.all(tasks.slice(third, 2 * third).map((task) => store.cancel(task.id)));
  await sleep(OUTAGE_MS);
  const restarted = Date.now();
  await redis.start();
  await duringOutage;
  await Promise.all(tasks.slice(2 * third).map((task) => store.cancel(task.id)));

  const expected = new Set(tasks.map((task) => `msg_${task.id}`));
  await eventually(
    async () => {
      const delivered = new Set(receiver.received.map((request) => request.headers['webhook-id']));
      return [...expected].every((id) => delivered.has(id)) ? true : undefined;
    },
    20_000,
    'every webhook',
  );
  const recoveredMs = Date.now() - restarted;
  // A delivery worker records its attempt after the receiver has answered: a moment later.
  const deliveredCount = async () => {
    const records = await Promise.all(tasks.map((task) => store.require(task.id)));
    return records.filter((task) => task.webhook?.deliveries.some((attempt) => attempt.ok)).length;
  };
  await eventually(async () => ((await deliveredCount()) === TASKS ? true : undefined), 10_000, 'every delivery recorded on its task').catch(() => undefined);
  const delivered = await deliveredCount();
  const duplicates = receiver.received.length - expected.size;

  printTable(`Webhooks: Redis killed for ${OUTAGE_MS} ms while ${TASKS} tasks ended (two dispatchers and delivery workers)`, [
    { metric: 'webhooks delivered', value: `${delivered} of ${TASKS}`, target: `${TASKS} of ${TASKS}` },
    { metric: 'repeated deliveries (same webhook-id)', value: duplicates, target: 'few (at least once)' },
    { metric: 'every webhook delivered, after Redis restarted', value: `${recoveredMs} ms`, target: 'reference' },
    { metric: 'unhandled rejections', value: unhandled.length, target: '0' },
  ]);
  expect(delivered).toBe(TASKS);
  expect(unhandled).toEqual([]);
}, 60_000);
