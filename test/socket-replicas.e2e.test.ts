/**
 * Socket.io across api replicas (several api pods behind one Service or ingress): two api
 * processes on one Redis. Each process follows a task's events from Redis itself, so a client
 * connected to replica A gets every event of a task created through replica B, with no
 * Socket.io Redis adapter (no process emits to another's sockets). What does need care is the
 * transport: a long-polling session lives in the process that opened it, so its polls must all
 * reach that replica (sticky sessions); a websocket is one connection and needs nothing.
 */
import { io as connectSocket, type Socket } from 'socket.io-client';
import type { TaskEvent } from '@mageagent/core';
import { startService, stopService, type ServiceProcess } from '../apps/launcher/src/stack';
import { createTask, requestJson } from './support/http';
import { collectOutput, REDIS_URL, startTestStack, type TestStack } from './support/stack';
import { collectTaskUpdates } from './support/socket';

let service: TestStack;
let replicaB: ServiceProcess;
let apiA: string;
let apiB: string;

beforeAll(async () => {
  service = await startTestStack({ workers: 1 });
  apiA = service.api;
  // A second api process with the first one's Redis, prefix and models: another replica.
  replicaB = await startService(
    'api',
    'api-b',
    {
      ...process.env,
      LOG_LEVEL: 'warn',
      REDIS_URL,
      REDIS_PREFIX: service.prefix,
      SIM_PORT: String(service.stack.sim?.port),
      PORT: '0',
    },
    collectOutput(service.output),
  );
  apiB = `http://127.0.0.1:${replicaB.port}`;
}, 60_000);

afterAll(async () => {
  if (replicaB) await stopService(replicaB);
  await service?.stop();
}, 30_000);

async function connected(url: string): Promise<Socket> {
  const socket = connectSocket(url, { transports: ['websocket'], forceNew: true, reconnection: false });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  return socket;
}

test('a websocket client on replica A follows a task created through replica B and receives every task-update', async () => {
  expect(replicaB.port).not.toBe(service.stack.api.port);
  const socket = await connected(apiA);
  try {
    // Slow enough (directives are not sped up) that most events happen after the subscription:
    // replica A forwards them live from Redis, not only from the stored log.
    const id = await createTask(apiB, { prompt: 'across replicas [[sim: ttft=500; tokens=20; tps=40]]', pattern: 'primary' });
    const { received, done } = collectTaskUpdates(socket);
    const ack = await socket.timeout(5000).emitWithAck('subscribe-task', { taskId: id });
    expect(ack.task).toMatchObject({ id, pattern: 'primary' });
    expect(['queued', 'processing']).toContain(ack.task.status);
    await done;
    // Everything, in order, exactly once: the task's whole event log as replica B serves it.
    const log = (await requestJson<{ events: TaskEvent[] }>(`${apiB}/tasks/${id}/events`)).body.events;
    expect(log.filter((event) => event.type === 'delta').length).toBeGreaterThan(0);
    expect(received).toEqual(log);
  } finally {
    socket.disconnect();
  }
});

test('a long-polling session exists only on the replica that opened it: polling needs sticky sessions, websockets do not', async () => {
  // Engine.IO's handshake over HTTP long-polling (what socket.io-client does first by default).
  const handshake = await fetch(`${apiA}/socket.io/?EIO=4&transport=polling`);
  expect(handshake.status).toBe(200);
  const body = await handshake.text();
  expect(body.startsWith('0')).toBe(true); // the "open" packet
  const { sid } = JSON.parse(body.slice(1)) as { sid: string };
  expect(sid).toEqual(expect.any(String));

  // The next poll, routed to the other replica (a load balancer without affinity), is refused...
  const elsewhere = await fetch(`${apiB}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`);
  expect(elsewhere.status).toBe(400);
  expect(await elsewhere.json()).toEqual({ code: 1, message: 'Session ID unknown' });

  // ...while the replica that holds the session accepts it (the Socket.io "connect" packet).
  const connect = await fetch(`${apiA}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(sid)}`, { method: 'POST', body: '40' });
  expect(connect.status).toBe(200);
  expect(await connect.text()).toBe('ok');

  // A websocket needs no affinity: it is one connection, opened on whichever replica it reaches.
  for (const url of [apiA, apiB]) {
    const socket = await connected(url);
    expect(socket.connected).toBe(true);
    socket.disconnect();
  }
});
