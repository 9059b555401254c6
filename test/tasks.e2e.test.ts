/**
 * The spine end to end: simulator, api and two workers as real processes on a real Redis.
 */
import { io as connectSocket, type Socket } from 'socket.io-client';
import type { TaskEvent, TaskRecord } from '@mageagent/core';
import { createTask, postJson, readSse, requestJson, waitForTask } from './support/http';
import { startTestStack, type TestStack } from './support/stack';
import { collectTaskUpdates } from './support/socket';

let service: TestStack;

beforeAll(async () => {
  service = await startTestStack({ env: { BODY_LIMIT_BYTES: '4096', SSE_PING_MS: '200' } });
}, 60_000);

afterAll(async () => {
  await service?.stop();
}, 30_000);

const typesOf = (events: TaskEvent[]) => events.map((event) => (event.type === 'status' ? `status:${event.status}` : event.type));

/** Collapses runs of deltas, so the shape is stable however tokens were coalesced. */
const shapeOf = (events: TaskEvent[]) => typesOf(events).filter((type, index, all) => type !== 'delta' || all[index - 1] !== 'delta');

const deltasOf = (events: TaskEvent[]) => events.map((event) => (event.type === 'delta' ? event.text : '')).join('');

test('POST /tasks answers 202 at once with links, then polling reaches completed with a result', async () => {
  const response = await postJson(`${service.api}/tasks`, { prompt: 'Explain BullMQ in two sentences', pattern: 'primary' });
  expect(response.status).toBe(202);
  expect(response.body).toMatchObject({
    status: 'queued',
    pattern: 'primary',
    links: { self: `/tasks/${response.body.id}`, stream: `/tasks/${response.body.id}/stream` },
  });
  expect(response.headers.get('location')).toBe(`/tasks/${response.body.id}`);

  const task = await waitForTask(service.api, response.body.id);
  expect(task.status).toBe('completed');
  expect(task.attempt).toBe(1);
  expect(task.startedAt).not.toBeNull();
  expect(task.completedAt).not.toBeNull();
  expect(task.result?.content.length).toBeGreaterThan(0);
  expect(task.result?.steps).toHaveLength(1);
  expect(task.result?.steps[0]).toMatchObject({ role: 'primary', host: 'sim-mac', attempt: 1 });
  expect(task.result?.usage.completionTokens).toBeGreaterThan(0);

  // The answer is the model server's answer: ask the simulator the same question directly.
  const direct = await postJson(`${service.sim}/v1/chat/completions`, {
    model: task.result?.model,
    messages: [{ role: 'user', content: 'Explain BullMQ in two sentences' }],
  });
  expect(task.result?.content).toBe(direct.body.choices[0].message.content);
});

test.each([
  ['validator', 'sim/qwen2.5-coder-7b-instruct-4bit'],
  ['competitor', 'sim/qwen2.5-coder-32b-instruct-4bit'],
])('the single-role pattern %s runs its own role and model', async (pattern, model) => {
  const task = await waitForTask(service.api, await createTask(service.api, { prompt: 'hello', pattern }));
  expect(task).toMatchObject({ status: 'completed', pattern, result: { model } });
  expect(task.result?.steps.map((step) => step.role)).toEqual([pattern]);
});

test('GET /patterns lists what this build runs', async () => {
  const { body } = await requestJson(`${service.api}/patterns`);
  expect(body.default).toBe('auto');
  expect(body.patterns.map((pattern: { name: string }) => pattern.name)).toEqual([
    'auto',
    'hybrid',
    'validated',
    'compete',
    'moa',
    'moa-deep',
    'self-moa',
    'self-consistent',
    'critic',
    'tools',
    'primary',
    'validator',
    'competitor',
  ]);
  const validated = body.patterns.find((pattern: { name: string }) => pattern.name === 'validated');
  expect(validated).toMatchObject({
    builtIn: true,
    description: expect.any(String),
    steps: [{ generate: { role: 'primary' } }, { validate: { role: 'validator', onFail: 'revise', maxRevisions: 1 } }, { extractTools: { role: 'tools' } }],
  });
});

