/**
 * The api as main.ts wires it, in process over real Redis, HTTP and Socket.io: security headers and
 * CORS on every answer, the access log line of each request, Socket.io's origin check, the
 * per-field bounds, and the cap of tasks one socket may follow.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { io as connectSocket, type Socket } from 'socket.io-client';
import { deleteKeysWithPrefix } from '@mageagent/tasks';
import { capturedLogger, type CapturedLogger } from '../../../packages/core/src/test-logger';
import { queuedTask } from '../../../packages/tasks/src/test-tasks';
import type { AccessLogLine } from './middleware/access-log';
import { startApi, type InProcessApi } from './test-api';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const APP_ORIGIN = 'https://app.example.com';
const MAX_SUBSCRIPTIONS = 3;
const PROMPT = 'a prompt that only the task record may hold';

let api: InProcessApi;
let log: CapturedLogger;
const prefix = `test-hardening-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  log = capturedLogger({ service: 'api-test', level: 'info' });
  api = await startApi(REDIS_URL, prefix, {
    env: { CORS_ORIGINS: APP_ORIGIN, SOCKET_MAX_SUBSCRIPTIONS: String(MAX_SUBSCRIPTIONS) },
    logger: log.logger,
  });
});

afterAll(async () => {
  await api.close();
  const redis = new Redis(REDIS_URL);
  await deleteKeysWithPrefix(redis, prefix);
  redis.disconnect();
});

const accessLines = () => log.lines<AccessLogLine & { message: string }>().filter((line) => line.message === 'request');

async function accessLineOf(response: Response, before: number): Promise<AccessLogLine> {
  await response.arrayBuffer();
  const deadline = Date.now() + 5000;
  while (accessLines().length <= before) {
    if (Date.now() > deadline) throw new Error('no access log line');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return accessLines()[before]!;
}

describe('HTTP', () => {
  test('POST /tasks from an allowed origin: CORS and security headers, and one access log line with the new task id and nothing of the prompt', async () => {
    const before = accessLines().length;
    const response = await fetch(`${api.url}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: APP_ORIGIN, authorization: 'Bearer mak_secret_value_123456' },
      body: JSON.stringify({ prompt: PROMPT, pattern: 'primary' }),
    });
    expect(response.status).toBe(202);
    expect(response.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(response.headers.get('access-control-expose-headers')).toContain('Location');
    expect(response.headers.get('content-security-policy')).toBe("default-src 'none';frame-ancestors 'none'");
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    const { id } = (await response.clone().json()) as { id: string };
    expect(await accessLineOf(response, before)).toMatchObject({ method: 'POST', route: '/tasks', status: 202, taskId: id });
    expect(log.raw()).not.toContain(PROMPT);
    expect(log.raw()).not.toContain('mak_secret_value_123456');
  });

  test('errors carry the headers too (a browser can read them), and are logged with their route', async () => {
    const unknownTask = randomUUID();
    let before = accessLines().length;
    const missing = await fetch(`${api.url}/tasks/${unknownTask}`, { headers: { origin: APP_ORIGIN } });
    expect(missing.status).toBe(404);
    expect(missing.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(await accessLineOf(missing, before)).toMatchObject({ route: '/tasks/:id', status: 404, taskId: unknownTask });

    before = accessLines().length;
    const models = await fetch(`${api.url}/v1/models`);
    expect(await accessLineOf(models, before)).toMatchObject({ method: 'GET', route: '/v1/models', status: 200 });

    before = accessLines().length;
    const nowhere = await fetch(`${api.url}/nowhere/${unknownTask}`, { headers: { origin: 'https://evil.example.net' } });
    expect(nowhere.headers.get('access-control-allow-origin')).toBeNull();
    expect(await accessLineOf(nowhere, before)).toMatchObject({ route: null, status: 404 });
  });

  test('a preflight from the allowed origin is answered; per-field bounds are 400s naming the field', async () => {
    const preflight = await fetch(`${api.url}/tasks`, {
      method: 'OPTIONS',
      headers: { origin: APP_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,idempotency-key' },
    });
    expect(preflight.status).toBe(204);
    const tooLong = await fetch(`${api.url}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'x'.repeat(300_000) }),
    });
    expect(tooLong.status).toBe(400);
    expect(await tooLong.json()).toEqual({
      error: { code: 'VALIDATION_FAILED', message: 'invalid task request', details: [{ path: 'prompt', message: 'must be at most 262144 characters (got 300000)' }] },
    });
    const facade = await fetch(`${api.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mageagent:primary', messages: [{ role: 'user', content: 'x'.repeat(300_000) }] }),
    });
    expect(facade.status).toBe(400);
    expect(await facade.json()).toMatchObject({ error: { type: 'invalid_request_error', param: 'messages[0].content', code: 'string_above_max_length' } });
  });
});

describe('Socket.io', () => {
  async function connect(origin?: string): Promise<Socket> {
    const socket = connectSocket(api.url, { transports: ['websocket'], reconnection: false, ...(origin !== undefined && { extraHeaders: { origin } }) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', reject);
    });
    return socket;
  }

  test('a handshake from another origin is refused; the allowed origin connects', async () => {
    await expect(connect('https://evil.example.net')).rejects.toThrow();
    const socket = await connect(APP_ORIGIN);
    expect(socket.connected).toBe(true);
    socket.disconnect();
  });

  test(`a socket follows at most SOCKET_MAX_SUBSCRIPTIONS (${MAX_SUBSCRIPTIONS}) tasks; subscribing again to one it follows does not count; one let go makes room`, async () => {
    const tasks = Array.from({ length: MAX_SUBSCRIPTIONS + 1 }, () => queuedTask());
    for (const task of tasks) await api.services.store.create(task);
    const socket = await connect();
    const subscribe = (taskId: string) => socket.timeout(3000).emitWithAck('subscribe-task', { taskId }) as Promise<Record<string, unknown>>;
    for (const task of tasks.slice(0, MAX_SUBSCRIPTIONS)) expect(await subscribe(task.id)).toMatchObject({ task: { id: task.id } });

    const refused = await subscribe(tasks[MAX_SUBSCRIPTIONS]!.id);
    expect(refused).toEqual({ error: { code: 'VALIDATION_FAILED', message: `a socket may follow at most ${MAX_SUBSCRIPTIONS} tasks` } });
    expect(await subscribe(tasks[0]!.id)).toMatchObject({ task: { id: tasks[0]!.id } });

    expect(await socket.timeout(3000).emitWithAck('unsubscribe-task', { taskId: tasks[1]!.id })).toEqual({ ok: true });
    expect(await subscribe(tasks[MAX_SUBSCRIPTIONS]!.id)).toMatchObject({ task: { id: tasks[MAX_SUBSCRIPTIONS]!.id } });
    // Another socket has its own count.
    const other = await connect();
    expect(await other.timeout(3000).emitWithAck('subscribe-task', { taskId: tasks[1]!.id })).toMatchObject({ task: { id: tasks[1]!.id } });
    socket.disconnect();
    other.disconnect();
  });
});
