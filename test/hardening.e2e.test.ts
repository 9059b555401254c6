/**
 * The api process as deployed, over real HTTP and Socket.io: security headers and CORS on every
 * answer, an access log line on its stdout for each request (and nothing of the prompts or keys),
 * Socket.io's origin check, the per-field bounds, and the cap of tasks one socket may follow.
 * No workers: tasks stay queued, so a socket can follow them for as long as the test needs.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { io as connectSocket, type Socket } from 'socket.io-client';
import { eventually } from './support/http';
import { startTestStack, type TestStack } from './support/stack';

const APP_ORIGIN = 'https://app.example.com';
const MAX_SUBSCRIPTIONS = 3;
const PROMPT = 'a prompt that only the task record may hold';
const API_KEY = 'mak_secret_value_123456789';
const REQUEST_TIMEOUT_MS = 1500;

let service: TestStack;

beforeAll(async () => {
  service = await startTestStack({
    workers: 0,
    env: {
      LOG_LEVEL: 'info',
      CORS_ORIGINS: APP_ORIGIN,
      SOCKET_MAX_SUBSCRIPTIONS: String(MAX_SUBSCRIPTIONS),
      REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    },
  });
}, 60_000);

afterAll(async () => {
  await service?.stop();
}, 30_000);

interface AccessLine {
  message: string;
  service: string;
  method: string;
  route: string | null;
  status: number;
  durationMs: number;
  bytesSent: number;
  taskId?: string;
}

/** The api's access log lines so far, from its stdout. */
const accessLines = (): AccessLine[] =>
  service.output
    .filter((line) => line.startsWith('[api] {'))
    .map((line) => JSON.parse(line.slice('[api] '.length)) as AccessLine)
    .filter((line) => line.message === 'request');

/** Sends a request and returns its answer and its access log line. */
async function exchange(path: string, init: RequestInit = {}): Promise<{ response: Response; body: string; line: AccessLine }> {
  const before = accessLines().length;
  const response = await fetch(`${service.api}${path}`, init);
  const body = await response.text();
  const line = await eventually(async () => accessLines()[before], 5000, `the access log line of ${path}`);
  return { response, body, line };
}