test('messages input and the default pattern are accepted', async () => {
  const id = await createTask(service.api, {
    messages: [
      { role: 'system', content: 'Be brief.' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Hello ' },
          { type: 'text', text: 'there' },
        ],
      },
    ],
  });
  const task = await waitForTask(service.api, id);
  // "Hello there" has no routing keyword: auto sends it to the fast validator.
  expect(task).toMatchObject({ status: 'completed', pattern: 'auto', result: { pattern: 'validator', route: { route: 'general', method: 'keywords' } } });
  expect(task.input.messages).toEqual([
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello there' },
  ]);
});

test('SSE delivers every event in seq order and closes after the terminal status', async () => {
  const id = await createTask(service.api, { prompt: 'stream me [[sim: tokens=30; tps=300]]', pattern: 'primary' });
  const stream = await readSse(`${service.api}/tasks/${id}/stream`);
  expect(stream.status).toBe(200);
  expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
  expect(stream.headers.get('cache-control')).toMatch(/no-cache/);
  expect(stream.headers.get('x-accel-buffering')).toBe('no');
  expect(stream.closedByServer).toBe(true);

  const seqs = stream.events.map((event) => event.seq);
  expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, index) => index + 1));
  expect(stream.frames.map((frame) => Number(frame.id))).toEqual(seqs);
  expect(stream.frames.map((frame) => frame.event)).toEqual(stream.events.map((event) => event.type));
  expect(shapeOf(stream.events)).toEqual(['status:queued', 'status:processing', 'step.started', 'delta', 'step.completed', 'result', 'status:completed']);
  const result = stream.events.find((event) => event.type === 'result');
  expect(result?.type === 'result' && result.result.content).toBe(deltasOf(stream.events));
  expect(deltasOf(stream.events).trim().split(/\s+/)).toHaveLength(30);
});

test('a stream opened on a finished task replays its log and closes; ?after and Last-Event-ID resume exactly', async () => {
  const id = await createTask(service.api, { prompt: 'replay me' });
  await waitForTask(service.api, id);
  const full = await readSse(`${service.api}/tasks/${id}/stream`);
  expect(full.closedByServer).toBe(true);
  const total = full.events.length;
  expect(total).toBeGreaterThanOrEqual(6);

  const fromHeader = await readSse(`${service.api}/tasks/${id}/stream`, { 'last-event-id': '3' });
  expect(fromHeader.events.map((event) => event.seq)).toEqual(full.events.slice(3).map((event) => event.seq));
  const fromQuery = await readSse(`${service.api}/tasks/${id}/stream?after=${total - 1}`);
  expect(fromQuery.events).toEqual(full.events.slice(total - 1));
  const afterEnd = await readSse(`${service.api}/tasks/${id}/stream?after=${total}`);
  expect(afterEnd.events).toEqual([]);
});

