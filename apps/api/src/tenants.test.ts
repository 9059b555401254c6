/**
 * Two tenants on one api (in process, real Redis and HTTP and Socket.io): neither can see, stream,
 * subscribe to, replay, cancel or list the other's tasks; keys without the scope are refused;
 * quotas trip at their numbers; Idempotency-Key makes one task of 20 concurrent duplicates.
 * (No worker runs here: tasks stay queued, which is all isolation needs. The keys file, its
 * reload and the real process are tested in test/tenants.e2e.test.ts.)
 */
import { io as connectSocket, type Socket } from 'socket.io-client';
import type { Principal } from '@mageagent/core';
import type { Redis } from 'ioredis';
import { IdempotencyKeys } from './idempotency';
import { startInProcessApi, type InProcessApi } from './test-api';

const acme: Principal = { tenant: 'acme', app: 'ci', keyId: 'acme-ci', scopes: ['tasks'] };
const globex: Principal = { tenant: 'globex', keyId: 'globex-main', scopes: ['tasks'] };
const acmeAdmin: Principal = { tenant: 'acme', keyId: 'acme-ops', scopes: ['admin'] };
const tight: Principal = { tenant: 'tight', keyId: 'tight-1', scopes: ['tasks'] };
const metered: Principal = { tenant: 'metered', keyId: 'metered-1', scopes: ['tasks'] };
const burst: Principal = { tenant: 'burst', keyId: 'burst-1', scopes: ['tasks'] };

const KEYS = {
  mak_acme: { principal: acme },
  mak_globex: { principal: globex },
  mak_acme_admin: { principal: acmeAdmin },
  mak_tight: { principal: tight, limits: { requestsPerMinute: 8, maxActiveTasks: 2, maxPromptBytes: 100 } },
  mak_metered: { principal: metered, limits: { requestsPerMinute: 6 } },
  // The same tenant under a key of its own, with its own count.
  mak_metered_reader: { principal: { ...metered, keyId: 'metered-2' } },
  mak_burst: { principal: burst, limits: { requestsPerMinute: 10 } },
  mak_chat: { principal: { tenant: 'chat', keyId: 'chat-1', scopes: ['tasks'] as const }, limits: { requestsPerMinute: 4 } },
  mak_chat_reader: { principal: { tenant: 'chat', keyId: 'chat-2', scopes: ['tasks'] as const } },
};

let api: InProcessApi;

beforeAll(async () => {
  api = await startInProcessApi({ keys: KEYS });
});

afterAll(async () => {
  await api.close();
});

interface Answer {
  status: number;
  headers: Headers;
  body: any;
}

async function call(path: string, key: string | undefined, init: RequestInit = {}, headers: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(`${api.url}${path}`, {
    ...init,
    headers: { 'content-type': 'application/json', ...(key === undefined ? {} : { authorization: `Bearer ${key}` }), ...headers },
  });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // SSE or empty
  }
  return { status: response.status, headers: response.headers, body };
}

const post = (path: string, key: string | undefined, body: unknown, headers: Record<string, string> = {}) =>
  call(path, key, { method: 'POST', body: JSON.stringify(body) }, headers);

async function createTaskAs(key: string, prompt = 'hello'): Promise<string> {
  const answer = await post('/tasks', key, { prompt, pattern: 'primary' });
  expect(answer.status).toBe(202);
  return answer.body.id as string;
}

/** The body of a 404 with the task id taken out, to compare a foreign task's answer with an unknown one's. */
const withoutId = (answer: Answer, id: string) => ({ status: answer.status, body: JSON.stringify(answer.body).replaceAll(id, '<id>') });

async function connect(key: string | undefined): Promise<Socket> {
  const socket = connectSocket(api.url, { transports: ['websocket'], reconnection: false, ...(key === undefined ? {} : { auth: { token: key } }) });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  });
  return socket;
}