describe('HTTP', () => {
  test('POST /tasks from an allowed origin: CORS and security headers; its access log line has the new task id, and no line has the prompt or the key', async () => {
    const { response, body, line } = await exchange('/tasks', {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: APP_ORIGIN, authorization: `Bearer ${API_KEY}`, 'x-api-key': API_KEY },
      body: JSON.stringify({ prompt: PROMPT, pattern: 'primary' }),
    });
    expect(response.status).toBe(202);
    expect(response.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(response.headers.get('access-control-expose-headers')).toContain('Location');
    expect(response.headers.get('content-security-policy')).toBe("default-src 'none';frame-ancestors 'none'");
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    const { id } = JSON.parse(body) as { id: string };
    expect(line).toMatchObject({ service: 'api', method: 'POST', route: '/tasks', status: 202, taskId: id });
    expect(line.durationMs).toBeGreaterThanOrEqual(0);
    expect(line.bytesSent).toBeGreaterThan(body.length);
    const everything = service.output.join('\n');
    expect(everything).not.toContain(PROMPT);
    expect(everything).not.toContain(API_KEY);
  });

  test('errors carry the headers too (a browser can read them) and are logged with their route; other origins get no CORS header', async () => {
    const unknownTask = randomUUID();
    const missing = await exchange(`/tasks/${unknownTask}`, { headers: { origin: APP_ORIGIN } });
    expect(missing.response.status).toBe(404);
    expect(missing.response.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(missing.line).toMatchObject({ route: '/tasks/:id', status: 404, taskId: unknownTask });

    expect((await exchange('/v1/models')).line).toMatchObject({ method: 'GET', route: '/v1/models', status: 200 });

    const nowhere = await exchange(`/nowhere/${unknownTask}`, { headers: { origin: 'https://evil.example.net' } });
    expect(nowhere.response.headers.get('access-control-allow-origin')).toBeNull();
    expect(nowhere.line).toMatchObject({ route: null, status: 404 });
    expect(nowhere.line).not.toHaveProperty('taskId');
  });

  test("a preflight from the allowed origin is answered; per-field bounds are 400s naming the field, under /v1 in OpenAI's shape", async () => {
    const preflight = await fetch(`${service.api}/tasks`, {
      method: 'OPTIONS',
      headers: { origin: APP_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,idempotency-key' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-headers')).toContain('Idempotency-Key');
    const tooLong = await fetch(`${service.api}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'x'.repeat(300_000) }),
    });
    expect(tooLong.status).toBe(400);
    expect(await tooLong.json()).toEqual({
      error: {
        code: 'VALIDATION_FAILED',
        message: 'invalid task request',
        details: [{ path: 'prompt', message: 'must be at most 262144 characters (got 300000)' }],
      },
    });
    const facade = await fetch(`${service.api}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mageagent:primary', messages: [{ role: 'user', content: 'x'.repeat(300_000) }] }),
    });
    expect(facade.status).toBe(400);
    expect(await facade.json()).toMatchObject({ error: { type: 'invalid_request_error', param: 'messages[0].content', code: 'string_above_max_length' } });
  });
});

describe('slow and oversized requests', () => {
  /**
   * Writes `head` (then `body`, if given, as fast as the connection takes it) on a raw connection;
   * `answer` is what came back once the server closed it, `firstAnswer` once one whole response
   * (status line, headers and a Content-Length body) has arrived.
   */
  function rawExchange(head: string, body?: Buffer) {
    const { hostname, port } = new URL(service.api);
    const socket = net.connect(Number(port), hostname);
    const started = Date.now();
    let text = '';
    const whole = () => {
      const end = text.indexOf('\r\n\r\n', text.lastIndexOf('HTTP/1.1 ')) + 4;
      const length = Number(/\r\ncontent-length: (\d+)\r\n/i.exec(text)?.[1] ?? Number.NaN);
      return end > 3 && text.length >= end + length;
    };
    let answered: (value: { text: string; afterMs: number }) => void = () => undefined;
    const firstAnswer = new Promise<{ text: string; afterMs: number }>((resolve) => (answered = resolve));
    socket.on('data', (chunk) => {
      text += chunk.toString();
      if (whole()) answered({ text, afterMs: Date.now() - started });
    });
    socket.write(head);
    if (body) socket.write(body);
    const answer = new Promise<{ text: string; afterMs: number }>((resolve) =>
      socket.on('close', () => {
        answered({ text, afterMs: Date.now() - started });
        resolve({ text, afterMs: Date.now() - started });
      }),
    );
    socket.on('error', () => undefined);
    return { answer, firstAnswer, socket };
  }
  const bodyOf = (text: string) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as unknown;

  test('a body declared over BODY_LIMIT_BYTES gets its 413 at once, before it is sent; asked to wait (100-continue), the client is never told to send it', async () => {
    const declared = rawExchange('POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{"prompt":');
    const { text, afterMs } = await declared.firstAnswer;
    declared.socket.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    expect(bodyOf(text)).toMatchObject({ error: { code: 'PAYLOAD_TOO_LARGE' } });
    expect(afterMs).toBeLessThan(REQUEST_TIMEOUT_MS);

    const waiting = rawExchange(
      'POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\nExpect: 100-continue\r\n\r\n',
    );
    const refused = await waiting.firstAnswer;
    waiting.socket.destroy();
    expect(refused.text).toMatch(/^HTTP\/1\.1 413 /);
    expect(refused.text).not.toContain('100 Continue');
    // Under the limit, 100-continue is answered as usual.
    const small = rawExchange('POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n');
    await eventually(async () => (small.socket.bytesRead > 0 ? true : undefined), 3000, 'the 100 Continue');
    small.socket.end('{}');
    expect((await small.answer).text).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 400 /);
  });

  test('a client that sends a whole oversized body gets the 413, not a reset, and the connection stays usable', async () => {
    const oversized = Buffer.alloc(3 * 1024 * 1024, 'x');
    const exchange = rawExchange(`POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${oversized.length}\r\n\r\n`, oversized);
    const { text } = await exchange.firstAnswer;
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    // The rest of the body is read and dropped; the next request on the same connection is answered.
    exchange.socket.end('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect((await exchange.answer).text).toMatch(/HTTP\/1\.1 200 OK[\s\S]*"status":"ok"/);
  });

  test(`a body never finished is answered 408 and its connection closed after REQUEST_TIMEOUT_MS (${REQUEST_TIMEOUT_MS} ms); a stream open longer is not cut`, async () => {
    const created = await fetch(`${service.api}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt":"followed"}' });
    const { id } = (await created.json()) as { id: string };
    // The task stays queued (no workers): its stream stays open, pinged every SSE_PING_MS.
    const stream = await fetch(`${service.api}/tasks/${id}/stream`);
    const reader = stream.body!.getReader();

    const slow = rawExchange('POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt":');
    const { text, afterMs } = await slow.answer;
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))).toEqual({
      error: { code: 'VALIDATION_FAILED', message: 'the request (headers and body) was not received in time' },
    });
    expect(afterMs).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 100);
    expect(afterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 5_000);

    // The stream, open all this time, still delivers: cancelling the task ends it with the status.
    await fetch(`${service.api}/tasks/${id}/cancel`, { method: 'POST' });
    let events = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      events += new TextDecoder().decode(value);
      if (events.includes('"status":"cancelled"')) break;
    }
    expect(events).toContain('"status":"cancelled"');
    await reader.cancel();
  }, 20_000);

  test('no Host header (HTTP/1.1) and an unsupported Expect get the documented error shape, not a bare status line', async () => {
    const noHost = await rawExchange('GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n').answer;
    expect(noHost.text).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(noHost.text.slice(noHost.text.indexOf('\r\n\r\n') + 4))).toEqual({
      error: { code: 'VALIDATION_FAILED', message: 'an HTTP/1.1 request needs a Host header' },
    });
    const expectation = await rawExchange('POST /tasks HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\nContent-Length: 2\r\n\r\n{}').answer;
    expect(expectation.text).toMatch(/^HTTP\/1\.1 417 /);
    expect(JSON.parse(expectation.text.slice(expectation.text.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'VALIDATION_FAILED' } });
    // Socket.io's handshake too (it does not go through the app).
    const noHostHandshake = await rawExchange('GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nConnection: close\r\n\r\n').answer;
    expect(noHostHandshake.text).toMatch(/^HTTP\/1\.1 (400|403) /);
    // HTTP/1.0 needs no Host.
    const old = await rawExchange('GET /healthz HTTP/1.0\r\n\r\n').answer;
    expect(old.text).toMatch(/^HTTP\/1\.1 200 /);
  });

  test('HEAD on a live task stream answers its headers and ends, not held open until the task ends', async () => {
    const created = await fetch(`${service.api}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt":"live"}' });
    const { id } = (await created.json()) as { id: string };
    const head = await fetch(`${service.api}/tasks/${id}/stream`, { method: 'HEAD', signal: AbortSignal.timeout(3000) });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(await head.text()).toBe('');
    // Its response ended while the task is still queued: its access log line is written at the end.
    const line = await eventually(async () => accessLines().find((entry) => entry.method === 'HEAD' && entry.taskId === id), 3000, 'the HEAD request to end');
    expect(line).toMatchObject({ route: '/tasks/:id/stream', status: 200 });
    await fetch(`${service.api}/tasks/${id}/cancel`, { method: 'POST' });
  });
});

describe('Socket.io', () => {
  async function connect(origin?: string): Promise<Socket> {
    const socket = connectSocket(service.api, { transports: ['websocket'], reconnection: false, ...(origin !== undefined && { extraHeaders: { origin } }) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', reject);
    });
    return socket;
  }

  async function newTask(): Promise<string> {
    const response = await fetch(`${service.api}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'wait', pattern: 'primary' }),
    });
    return ((await response.json()) as { id: string }).id;
  }

  test('a handshake from another origin is refused; the allowed origin and clients without an Origin connect', async () => {
    await expect(connect('https://evil.example.net')).rejects.toThrow();
    for (const origin of [APP_ORIGIN, undefined]) {
      const socket = await connect(origin);
      expect(socket.connected).toBe(true);
      socket.disconnect();
    }
  });

  test(`a socket follows at most SOCKET_MAX_SUBSCRIPTIONS (${MAX_SUBSCRIPTIONS}) tasks; subscribing again to one it follows does not count; one let go makes room`, async () => {
    const taskIds = await Promise.all(Array.from({ length: MAX_SUBSCRIPTIONS + 1 }, newTask));
    const socket = await connect();
    const subscribe = (taskId: string) => socket.timeout(3000).emitWithAck('subscribe-task', { taskId }) as Promise<Record<string, unknown>>;
    for (const taskId of taskIds.slice(0, MAX_SUBSCRIPTIONS)) expect(await subscribe(taskId)).toMatchObject({ task: { id: taskId } });

    const extra = taskIds[MAX_SUBSCRIPTIONS]!;
    expect(await subscribe(extra)).toEqual({ error: { code: 'VALIDATION_FAILED', message: `a socket may follow at most ${MAX_SUBSCRIPTIONS} tasks` } });
    expect(await subscribe(taskIds[0]!)).toMatchObject({ task: { id: taskIds[0] } });

    expect(await socket.timeout(3000).emitWithAck('unsubscribe-task', { taskId: taskIds[1] })).toEqual({ ok: true });
    expect(await subscribe(extra)).toMatchObject({ task: { id: extra } });
    // Another socket has a count of its own.
    const other = await connect();
    expect(await other.timeout(3000).emitWithAck('subscribe-task', { taskId: taskIds[1] })).toMatchObject({ task: { id: taskIds[1] } });
    socket.disconnect();
    other.disconnect();
  });
});
