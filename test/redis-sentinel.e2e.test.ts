/**
 * The spine behind Redis Sentinel: a master, a replica and a Sentinel started locally; simulator,
 * api and a worker as real processes with REDIS_SENTINELS (no REDIS_URL). Then the master is
 * killed: the Sentinel promotes the replica, and the services find the new master by asking the
 * Sentinel again, without a restart.
 *
 * Skipped (with the reason printed) only where redis-server or redis-cli is missing.
 */
import { randomUUID } from 'node:crypto';
import type { TaskRecord } from '@mageagent/core';
import type { Stack } from '../apps/launcher/src/stack';
import { createTask, eventually, postJson, requestJson, waitForTask } from './support/http';
import { RedisSentinelSetup, sentinelBinaries } from './support/redis-sentinel';
import { startTestStack } from './support/stack';

const missing = sentinelBinaries();
if (typeof missing === 'string') console.warn(`redis-sentinel e2e skipped: ${missing}`);
const describeIfRedis = typeof missing === 'string' ? describe.skip : describe;

describeIfRedis('the spine behind Redis Sentinel', () => {
  let setup: RedisSentinelSetup;
  let stack: Stack;
  let api: string;
  let output: string[] = [];

  beforeAll(async () => {
    setup = await RedisSentinelSetup.start();
    const started = await startTestStack({
      redisUrl: undefined,
      prefix: `test-sentinel-${randomUUID().slice(0, 8)}`,
      workers: 1,
      workerConcurrency: 2,
      env: {
        REDIS_SENTINELS: setup.sentinelsEnv,
        REDIS_SENTINEL_NAME: setup.name,
      },
    });
    ({ stack, api } = started);
    output = started.output;
  }, 120_000);

  afterAll(async () => {
    await stack?.stop();
    await setup?.close();
  }, 60_000);

  test('tasks run against the master the Sentinel names', async () => {
    const task = await waitForTask(api, await createTask(api, { prompt: 'hello sentinel', pattern: 'primary' }));
    expect(task.status).toBe('completed');
    // The task is on the master the Sentinel named (and replicated), not on some other Redis.
    expect(await setup.currentMasterPort()).toBe(setup.masterPort);
    expect(await setup.cli(setup.masterPort, 'EXISTS', `${stack.options.prefix}:task:{${task.id}}`)).toBe('1');
  });

  test('a manual failover (the old master demoted, still up): writes follow the new master', async () => {
    const before = await waitForTask(api, await createTask(api, { prompt: 'before the switch', pattern: 'primary' }));
    await eventually(
      async () => ((await setup.cli(setup.replicaPort, 'HGET', `${stack.options.prefix}:task:{${before.id}}`, 'status')) === 'completed' ? true : undefined),
      10_000,
      'the replica to have the finished task',
    );
    expect(await setup.cli(setup.sentinelPort, 'SENTINEL', 'FAILOVER', setup.name)).toBe('OK');
    await eventually(async () => ((await setup.currentMasterPort()) === setup.replicaPort ? true : undefined), 30_000, 'the Sentinel to switch masters');
    // Until the old master is told to replicate, it still takes writes, which its resync then drops
    // (Sentinel's failover is asynchronous: that is Redis's window, not the client's). From then on,
    // connections still on it hear READONLY and reconnect to the master the Sentinel names.
    await setup.waitReplicating(setup.masterPort);
    const after = await acceptedTask('after the switch');
    expect((await waitForTask(api, after, 30_000)).status).toBe('completed');
    expect(await setup.cli(setup.replicaPort, 'EXISTS', `${stack.options.prefix}:task:{${after}}`)).toBe('1');
    expect((await requestJson<TaskRecord>(`${api}/tasks/${before.id}`)).body).toMatchObject({ status: 'completed' });
  }, 90_000);

  test('after the master is killed and the replica promoted, the same processes go on: old tasks readable, new ones run', async () => {
    const master = await setup.currentMasterPort();
    const replica = master === setup.masterPort ? setup.replicaPort : setup.masterPort;
    // Until the demoted node replicates again, a failover would have nowhere to go.
    await setup.waitReplicating(replica);
    const before = await waitForTask(api, await createTask(api, { prompt: 'before the failover', pattern: 'primary' }));
    expect(before.status).toBe('completed');
    // Replication is asynchronous: wait until the replica has the finished task, as a test of
    // failover (not of lost writes), then kill the master outright. (WAIT from another connection
    // would not do: it waits only for that connection's own writes.)
    await eventually(
      async () => ((await setup.cli(replica, 'HGET', `${stack.options.prefix}:task:{${before.id}}`, 'status')) === 'completed' ? true : undefined),
      10_000,
      'the replica to have the finished task',
    );
    await setup.kill(master);
    const killedAt = Date.now();

    await eventually(async () => ((await setup.currentMasterPort()) === replica ? true : undefined), 30_000, 'the Sentinel to promote the replica');
    const promotedMs = Date.now() - killedAt;
    // The api answers 503 until its connection has found the new master; then it creates again.
    const after = await acceptedTask('after the failover');
    // For docs/operate/redis.md: down-after-milliseconds is 1000 here.
    console.log(`sentinel failover: promoted after ${promotedMs} ms, api accepting tasks again ${Date.now() - killedAt} ms after the kill`);
    expect((await waitForTask(api, after, 30_000)).status).toBe('completed');
    expect((await requestJson<TaskRecord>(`${api}/tasks/${before.id}`)).body).toMatchObject({ id: before.id, status: 'completed' });
    expect((await requestJson(`${api}/readyz`)).status).toBe(200);
  }, 90_000);

  /** POST /tasks until it is accepted (503 while the api's connection looks for the new master). */
  async function acceptedTask(prompt: string): Promise<string> {
    let last: unknown;
    const statuses = new Set<number>();
    const id = await eventually(
      async () => {
        const response = await postJson<{ id: string }>(`${api}/tasks`, { prompt, pattern: 'primary' });
        last = { status: response.status, body: response.body };
        statuses.add(response.status);
        return response.status === 202 ? response.body.id : undefined;
      },
      30_000,
      'the api to accept tasks on the new master',
    ).catch((error: Error) => {
      throw new Error(`${error.message}; last answer ${JSON.stringify(last)}\n${output.slice(-30).join('\n')}`);
    });
    // While there is no master the api says so: 503 (retry), never a 500.
    expect([...statuses].filter((status) => status !== 202 && status !== 503)).toEqual([]);
    return id;
  }
});
