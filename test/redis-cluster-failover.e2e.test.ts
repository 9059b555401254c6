/**
 * A Redis Cluster losing the master that holds the service's slot: three masters with one
 * replica each; the master of `{mageagent-test}`'s slot is SIGKILLed, its replica takes over
 * (cluster-node-timeout 5 s), and the same api and worker processes go on without a restart.
 *
 * Skipped (with the reason printed) only where redis-server or redis-cli is missing.
 */
import type { TaskRecord } from '@mageagent/core';
import type { Stack } from '../apps/launcher/src/stack';
import { createTask, eventually, postJson, requestJson, waitForTask } from './support/http';
import { clusterBinaries, RedisCluster } from './support/redis-cluster';
import { startTestStack } from './support/stack';

const PREFIX = '{mageagent-test}';
const missing = clusterBinaries();
if (typeof missing === 'string') console.warn(`redis-cluster failover e2e skipped: ${missing}`);
const describeIfRedis = typeof missing === 'string' ? describe.skip : describe;

describeIfRedis('the spine on a Redis Cluster whose master fails', () => {
  let cluster: RedisCluster;
  let stack: Stack;
  let api: string;
  let output: string[] = [];

  beforeAll(async () => {
    cluster = await RedisCluster.start(3, 1);
    const started = await startTestStack({
      redisUrl: undefined,
      prefix: PREFIX,
      workers: 1,
      workerConcurrency: 2,
      env: {
        REDIS_CLUSTER_NODES: cluster.nodesEnv,
      },
    });
    ({ stack, api } = started);
    output = started.output;
  }, 120_000);

  afterAll(async () => {
    await stack?.stop();
    await cluster?.close();
  }, 60_000);

  test('the master of the slot is killed; its replica takes over and the same processes go on', async () => {
    const before = await waitForTask(api, await createTask(api, { prompt: 'before the failover', pattern: 'primary' }));
    expect(before.status).toBe('completed');
    const slot = Number(await cluster.cli(cluster.ports[0]!, 'CLUSTER', 'KEYSLOT', PREFIX));
    const master = await cluster.masterOf(slot, cluster.ports[0]!);
    // The replica must be in sync first (a cluster just created may still be syncing it) and,
    // replication being asynchronous, hold the finished task: this is a test of failover, not of
    // lost writes. (WAIT from another connection would not do: it waits only for that
    // connection's own writes, and a fresh one has none.)
    const replica = await eventually(() => cluster.onlineReplicaOf(master), 30_000, 'the replica to sync');
    await eventually(
      async () => ((await cluster.readOnReplica(replica, 'HGET', `${PREFIX}:task:{${before.id}}`, 'status')) === 'completed' ? true : undefined),
      10_000,
      'the replica to have the finished task',
    );
    await cluster.kill(master);
    const killedAt = Date.now();
    const survivor = cluster.ports.find((port) => port !== master)!;
    await eventually(
      async () => {
        const now = await cluster.masterOf(slot, survivor).catch(() => master);
        return now !== master ? now : undefined;
      },
      30_000,
      'a replica to take the slot over',
    );
    const promotedMs = Date.now() - killedAt;

    let last: unknown;
    const statuses = new Set<number>();
    const after = await eventually(
      async () => {
        const response = await postJson<{ id: string }>(`${api}/tasks`, { prompt: 'after the failover', pattern: 'primary' });
        last = { status: response.status, body: response.body };
        statuses.add(response.status);
        return response.status === 202 ? response.body.id : undefined;
      },
      30_000,
      'the api to accept tasks again',
    ).catch((error: Error) => {
      throw new Error(`${error.message}; last answer ${JSON.stringify(last)}\n${output.slice(-30).join('\n')}`);
    });
    console.log(`cluster failover: slot taken over after ${promotedMs} ms, api accepting tasks again ${Date.now() - killedAt} ms after the kill`);
    // While the slot has no master the api says so: 503 (retry), never a 500.
    expect([...statuses].filter((status) => status !== 202 && status !== 503)).toEqual([]);
    expect((await waitForTask(api, after, 30_000)).status).toBe('completed');
    expect((await requestJson<TaskRecord>(`${api}/tasks/${before.id}`)).body).toMatchObject({ id: before.id, status: 'completed' });
    expect((await requestJson(`${api}/readyz`)).status).toBe(200);
  }, 90_000);
});