describe('isolation', () => {
  test("another tenant's task answers exactly like an unknown one on every route", async () => {
    const id = await createTaskAs('mak_acme');
    const unknown = '01a1fbeb-16d2-75fb-93db-d4bbd9f7c1ce';
    for (const [method, path] of [
      ['GET', '/tasks/:id'],
      ['GET', '/tasks/:id/events'],
      ['GET', '/tasks/:id/stream'],
      ['POST', '/tasks/:id/cancel'],
    ] as const) {
      const foreign = await call(path.replace(':id', id), 'mak_globex', { method });
      const missing = await call(path.replace(':id', unknown), 'mak_globex', { method });
      expect({ path, ...withoutId(foreign, id) }).toEqual({ path, ...withoutId(missing, unknown) });
      expect(foreign.status).toBe(404);
    }
    // The owner still sees it, untouched by the other tenant's cancel.
    const own = await call(`/tasks/${id}`, 'mak_acme');
    expect(own.body).toMatchObject({ id, status: 'queued', tenant: 'acme', app: 'ci', keyId: 'acme-ci' });
  });

  test("Socket.io: another tenant's task is not found, the owner's subscribes", async () => {
    const id = await createTaskAs('mak_acme');
    const foreign = await connect('mak_globex');
    expect(await foreign.emitWithAck('subscribe-task', { taskId: id })).toMatchObject({ error: { code: 'NOT_FOUND' } });
    foreign.disconnect();
    const owner = await connect('mak_acme');
    expect(await owner.emitWithAck('subscribe-task', { taskId: id })).toMatchObject({ task: { id, tenant: 'acme' } });
    owner.disconnect();
  });

  test('listing shows only the caller’s tasks, newest first, a page at a time', async () => {
    const mine = [await createTaskAs('mak_globex', 'one'), await createTaskAs('mak_globex', 'two'), await createTaskAs('mak_globex', 'three')];
    await createTaskAs('mak_acme', 'not yours');
    const first = await call('/tasks?limit=2', 'mak_globex');
    expect(first.status).toBe(200);
    expect(first.body.tasks.map((task: { id: string }) => task.id)).toEqual([mine[2], mine[1]]);
    expect(first.body.tasks[0]).toMatchObject({ status: 'queued', pattern: 'primary', keyId: 'globex-main', links: { self: `/tasks/${mine[2]}` } });
    const second = await call(`/tasks?limit=2&cursor=${first.body.nextCursor}`, 'mak_globex');
    expect(second.body.tasks.map((task: { id: string }) => task.id)).toEqual([mine[0]]);
    expect(second.body.nextCursor).toBeNull();
    expect((await call('/tasks?status=completed', 'mak_globex')).body.tasks).toEqual([]);
    expect((await call('/tasks?status=bogus', 'mak_globex')).status).toBe(400);
    expect((await call('/tasks?cursor=not-a-cursor', 'mak_globex')).status).toBe(400);
    for (const limit of ['0', '101', '0x10', '1e1', '2.5', '', 'x']) {
      expect({ limit, status: (await call(`/tasks?limit=${limit}`, 'mak_globex')).status }).toEqual({ limit, status: 400 });
    }
    expect((await call('/tasks?limit=1&limit=2', 'mak_globex')).status).toBe(400);
  });
});

describe('authentication and scopes', () => {
  test('no key, a malformed one or an unknown one: 401 UNAUTHORIZED; the probes need none', async () => {
    const attempts: Array<Record<string, string>> = [
      {},
      { authorization: 'Basic Zm9vOmJhcg==' },
      { authorization: 'Bearer' },
      { 'x-api-key': 'mak_nobody' },
      { authorization: 'Bearer mak_acme', 'x-api-key': 'mak_globex' },
    ];
    for (const headers of attempts) {
      const answer = await call('/tasks', undefined, {}, headers);
      expect({ headers, status: answer.status, code: answer.body.error?.code }).toEqual({ headers, status: 401, code: 'UNAUTHORIZED' });
      expect(JSON.stringify(answer.body)).not.toContain('mak_');
    }
    expect((await call('/tasks', undefined, {}, { 'x-api-key': 'mak_acme' })).status).toBe(200);
    expect((await call('/healthz', undefined)).status).toBe(200);
    expect((await call('/readyz', undefined)).status).toBe(200);
  });

  test('a key without the tasks scope gets 403 FORBIDDEN on task routes, and may read /patterns and /hosts', async () => {
    const refused = await post('/tasks', 'mak_acme_admin', { prompt: 'hi' });
    expect(refused).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
    expect((await call('/patterns', 'mak_acme_admin')).status).toBe(200);
    expect((await call('/hosts', 'mak_acme_admin')).status).toBe(200);
    expect((await call('/patterns', undefined)).status).toBe(401);
  });

  test('the OpenAI facade answers 401 in OpenAI’s shape, with invalid_api_key', async () => {
    const answer = await post('/v1/chat/completions', 'mak_nobody', { model: 'mageagent:primary', messages: [{ role: 'user', content: 'hi' }] });
    expect(answer.status).toBe(401);
    expect(answer.body).toEqual({ error: { message: expect.any(String), type: 'invalid_request_error', param: null, code: 'invalid_api_key' } });
    expect((await call('/v1/models', undefined)).status).toBe(401);
    expect((await call('/v1/models', 'mak_globex')).status).toBe(200);
  });

  test('a socket without a valid key is refused at the handshake with the documented error', async () => {
    await expect(connect(undefined)).rejects.toMatchObject({ message: 'unauthorized', data: { code: 'UNAUTHORIZED' } });
    await expect(connect('mak_nobody')).rejects.toMatchObject({ data: { code: 'UNAUTHORIZED' } });
  });
});

