/**
 * The spine on a real Redis Cluster: three `redis-server --cluster-enabled yes` nodes on free
 * loopback ports, joined by `redis-cli --cluster create`; simulator, api and a worker as real
 * processes with REDIS_CLUSTER_NODES and a hash-tagged REDIS_PREFIX. Every key of the service,
 * BullMQ's and the locks' must land in the one slot of the tag, on one node, else the task
 * scripts, MULTI and BullMQ's scripts would fail with CROSSSLOT.
 *
 * Skipped (with the reason printed) only where redis-server or redis-cli is missing.
 */
import { Redis } from 'ioredis';
import type { TaskEvent, TaskRecord } from '@mageagent/core';
import { startTestReceiver, type TestReceiver } from '../packages/webhooks/src/test-receiver';
import { createRedis, deleteKeysWithPrefix } from '@mageagent/tasks';
import { startService, type Stack, stopService } from '../apps/launcher/src/stack';
import { createTask, eventually, postJson, readSse, requestJson, waitForTask } from './support/http';
import { clusterBinaries, RedisCluster } from './support/redis-cluster';
import { startTestStack } from './support/stack';

const PREFIX = '{mageagent-test}';
const missing = clusterBinaries();
if (typeof missing === 'string') console.warn(`redis-cluster e2e skipped: ${missing}`);
const describeIfRedis = typeof missing === 'string' ? describe.skip : describe;

