/**
 * The api's per-client bookkeeping, in process (real Redis, real HTTP and Socket.io): clients that
 * leave at once, while their task is being looked up, and subscriptions Redis refuses must leave
 * no stream, listener, timer or subscription behind, and never an unhandled rejection.
 */
import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { io as connectSocket } from 'socket.io-client';
import { createLogger } from '@mageagent/core';
import { deleteKeysWithPrefix, redisReady } from '@mageagent/tasks';
import { queuedTask } from '../../../packages/tasks/src/test-tasks';
import { loadApiEnv } from './env';
import { createApiServer } from './server';
import { createApiServices, type ApiServices } from './services';
import { openStreams } from './sse';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

interface InProcessApi {
  url: string;
  services: ApiServices;
  close(): Promise<void>;
}

async function startApi(redisUrl: string, prefix: string): Promise<InProcessApi> {
  const env = loadApiEnv({ REDIS_URL: redisUrl, REDIS_PREFIX: prefix, LOG_LEVEL: 'error', SSE_PING_MS: '200' });
  const { services, subscriber } = createApiServices(env, createLogger({ service: 'api-test', level: 'error' }));
  await redisReady(services.redis, 5000);
  const { server, io } = createApiServer(services);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    services,
    async close() {
      io.close();
      server.closeAllConnections();
      await new Promise((resolve) => (server as Server).close(resolve));
      await services.queue.close();
      services.redis.disconnect();
      subscriber.disconnect();
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
beforeAll(() => process.on('unhandledRejection', onUnhandled));
afterAll(() => process.off('unhandledRejection', onUnhandled));

describe('clients that leave at once', () => {
  const prefix = `test-cleanup-${randomUUID().slice(0, 8)}`;
  let api: InProcessApi;
  let taskId: string;

  beforeAll(async () => {
    api = await startApi(REDIS_URL, prefix);
    // A task nobody runs (no worker): every follower of it stays until it leaves.
    const task = queuedTask();
    await api.services.store.create(task);
    taskId = task.id;
  });

  afterAll(async () => {
    await api.close();
    const redis = new Redis(REDIS_URL);
    await deleteKeysWithPrefix(redis, prefix);
    redis.disconnect();
  });

  test('SSE clients that disconnect during the lookup, the replay or later leave no stream, listener or subscription', async () => {
    for (let index = 0; index < 120; index += 1) {
      const controller = new AbortController();
      const request = fetch(`${api.url}/tasks/${taskId}/stream`, { signal: controller.signal }).then(
        (response) => response.body?.cancel(),
        () => undefined,
      );
      await sleep(index % 4);
      controller.abort();
      await request;
    }
    await until(() => openStreams.size === 0 && api.services.bus.listenerCount === 0, 'every stream to be let go');
    expect(api.services.bus.subscribedChannels).toBe(0);
    expect(unhandled).toEqual([]);
  });

  test('sockets that subscribe and disconnect at once leave no follow behind', async () => {
    for (let index = 0; index < 60; index += 1) {
      const socket = connectSocket(api.url, { transports: ['websocket'], reconnection: false });
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.emit('subscribe-task', { taskId });
      await sleep(index % 3);
      socket.disconnect();
    }
    await until(() => api.services.bus.listenerCount === 0, 'every socket follow to be let go');
    expect(api.services.bus.subscribedChannels).toBe(0);
    expect(unhandled).toEqual([]);
  });
});

describe('one socket, one task', () => {
  const prefix = `test-once-${randomUUID().slice(0, 8)}`;
  let api: InProcessApi;

  beforeAll(async () => {
    api = await startApi(REDIS_URL, prefix);
  });

  afterAll(async () => {
    await api.close();
    const redis = new Redis(REDIS_URL);
    await deleteKeysWithPrefix(redis, prefix);
    redis.disconnect();
  });

  test('subscribing again on the same connection (a retried subscribe) sends no event twice; unsubscribing first replays', async () => {
    const task = queuedTask();
    await api.services.store.create(task);
    for (let index = 0; index < 5; index += 1) await api.services.store.append(task.id, { type: 'warning', message: `early ${index}` });
    const socket = connectSocket(api.url, { transports: ['websocket'], reconnection: false });
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const received: number[] = [];
    socket.on('task-update', (event: { seq: number }) => received.push(event.seq));
    await socket.emitWithAck('subscribe-task', { taskId: task.id, after: 0 });
    await until(() => received.length === 6, 'the replay');
    // A client whose first ack was slow retries with the resume point it had then.
    await socket.emitWithAck('subscribe-task', { taskId: task.id, after: 0 });
    await api.services.store.append(task.id, { type: 'warning', message: 'late' });
    await until(() => received.includes(7), 'the live event');
    expect(received).toEqual([1, 2, 3, 4, 5, 6, 7]);

    await socket.emitWithAck('unsubscribe-task', { taskId: task.id });
    received.length = 0;
    await socket.emitWithAck('subscribe-task', { taskId: task.id, after: 4 });
    await until(() => received.length === 3, 'the replay after 4');
    expect(received).toEqual([5, 6, 7]);
    socket.disconnect();
  });
});

/**
 * A SUBSCRIBE Redis refuses (an ACL user that may not use the task's channels): the SSE stream ends
 * with a `reconnect` event and is let go, the socket is told `task-unsubscribed`, nothing leaks and
 * nothing is left unhandled; once the user may subscribe, the same task is followed normally.
 */
describe('a subscription Redis refuses', () => {
  const prefix = `test-refused-${randomUUID().slice(0, 8)}`;
  const user = `test-refused-${randomUUID().slice(0, 8)}`;
  const password = randomUUID();
  let admin: Redis;
  let api: InProcessApi;
  let taskId: string;

  beforeAll(async () => {
    admin = new Redis(REDIS_URL);
    await admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '+@all', 'resetchannels', '&nothing-allowed');
    const url = new URL(REDIS_URL);
    url.username = user;
    url.password = password;
    api = await startApi(url.toString(), prefix);
    const task = queuedTask();
    await api.services.store.create(task);
    taskId = task.id;
  });

  afterAll(async () => {
    await api.close();
    await deleteKeysWithPrefix(admin, prefix);
    await admin.call('ACL', 'DELUSER', user);
    admin.disconnect();
  });

  test('SSE: the stream ends with a reconnect event and is let go; after the fix the task streams', async () => {
    const response = await fetch(`${api.url}/tasks/${taskId}/stream`);
    const text = await response.text();
    expect(response.status).toBe(200);
    expect(text).toMatch(/event: reconnect\ndata: \{"taskId":"[^"]+","lastEventId":0,"retryMs":1000/);
    await until(() => openStreams.size === 0 && api.services.bus.listenerCount === 0, 'the stream to be let go');

    await admin.call('ACL', 'SETUSER', user, 'allchannels');
    const controller = new AbortController();
    const again = await fetch(`${api.url}/tasks/${taskId}/stream`, { signal: controller.signal });
    const reader = again.body!.getReader();
    let received = '';
    while (!received.includes('event: status')) received += new TextDecoder().decode((await reader.read()).value);
    expect(api.services.bus.subscribedChannels).toBe(1);
    controller.abort();
    await until(() => api.services.bus.subscribedChannels === 0, 'the second stream to be let go');
    await admin.call('ACL', 'SETUSER', user, 'resetchannels', '&nothing-allowed');
    expect(unhandled).toEqual([]);
  });

  test('Socket.io: the snapshot, then task-unsubscribed; no unhandled rejection, nothing kept', async () => {
    const socket = connectSocket(api.url, { transports: ['websocket'], reconnection: false });
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const unsubscribed = new Promise<unknown>((resolve) => socket.once('task-unsubscribed', resolve));
    const ack = await socket.timeout(3000).emitWithAck('subscribe-task', { taskId });
    expect(ack).toMatchObject({ task: { id: taskId } });
    expect(await unsubscribed).toMatchObject({ taskId, after: 0 });
    await until(() => api.services.bus.listenerCount === 0, 'the follow to be let go');
    // The same socket may subscribe again (nothing stale kept for the task).
    expect(await socket.timeout(3000).emitWithAck('subscribe-task', { taskId })).toMatchObject({ task: { id: taskId } });
    socket.disconnect();
    await sleep(100);
    expect(unhandled).toEqual([]);
  });
});