test('a client that drops a live stream and resumes with Last-Event-ID gets exactly the missing events', async () => {
  const id = await createTask(service.api, { prompt: 'a slow one [[sim: tokens=40; tps=40]]' });
  const first = await readSse(`${service.api}/tasks/${id}/stream`, {}, (events) => events.filter((event) => event.type === 'delta').length >= 3);
  expect(first.closedByServer).toBe(false);
  const lastSeen = first.events[first.events.length - 1]!.seq;
  const second = await readSse(`${service.api}/tasks/${id}/stream`, { 'last-event-id': String(lastSeen) });
  expect(second.closedByServer).toBe(true);

  const joined = [...first.events, ...second.events];
  const log = (await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${id}/events`)).body.events;
  expect(joined).toEqual(log);
  expect(joined[joined.length - 1]).toMatchObject({ type: 'status', status: 'completed' });
});

test('SSE sends ping comments while a task is quiet', async () => {
  const id = await createTask(service.api, { prompt: 'quiet [[sim: ttft=700; tokens=2]]' });
  const stream = await readSse(`${service.api}/tasks/${id}/stream`);
  expect(stream.comments.filter((comment) => comment === 'ping').length).toBeGreaterThanOrEqual(2);
});

test('Socket.io subscribers get the same events as task-update, after an ack with the snapshot', async () => {
  const socket: Socket = connectSocket(service.api, { transports: ['websocket'], forceNew: true });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    const id = await createTask(service.api, { prompt: 'socket me [[sim: tokens=20; tps=200]]', pattern: 'primary' });
    const { received, done } = collectTaskUpdates(socket);
    const ack = await socket.timeout(5000).emitWithAck('subscribe-task', { taskId: id });
    expect(ack.task).toMatchObject({ id, pattern: 'primary' });
    await done;
    const log = (await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${id}/events`)).body.events;
    expect(received).toEqual(log);

    const resumed: TaskEvent[] = [];
    socket.off('task-update');
    socket.on('task-update', (event: TaskEvent) => resumed.push(event));
    await socket.timeout(5000).emitWithAck('subscribe-task', { taskId: id, after: log.length - 2 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(resumed).toEqual(log.slice(-2));

    const bad = await socket.timeout(5000).emitWithAck('subscribe-task', { taskId: 'not-a-task' });
    expect(bad.error).toMatchObject({ code: 'NOT_FOUND' });
    const invalid = await socket.timeout(5000).emitWithAck('subscribe-task', { task: 1 });
    expect(invalid.error).toMatchObject({ code: 'VALIDATION_FAILED' });
    expect(await socket.timeout(5000).emitWithAck('unsubscribe-task', { taskId: id })).toEqual({ ok: true });
  } finally {
    socket.disconnect();
  }
});

test('a model that answers 500 is retried with backoff, then the task fails with a clear error', async () => {
  const before = (await requestJson(`${service.sim}/sim/stats`)).body;
  const id = await createTask(service.api, { prompt: 'always broken [[sim: error=500]]' });
  const task = await waitForTask(service.api, id);
  expect(task.status).toBe('failed');
  expect(task.error).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true });
  expect(task.error?.message).toMatch(/500/);
  const after = (await requestJson(`${service.sim}/sim/stats`)).body;
  // MODEL_RETRIES defaults to 2: the first try and two retries.
  expect(after.errors - before.errors).toBe(3);
  const events = (await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${id}/events`)).body.events;
  expect(events.filter((event) => event.type === 'warning')).toHaveLength(2);
  expect(events.filter((event) => event.type === 'step.started').map((event) => event.type === 'step.started' && event.step.attempt)).toEqual([1, 2, 3]);
  expect(shapeOf(events).slice(-2)).toEqual(['error', 'status:failed']);
});

test('a model that answers 500 twice and then recovers costs the task nothing but retries', async () => {
  const id = await createTask(service.api, { prompt: 'flaky, then fine [[sim: error=500; fail-times=2]]', pattern: 'primary' });
  const task = await waitForTask(service.api, id);
  expect(task.status).toBe('completed');
  expect(task.result?.steps.map((step) => step.attempt)).toEqual([3]);
  const events = (await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${id}/events`)).body.events;
  expect(events.filter((event) => event.type === 'warning')).toHaveLength(2);
});

