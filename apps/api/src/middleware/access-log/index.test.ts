/**
 * The access log over real HTTP: one line per request, route templates (also under a router and for
 * 404s), the principal and task id, SSE streams logged at their end, clients that leave, and nothing
 * of what was exchanged.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type ErrorRequestHandler } from 'express';
import { createLogger, NotFoundError } from '@mageagent/core';
import { capturedOutput } from '../../../../../packages/core/src/test-logger';
import { accessLog, type AccessLogLine } from './index';

const SECRET_KEY = 'mak_live_0123456789abcdefghij';
const PROMPT = 'the prompt must never reach the access log';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Waits `ms`, or less if the client leaves first. */
const until = (res: NodeJS.EventEmitter, ms: number) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    res.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });

interface LoggedApp {
  url: string;
  /** Access log lines so far. */
  lines(): Array<AccessLogLine & { message: string; level: string }>;
  raw(): string;
  /** Waits until `count` lines were written (a line is written when the response has closed). */
  linesAfter(count: number): Promise<Array<AccessLogLine & { message: string; level: string }>>;
  close(): Promise<void>;
}

/** An app shaped like the api's: a principal set by "authentication", app routes, a /v1 router, a 404 and an error handler. */
async function startApp(): Promise<LoggedApp> {
  const logger = createLogger({ service: 'access-log-test', level: 'info', logPrompts: true });
  const { stream, raw, lines: allLines } = capturedOutput();

  const app = express();
  app.use(accessLog({ logger, output: stream }));
  app.use((req, res, next) => {
    if (req.get('x-api-key') === SECRET_KEY) res.locals.caller = { principal: { tenant: 'acme', keyId: 'key_1', scopes: ['tasks'] } };
    next();
  });
  app.use(express.json());
  app.post('/tasks', (req, res) => {
    const id = randomUUID();
    res.locals.taskId = id;
    res.status(202).json({ id, echoed: typeof req.body === 'object' });
  });
  app.get('/tasks/:id', (req, res) => {
    if (req.params.id.startsWith('0')) throw new NotFoundError('no such task');
    res.json({ id: req.params.id });
  });
  app.get('/tasks/:id/stream', async (req, res) => {
    if (req.query.lookupMs !== undefined) await until(res, Number(req.query.lookupMs));
    if (res.destroyed) return;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('retry: 1000\n\n');
    await until(res, Number(req.query.holdMs ?? 0));
    res.end('event: status\ndata: {}\n\n');
  });
  const v1 = express.Router();
  v1.get('/models/:model', (req, res) => {
    res.json({ id: req.params.model });
  });
  v1.post('/chat/completions', (_req, res) => {
    res.setHeader('x-task-id', '01990000-0000-7000-8000-000000000001');
    res.json({ choices: [] });
  });
  v1.all(['/models', '/chat/completions'], (_req, res) => {
    res.status(405).json({ error: 'method' });
  });
  app.use('/v1', v1);
  app.use((_req, res) => {
    res.status(404).json({ error: { code: 'NOT_FOUND' } });
  });
  const errorHandler: ErrorRequestHandler = (error: unknown, _req, res, _next) => {
    res.status(error instanceof NotFoundError ? 404 : 500).json({ error: { message: String(error) } });
  };
  app.use(errorHandler);

  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const lines = () => allLines<AccessLogLine & { message: string; level: string }>();
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    lines,
    raw,
    async linesAfter(count) {
      const deadline = Date.now() + 5000;
      while (lines().length < count) {
        if (Date.now() > deadline) throw new Error(`expected ${count} access log lines, got ${lines().length}`);
        await sleep(10);
      }
      return lines();
    },
    async close() {
      (server as Server).closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('access log', () => {
  let app: LoggedApp;
  beforeAll(async () => (app = await startApp()));
  afterAll(() => app.close());

  /** Makes one request and returns its access log line. */
  async function logged(path: string, init: RequestInit = {}): Promise<AccessLogLine & { message: string; level: string }> {
    const before = app.lines().length;
    const response = await fetch(`${app.url}${path}`, init);
    await response.arrayBuffer();
    const lines = await app.linesAfter(before + 1);
    expect(lines).toHaveLength(before + 1);
    return lines[before]!;
  }

  test('a new task: method, route, status, duration, bytes, tenant, key id and the task id; at info', async () => {
    const line = await logged('/tasks?token=abc&prompt=hello', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': SECRET_KEY, authorization: `Bearer ${SECRET_KEY}`, 'idempotency-key': 'idem-42' },
      body: JSON.stringify({ prompt: PROMPT }),
    });
    expect(line).toEqual({
      level: 'info',
      message: 'request',
      service: 'access-log-test',
      timestamp: expect.any(String),
      method: 'POST',
      route: '/tasks',
      status: 202,
      durationMs: expect.any(Number),
      bytesSent: expect.any(Number),
      tenant: 'acme',
      keyId: 'key_1',
      taskId: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(line.bytesSent).toBeGreaterThan(100);
    // Nothing of the request: not its body, query values or credentials, even with LOG_PROMPTS on.
    for (const secret of [PROMPT, SECRET_KEY, 'idem-42', 'token=abc', 'hello']) expect(app.raw()).not.toContain(secret);
  });

  test('route templates, not URLs: the id goes to taskId, a /v1 route keeps its mount path', async () => {
    // The app answers 404 for ids that start with 0 (see the next test); this one must be found.
    const id = `a${randomUUID().slice(1)}`;
    expect(await logged(`/tasks/${id}`)).toMatchObject({ route: '/tasks/:id', status: 200, taskId: id });
    expect(await logged('/v1/models/mageagent:auto')).toMatchObject({ route: '/v1/models/:model', status: 200 });
    expect(await logged('/v1/chat/completions', { method: 'POST' })).toMatchObject({
      route: '/v1/chat/completions',
      taskId: '01990000-0000-7000-8000-000000000001',
    });
    expect(await logged('/v1/models', { method: 'DELETE' })).toMatchObject({ route: '/v1/models|/v1/chat/completions', status: 405 });
  });

  test('a failed route is still its route; an unmatched URL has none and is not echoed', async () => {
    const missing = `0${randomUUID().slice(1)}`;
    expect(await logged(`/tasks/${missing}`)).toMatchObject({ route: '/tasks/:id', status: 404, taskId: missing });
    const unmatched = await logged('/no/such/place-with-a-long-name');
    expect(unmatched).toMatchObject({ route: null, status: 404 });
    expect(unmatched).not.toHaveProperty('taskId');
    expect(await logged('/v1/nothing-here')).toMatchObject({ route: null, status: 404 });
    expect(await logged('/tasks/not-a-uuid')).not.toHaveProperty('taskId');
    expect(app.raw()).not.toContain('place-with-a-long-name');
    expect(app.raw()).not.toContain('not-a-uuid');
  });

  test('open mode: no principal, no tenant or key id', async () => {
    const line = await logged(`/tasks/${randomUUID()}`);
    expect(line).not.toHaveProperty('tenant');
    expect(line).not.toHaveProperty('keyId');
  });

  test("an SSE stream is logged once, at its end, with the whole stream's duration and bytes", async () => {
    const id = randomUUID();
    const before = app.lines().length;
    const response = await fetch(`${app.url}/tasks/${id}/stream?holdMs=300`);
    await sleep(100);
    expect(app.lines()).toHaveLength(before);
    const body = await response.text();
    const [line] = (await app.linesAfter(before + 1)).slice(before);
    expect(line).toMatchObject({ route: '/tasks/:id/stream', status: 200, taskId: id });
    expect(line!.durationMs).toBeGreaterThanOrEqual(290);
    expect(line!.bytesSent).toBeGreaterThan(body.length);
    expect(line).not.toHaveProperty('aborted');
  });

  test('a client that leaves a stream is logged when it leaves, as aborted', async () => {
    const before = app.lines().length;
    const controller = new AbortController();
    const response = await fetch(`${app.url}/tasks/${randomUUID()}/stream?holdMs=2000`, { signal: controller.signal });
    const reader = response.body!.getReader();
    await reader.read();
    await sleep(150);
    controller.abort();
    const [line] = (await app.linesAfter(before + 1)).slice(before);
    expect(line).toMatchObject({ route: '/tasks/:id/stream', status: 200, aborted: true });
    expect(line!.durationMs).toBeGreaterThanOrEqual(140);
    expect(line!.durationMs).toBeLessThan(1500);
  });

  test('a client that leaves before any answer is logged 499, aborted', async () => {
    const before = app.lines().length;
    const controller = new AbortController();
    const request = fetch(`${app.url}/tasks/${randomUUID()}/stream?lookupMs=2000`, { signal: controller.signal }).catch(() => undefined);
    await sleep(100);
    controller.abort();
    await request;
    const [line] = (await app.linesAfter(before + 1)).slice(before);
    expect(line).toMatchObject({ route: '/tasks/:id/stream', status: 499, aborted: true });
  });
});

test("below the logger's level, nothing is logged", async () => {
  const { stream, raw } = capturedOutput();
  const app = express();
  app.use(accessLog({ logger: createLogger({ service: 'test', level: 'warn' }), output: stream }));
  app.get('/x', (_req, res) => {
    res.json({});
  });
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x`)).arrayBuffer();
    await sleep(50);
    expect(raw()).toBe('');
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});