describe('caching', () => {
  test('no answer with a task in it may be kept by a browser or proxy: Cache-Control: no-store', async () => {
    const created = await post('/tasks', 'mak_acme', { prompt: 'private prompt' });
    for (const answer of [
      created,
      await call(`/tasks/${created.body.id}`, 'mak_acme'),
      await call('/tasks', 'mak_acme'),
      await call(`/tasks/${created.body.id}`, 'mak_globex'),
    ]) {
      expect(answer.headers.get('cache-control')).toBe('no-store');
    }
  });
});

describe('quotas', () => {
  test('prompt size, active tasks and requests per minute trip at the key’s numbers', async () => {
    const oversized = await post('/tasks', 'mak_tight', { prompt: 'x'.repeat(101) });
    expect(oversized).toMatchObject({
      status: 413,
      body: { error: { code: 'PAYLOAD_TOO_LARGE', details: { quota: 'maxPromptBytes', limit: 100, size: 101 } } },
    });
    const first = await createTaskAs('mak_tight');
    await createTaskAs('mak_tight');
    const third = await post('/tasks', 'mak_tight', { prompt: 'three' });
    expect(third).toMatchObject({ status: 429, body: { error: { code: 'RATE_LIMITED', details: { quota: 'maxActiveTasks', limit: 2 } } } });
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThan(0);
    // A task that ends gives its place back.
    expect((await post(`/tasks/${first}/cancel`, 'mak_tight', {})).status).toBe(200);
    await createTaskAs('mak_tight');
    // 8 requests a minute: 6 made above, two more pass, and the 9th is refused whatever it is.
    expect((await call('/patterns', 'mak_tight')).status).toBe(200);
    expect((await call('/patterns', 'mak_tight')).status).toBe(200);
    const limited = await call('/patterns', 'mak_tight');
    expect(limited).toMatchObject({ status: 429, body: { error: { code: 'RATE_LIMITED', details: { quota: 'requestsPerMinute', limit: 8 } } } });
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
    // Other keys are not affected.
    expect((await call('/patterns', 'mak_globex')).status).toBe(200);
  });

  test('POST /tasks counts against requests per minute whatever the request turns out to be; past the limit even a bad one gets the 429', async () => {
    const raw = (body: string, headers: Record<string, string> = {}) => call('/tasks', 'mak_metered', { method: 'POST', body }, headers);
    // Six requests a minute: a task, malformed JSON, an invalid task, a task with an
    // Idempotency-Key and its replay, and another route.
    expect((await post('/tasks', 'mak_metered', { prompt: 'one' })).status).toBe(202);
    expect((await raw('{"prompt":')).status).toBe(400);
    expect((await post('/tasks', 'mak_metered', { prompt: '' })).status).toBe(400);
    const key = `metered-${Date.now()}`;
    const original = await post('/tasks', 'mak_metered', { prompt: 'two' }, { 'idempotency-key': key });
    const replay = await post('/tasks', 'mak_metered', { prompt: 'two' }, { 'idempotency-key': key });
    expect([original.status, replay.status, replay.body.id]).toEqual([202, 202, original.body.id]);
    expect((await call('/patterns', 'mak_metered')).status).toBe(200);
    // The seventh is refused, as a task, as a bad body, as a replay and on another route.
    for (const refused of [
      await post('/tasks', 'mak_metered', { prompt: 'three' }),
      await raw('{"prompt":'),
      await post('/tasks', 'mak_metered', { prompt: 'two' }, { 'idempotency-key': key }),
      await call('/patterns', 'mak_metered'),
    ]) {
      expect(refused).toMatchObject({ status: 429, body: { error: { code: 'RATE_LIMITED', details: { quota: 'requestsPerMinute', limit: 6 } } } });
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    // Only the two tasks were made (seen with the tenant's other key, which has a count of its own).
    expect((await call('/tasks', 'mak_metered_reader')).body.tasks).toHaveLength(2);
  });

  test('/v1/chat/completions counts once per call, with the task it creates or before its error; past the limit, a 429 in OpenAI’s shape', async () => {
    const chat = { model: 'mageagent:primary', messages: [{ role: 'user', content: 'hi' }], stream: true };
    /** A streaming call's status, its headers come at once (no worker runs here); leaving cancels its task. */
    const streamed = async () => {
      const leave = new AbortController();
      const response = await fetch(`${api.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer mak_chat' },
        body: JSON.stringify(chat),
        signal: leave.signal,
      });
      const answer = { status: response.status, taskId: response.headers.get('x-task-id'), body: response.status === 200 ? undefined : await response.json() };
      leave.abort();
      return answer;
    };
    // The limiter's own round trip counts only requests that make no task: a call that makes one is
    // counted by the script that writes its task.
    const counts = jest.spyOn(api.services.rateLimits, 'consume');
    const ownCounts = () => counts.mock.calls.filter(([principal]) => principal.keyId === 'chat-1').length;
    // Four requests a minute: a call that makes a task, a bad body, malformed JSON, the models list.
    const first = await streamed();
    expect(first.status).toBe(200);
    expect(first.taskId).toEqual(expect.any(String));
    expect(ownCounts()).toBe(0);
    expect((await post('/v1/chat/completions', 'mak_chat', { model: 'mageagent:primary' })).status).toBe(400);
    expect((await call('/v1/chat/completions', 'mak_chat', { method: 'POST', body: '{"model":' })).status).toBe(400);
    expect((await call('/v1/models', 'mak_chat')).status).toBe(200);
    expect(ownCounts()).toBe(3);
    counts.mockRestore();
    // The fifth is refused, as a call, as a bad body and on another route, in OpenAI's shape.
    const refusedCall = await streamed();
    expect(refusedCall).toMatchObject({ status: 429, taskId: null, body: { error: { type: 'rate_limit_error' } } });
    for (const refused of [await post('/v1/chat/completions', 'mak_chat', { model: 'mageagent:primary' }), await call('/v1/models', 'mak_chat')]) {
      expect(refused).toMatchObject({ status: 429, body: { error: { type: 'rate_limit_error' } } });
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    // Only the first call made a task (seen with the tenant's other key, which has a count of its own).
    expect((await call('/tasks', 'mak_chat_reader')).body.tasks.map((task: { id: string }) => task.id)).toEqual([first.taskId]);
  });

  test('25 concurrent POST /tasks against a limit of 10 a minute: exactly 10 tasks', async () => {
    const answers = await Promise.all(Array.from({ length: 25 }, (_, index) => post('/tasks', 'mak_burst', { prompt: `burst ${index}` })));
    const statuses = answers.map((answer) => answer.status);
    expect(statuses.filter((status) => status === 202)).toHaveLength(10);
    expect(statuses.filter((status) => status === 429)).toHaveLength(15);
  });

  test('past MAX_QUEUED_TASKS, new tasks get 503 QUEUE_FULL with Retry-After', async () => {
    const bounded = await startInProcessApi({ keys: KEYS, env: { MAX_QUEUED_TASKS: '3' } });
    try {
      const submit = () =>
        fetch(`${bounded.url}/tasks`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: 'Bearer mak_acme' },
          body: '{"prompt":"hi"}',
        });
      for (let index = 0; index < 3; index += 1) expect((await submit()).status).toBe(202);
      const full = await submit();
      expect(full.status).toBe(503);
      expect(full.headers.get('retry-after')).toMatch(/^\d+$/);
      expect(await full.json()).toMatchObject({ error: { code: 'QUEUE_FULL' } });
    } finally {
      await bounded.close();
    }
  });
});

describe('Idempotency-Key', () => {
  test('20 concurrent requests with one key and body make exactly one task; another body is a 422; keys are per tenant', async () => {
    const key = `idem-${Date.now()}`;
    const body = { prompt: 'only once', pattern: 'primary' };
    const answers = await Promise.all(Array.from({ length: 20 }, () => post('/tasks', 'mak_acme', body, { 'idempotency-key': key })));
    expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 202));
    const ids = new Set(answers.map((answer) => answer.body.id));
    expect(ids.size).toBe(1);
    expect(answers.filter((answer) => answer.headers.get('idempotent-replayed') === 'true')).toHaveLength(19);
    const listed = await call('/tasks?limit=100', 'mak_acme');
    expect(listed.body.tasks.filter((task: { id: string }) => ids.has(task.id))).toHaveLength(1);

    // The same JSON with its keys in another order and other whitespace is the same body.
    const reordered = await call(
      '/tasks',
      'mak_acme',
      { method: 'POST', body: '{ "pattern": "primary",\n  "prompt": "only once" }' },
      { 'idempotency-key': key },
    );
    expect([reordered.status, reordered.body.id, reordered.headers.get('idempotent-replayed')]).toEqual([202, [...ids][0], 'true']);
    const conflict = await post('/tasks', 'mak_acme', { prompt: 'something else' }, { 'idempotency-key': key });
    expect(conflict).toMatchObject({ status: 422, body: { error: { code: 'IDEMPOTENCY_CONFLICT' } } });
    const otherTenant = await post('/tasks', 'mak_globex', body, { 'idempotency-key': key });
    expect(otherTenant.status).toBe(202);
    expect(ids.has(otherTenant.body.id)).toBe(false);
    expect((await post('/tasks', 'mak_acme', body, { 'idempotency-key': 'has spaces' })).status).toBe(400);
  });
});

test("a claim written before the canonical digest (an earlier version's, within its 24 h) still replays its task", async () => {
  const key = `legacy-${Date.now()}`;
  const created = await post('/tasks', 'mak_acme', { prompt: 'before the upgrade', pattern: 'primary' }, { 'idempotency-key': key });
  // The claim as the earlier version wrote it: the digest of the body's keys in the order sent.
  const body = { prompt: 'before the upgrade', pattern: 'primary' };
  const claims = new IdempotencyKeys(api.services.redis as Redis, api.prefix);
  await claims.release('acme', key, created.body.id);
  expect(await claims.claim('acme', key, { bodyHash: IdempotencyKeys.legacyBodyHash(body), taskId: created.body.id })).toEqual({ claimed: true });
  const replay = await post('/tasks', 'mak_acme', body, { 'idempotency-key': key });
  expect([replay.status, replay.body.id, replay.headers.get('idempotent-replayed')]).toEqual([202, created.body.id, 'true']);
});

describe('webhooks at creation', () => {
  test('a literal private target is refused with a 400 naming webhook.url; without a signing secret webhooks are refused', async () => {
    const signing = await startInProcessApi({ keys: KEYS, env: { WEBHOOK_SECRET: 'x'.repeat(40) } });
    try {
      const submit = (url: string) =>
        fetch(`${signing.url}/tasks`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: 'Bearer mak_acme' },
          body: JSON.stringify({ prompt: 'hi', webhook: { url } }),
        });
      for (const url of ['http://127.0.0.1:9/hook', 'http://[::1]/hook', 'http://169.254.169.254/latest', 'http://localhost/hook', 'ftp://example.com/x']) {
        const answer = await submit(url);
        expect({ url, status: answer.status }).toEqual({ url, status: 400 });
        expect(((await answer.json()) as { error: { details: Array<{ path: string }> } }).error.details[0]?.path).toMatch(/^webhook/);
      }
      expect((await submit('https://hooks.example.com/mageagent')).status).toBe(202);
    } finally {
      await signing.close();
    }
    const unsigned = await post('/tasks', 'mak_acme', { prompt: 'hi', webhook: { url: 'https://hooks.example.com/x' } });
    expect(unsigned).toMatchObject({ status: 400, body: { error: { details: [{ path: 'webhook' }] } } });
  });
});