test('a Retry-After is waited out within MODEL_RETRY_AFTER_MAX_MS, and a longer one fails the task at once', async () => {
  const waited = await createTask(service.api, { prompt: 'busy a moment [[sim: error=429; retry-after-ms=300; fail-times=1]]', pattern: 'primary' });
  expect(await waitForTask(service.api, waited)).toMatchObject({ status: 'completed' });
  const events = (await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${waited}/events`)).body.events;
  const warnings = events.flatMap((event) => (event.type === 'warning' ? [event.message] : []));
  expect(warnings).toEqual([expect.stringMatching(/retry 1 of 2 in 300 ms as the server asked \(Retry-After\)$/)]);

  const startedAt = Date.now();
  const refused = await waitForTask(
    service.api,
    await createTask(service.api, { prompt: 'busy for long [[sim: error=503; retry-after=120]]', pattern: 'primary' }),
  );
  expect(refused).toMatchObject({ status: 'failed', error: { code: 'MODEL_UNAVAILABLE', retryable: true } });
  expect(refused.error?.message).toContain('asked for a wait of 120000 ms (Retry-After), longer than the 30000 ms');
  expect(Date.now() - startedAt).toBeLessThan(5000);
});

test('a task that outlives its timeout fails with TASK_TIMEOUT and its model request is aborted', async () => {
  const before = (await requestJson(`${service.sim}/sim/stats`)).body;
  const id = await createTask(service.api, { prompt: 'never answers [[sim: hang]]', options: { timeoutMs: 400 } });
  const task = await waitForTask(service.api, id);
  expect(task.status).toBe('failed');
  expect(task.error).toMatchObject({ code: 'TASK_TIMEOUT', retryable: false });
  const after = await (async () => {
    for (let tries = 0; tries < 100; tries += 1) {
      const stats = (await requestJson(`${service.sim}/sim/stats`)).body;
      if (stats.aborted > before.aborted) return stats;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return (await requestJson(`${service.sim}/sim/stats`)).body;
  })();
  expect(after.aborted - before.aborted).toBe(1);
});

describe('bad input gets the documented answers and no stack traces', () => {
  const expectError = (response: { status: number; body: any }, status: number, code: string) => {
    expect(response.status).toBe(status);
    expect(response.body).toMatchObject({ error: { code, message: expect.any(String) } });
    expect(JSON.stringify(response.body)).not.toMatch(/\bat .*\.ts:\d+/);
  };

  test('malformed JSON', async () => {
    const response = await requestJson(`${service.api}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt": ' });
    expectError(response, 400, 'VALIDATION_FAILED');
  });

  test('no body, or not JSON', async () => {
    expectError(await requestJson(`${service.api}/tasks`, { method: 'POST' }), 400, 'VALIDATION_FAILED');
    expectError(await postJson(`${service.api}/tasks`, [1, 2]), 400, 'VALIDATION_FAILED');
    // JSON that is not an object is named as such, not as malformed JSON.
    for (const body of ['null', '"x"', '1', '[]']) {
      const response = await requestJson<any>(`${service.api}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      expectError(response, 400, 'VALIDATION_FAILED');
      expect(response.body.error.message).toBe('request body must be a JSON object (content-type: application/json)');
    }
  });

  test('unknown pattern, missing prompt, both inputs, wrong types, unknown fields', async () => {
    const unknown = await postJson(`${service.api}/tasks`, { prompt: 'x', pattern: 'nope' });
    expectError(unknown, 400, 'VALIDATION_FAILED');
    expect(unknown.body.error.details[0]).toMatchObject({ path: 'pattern', message: expect.stringContaining('primary') });
    expectError(await postJson(`${service.api}/tasks`, {}), 400, 'VALIDATION_FAILED');
    expectError(await postJson(`${service.api}/tasks`, { prompt: 'x', messages: [{ role: 'user', content: 'y' }] }), 400, 'VALIDATION_FAILED');
    const wrongTypes = await postJson(`${service.api}/tasks`, { prompt: 42, options: { temperature: 'hot' } });
    expectError(wrongTypes, 400, 'VALIDATION_FAILED');
    expect(wrongTypes.body.error.details.map((detail: { path: string }) => detail.path)).toEqual(expect.arrayContaining(['prompt', 'options.temperature']));
    expectError(await postJson(`${service.api}/tasks`, { prompt: 'x', surprise: true }), 400, 'VALIDATION_FAILED');
    expectError(await postJson(`${service.api}/tasks`, { messages: [{ role: 'wizard', content: 'x' }] }), 400, 'VALIDATION_FAILED');
  });

  test('tools whose JSON Schema does not compile, or a tool choice naming no tool, get 400 with the path', async () => {
    const badSchema = await postJson(`${service.api}/tasks`, {
      prompt: 'x',
      tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'objekt' } } }],
    });
    expectError(badSchema, 400, 'VALIDATION_FAILED');
    expect(badSchema.body.error.details[0]).toMatchObject({ path: 'tools.0.function.parameters' });
    const badChoice = await postJson(`${service.api}/tasks`, {
      prompt: 'x',
      tools: [{ type: 'function', function: { name: 'f' } }],
      toolChoice: { type: 'function', function: { name: 'g' } },
    });
    expectError(badChoice, 400, 'VALIDATION_FAILED');
    expectError(
      await postJson(`${service.api}/tasks`, { prompt: 'x', tools: [{ type: 'function', function: { name: 'bad name!' } }] }),
      400,
      'VALIDATION_FAILED',
    );
  });

  test('a tool schema ajv refuses that the api check lets through fails its task before any model call', async () => {
    // A reference into data: the api's check does not look inside `default`, ajv compiles what it points at.
    const parameters = { type: 'object', properties: { a: { default: { pattern: '(' } }, b: { $ref: '#/properties/a/default' } } };
    const before = (await requestJson<{ requests: number }>(`${service.sim}/sim/stats`)).body.requests;
    const created = await postJson<{ id: string }>(`${service.api}/tasks`, {
      prompt: 'x',
      pattern: 'hybrid',
      tools: [{ type: 'function', function: { name: 'f', parameters } }],
    });
    expect(created.status).toBe(202);
    const task = await waitForTask(service.api, created.body.id);
    expect(task).toMatchObject({
      status: 'failed',
      error: { code: 'VALIDATION_FAILED', message: expect.stringContaining('tool "f": parameters are not a usable JSON Schema') },
    });
    expect((await requestJson<{ requests: number }>(`${service.sim}/sim/stats`)).body.requests).toBe(before);
  });

  test('a body over the limit gets 413', async () => {
    expectError(await postJson(`${service.api}/tasks`, { prompt: 'x'.repeat(8000) }), 413, 'PAYLOAD_TOO_LARGE');
  });

  test('unknown and malformed ids get 404, a bad resume point 400', async () => {
    const unknownId = '0190d7a8-0000-7000-8000-000000000000';
    expectError(await requestJson(`${service.api}/tasks/${unknownId}`), 404, 'NOT_FOUND');
    expectError(await requestJson(`${service.api}/tasks/not-a-uuid`), 404, 'NOT_FOUND');
    expectError(await requestJson(`${service.api}/tasks/${unknownId}/stream`), 404, 'NOT_FOUND');
    expectError(await requestJson(`${service.api}/tasks/${unknownId}/cancel`, { method: 'POST' }), 404, 'NOT_FOUND');
    expectError(await requestJson(`${service.api}/no/such/route`), 404, 'NOT_FOUND');
    const id = await createTask(service.api, { prompt: 'x' });
    expectError(await requestJson(`${service.api}/tasks/${id}/stream?after=-1`), 400, 'VALIDATION_FAILED');
  });

  test('nothing invalid was queued: every accepted task is visible and well-formed', async () => {
    const task = (await requestJson<TaskRecord>(`${service.api}/tasks/${await createTask(service.api, { prompt: 'still fine' })}`)).body;
    expect(['queued', 'processing', 'completed']).toContain(task.status);
  });
});

test('health and readiness', async () => {
  expect((await requestJson(`${service.api}/healthz`)).status).toBe(200);
  const ready = await requestJson(`${service.api}/readyz`);
  expect(ready).toMatchObject({ status: 200, body: { status: 'ready', checks: { redis: true } } });
});