describeIfRedis('the spine on a three-node Redis Cluster', () => {
  let cluster: RedisCluster;
  let stack: Stack;
  let api: string;
  let sim: string;
  let receiver: TestReceiver;
  let output: string[] = [];

  beforeAll(async () => {
    receiver = await startTestReceiver();
    cluster = await RedisCluster.start(3);
    const started = await startTestStack({
      // No REDIS_URL at all: the children find the cluster through REDIS_CLUSTER_NODES.
      redisUrl: undefined,
      prefix: PREFIX,
      workers: 1,
      workerConcurrency: 4,
      env: {
        REDIS_CLUSTER_NODES: cluster.nodesEnv,
        SSE_PING_MS: '200',
        // Webhooks, per-key request quotas and active-task counters: their keys and scripts run on the cluster too.
        WEBHOOK_SECRET: 'the cluster end-to-end master webhook secret, 32+ characters',
        WEBHOOK_ALLOW_PRIVATE: 'true',
        WEBHOOK_BACKOFF_MS: '50',
        QUOTA_REQUESTS_PER_MINUTE: '10000',
        QUOTA_MAX_ACTIVE_TASKS: '100',
      },
    });
    ({ stack, api } = started);
    output = started.output;
    sim = stack.simUrl ?? '';
  }, 120_000);

  afterAll(async () => {
    await stack?.stop();
    await cluster?.close();
    await receiver?.close();
  }, 60_000);

  afterEach(() => {
    // On a failure, what the services printed says why (a CROSSSLOT, a refused config).
    const state = expect.getState();
    if (state.assertionCalls > state.numPassingAsserts && output.length > 0) console.log(output.slice(-40).join('\n'));
  });

  test('readyz: the api reaches the cluster', async () => {
    expect((await requestJson(`${api}/readyz`)).status).toBe(200);
  });

  test('a primary task and a multi-step validated task complete', async () => {
    const primary = await waitForTask(api, await createTask(api, { prompt: 'Explain Redis Cluster slots', pattern: 'primary' }));
    expect(primary).toMatchObject({ status: 'completed', attempt: 1 });
    expect(primary.result?.content.length).toBeGreaterThan(0);

    const validated = await waitForTask(api, await createTask(api, { prompt: 'Write a haiku about hash tags', pattern: 'validated' }));
    expect(validated.status).toBe('completed');
    // generate, validate and tool extraction each ran their role: three scripts' worth of writes per step.
    expect(validated.result?.steps.map((step) => step.role)).toEqual(expect.arrayContaining(['primary', 'validator']));
    expect(validated.result?.steps.length).toBeGreaterThanOrEqual(2);
  });

  test('a client that drops a live SSE stream and resumes with Last-Event-ID gets exactly the missing events', async () => {
    const id = await createTask(api, { prompt: 'a slow one [[sim: tokens=40; tps=40]]', pattern: 'primary' });
    const first = await readSse(`${api}/tasks/${id}/stream`, {}, (events) => events.filter((event) => event.type === 'delta').length >= 3);
    expect(first.closedByServer).toBe(false);
    const lastSeen = first.events[first.events.length - 1]!.seq;
    const second = await readSse(`${api}/tasks/${id}/stream`, { 'last-event-id': String(lastSeen) });
    expect(second.closedByServer).toBe(true);

    const log = (await requestJson<{ events: TaskEvent[] }>(`${api}/tasks/${id}/events`)).body.events;
    expect([...first.events, ...second.events]).toEqual(log);
    expect(log[log.length - 1]).toMatchObject({ type: 'status', status: 'completed' });
  });

  test('cancelling a running task aborts its model call (the cancel channel crosses the cluster)', async () => {
    const stats = async () => (await requestJson(`${sim}/sim/stats`)).body;
    const before = await stats();
    const id = await createTask(api, { prompt: 'hold the GPU [[sim: hang]]', pattern: 'primary' });
    await eventually(async () => ((await stats()).inFlight === before.inFlight + 1 ? true : undefined), 10_000, 'the hang request');
    const cancelled = await postJson(`${api}/tasks/${id}/cancel`, {});
    expect(cancelled.status).toBe(200);
    expect(cancelled.body).toMatchObject({ id, status: 'cancelled', error: { code: 'CANCELLED' } });
    await eventually(async () => ((await stats()).aborted === before.aborted + 1 ? true : undefined), 10_000, 'the simulator to see the abort');
    const events = (await requestJson<{ events: TaskEvent[] }>(`${api}/tasks/${id}/events`)).body.events;
    expect(events.filter((event) => event.type === 'status' && event.status === 'cancelled')).toHaveLength(1);
  });

  test('GET /tasks lists the tasks, newest first, and filters by status', async () => {
    const ids = [await createTask(api, { prompt: 'list one', pattern: 'primary' }), await createTask(api, { prompt: 'list two', pattern: 'primary' })];
    for (const id of ids) await waitForTask(api, id);
    const { status, body } = await requestJson<{ tasks: Array<{ id: string; status: string }> }>(`${api}/tasks?limit=50`);
    expect(status).toBe(200);
    const listed = body.tasks.map((task) => task.id);
    expect(listed.indexOf(ids[1]!)).toBeGreaterThanOrEqual(0);
    expect(listed.indexOf(ids[1]!)).toBeLessThan(listed.indexOf(ids[0]!));
    const cancelled = (await requestJson<{ tasks: Array<{ status: string }> }>(`${api}/tasks?status=cancelled`)).body.tasks;
    expect(cancelled.length).toBeGreaterThanOrEqual(1);
    expect(cancelled.every((task) => task.status === 'cancelled')).toBe(true);
  });

  test('idempotent creation: the same Idempotency-Key answers the same task', async () => {
    const post = () =>
      requestJson<{ id: string }>(`${api}/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'cluster-once' },
        body: JSON.stringify({ prompt: 'only once', pattern: 'primary' }),
      });
    const [first, second] = [await post(), await post()];
    expect(first.status).toBe(202);
    expect(second.body.id).toBe(first.body.id);
  });

  test('a task with a webhook is delivered: outbox script, dispatcher and delivery queue on the cluster', async () => {
    const taskId = await createTask(api, { prompt: 'tell me when done', pattern: 'primary', webhook: { url: `${receiver.url}/done` } });
    expect((await waitForTask(api, taskId)).status).toBe('completed');
    await eventually(async () => receiver.received.find((received) => received.headers['webhook-id'] === `msg_${taskId}`), 15_000, 'the webhook');
    const task = await eventually(
      async () => {
        const record = (await requestJson<TaskRecord>(`${api}/tasks/${taskId}`)).body;
        return record.webhook && record.webhook.deliveries.length > 0 ? record : undefined;
      },
      10_000,
      'the delivery recorded on the task',
    );
    expect(task.webhook?.deliveries).toEqual([expect.objectContaining({ attempt: 1, status: 204, ok: true })]);
  });

  test('GET /queue/stats counts the queue on the cluster; /metrics answers', async () => {
    const { status, body } = await requestJson<Record<string, number>>(`${api}/queue/stats`);
    expect(status).toBe(200);
    expect(body.completed).toBeGreaterThanOrEqual(1);
    expect(body.backlog).toBe(body.waiting! + body.prioritized! + body.active!);
    expect((await requestJson(`${api}/metrics`)).status).toBe(200);
  });

  test('GET /hosts reads the lease and health keys of every host in one go', async () => {
    const { status, body } = await requestJson<{ hosts: Array<{ name: string; health?: unknown }> }>(`${api}/hosts`);
    expect(status).toBe(200);
    expect(body.hosts.length).toBeGreaterThan(0);
  });

  /** Every key of every node (SCAN per node: it never crosses nodes). The cluster is this suite's alone. */
  async function keysPerNode(): Promise<Map<number, string[]>> {
    const keysByNode = new Map<number, string[]>();
    for (const port of cluster.ports) {
      const node = new Redis({ host: '127.0.0.1', port });
      try {
        const keys: string[] = [];
        let cursor = '0';
        do {
          const [next, found] = await node.scan(cursor, 'COUNT', 1000);
          cursor = next;
          keys.push(...found);
        } while (cursor !== '0');
        keysByNode.set(port, keys);
      } finally {
        node.disconnect();
      }
    }
    return keysByNode;
  }

  test('every key written (tasks, events, tenants, BullMQ, host leases, locks) is in the one slot of the hash tag, on one node', async () => {
    const slot = Number(await cluster.cli(cluster.ports[0]!, 'CLUSTER', 'KEYSLOT', PREFIX));
    const keysByNode = await keysPerNode();
    const nonEmpty = [...keysByNode.entries()].filter(([, keys]) => keys.length > 0);
    expect(nonEmpty).toHaveLength(1);
    const [port, keys] = nonEmpty[0]!;
    // The kinds of key the spine writes are all there, so the check covers each of them.
    for (const kind of [':task:{', ':tenant:{', ':tasks:', ':host:{', ':webhooks:', ':rate:', ':idempotency:{'])
      expect(keys.some((key) => key.includes(kind))).toBe(true);
    expect(keys.every((key) => key.startsWith(PREFIX) || key.startsWith(`mutex:${PREFIX}`))).toBe(true);
    const slots = new Set(await Promise.all(keys.map(async (key) => Number(await cluster.cli(port, 'CLUSTER', 'KEYSLOT', key)))));
    expect([...slots]).toEqual([slot]);
    // And that node is the slot's owner (a node that does not serve a slot counts no keys in it).
    expect(Number(await cluster.cli(port, 'CLUSTER', 'COUNTKEYSINSLOT', String(slot)))).toBeGreaterThan(0);
  }, 60_000);

  test('a process given the cluster without a hash tag in REDIS_PREFIX refuses to start, naming REDIS_PREFIX', async () => {
    const lines: string[] = [];
    const env: NodeJS.ProcessEnv = { ...process.env, REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_PREFIX: 'mageagent-test', PORT: '0', LOG_LEVEL: 'warn' };
    delete env.REDIS_URL;
    const started = startService('worker', 'bad-worker', env, (_name, line) => lines.push(line), { readyTimeoutMs: 30_000 });
    await expect(started).rejects.toThrow();
    await started.then(stopService, () => undefined);
    expect(lines.join('\n')).toMatch(/REDIS_PREFIX "mageagent-test" has no hash tag/);
  }, 40_000);

  test('once the services stop, deleteKeysWithPrefix on a Cluster client (SCAN on every master) removes every key', async () => {
    await stack.stop();
    expect([...(await keysPerNode()).values()].flat().length).toBeGreaterThan(0);
    const admin = createRedis({ kind: 'cluster', nodes: cluster.ports.map((port) => ({ host: '127.0.0.1', port })) }, 'worker');
    try {
      await deleteKeysWithPrefix(admin, PREFIX);
      await deleteKeysWithPrefix(admin, `mutex:${PREFIX}`);
    } finally {
      admin.disconnect();
    }
    expect([...(await keysPerNode()).values()].flat()).toEqual([]);
  });
});
