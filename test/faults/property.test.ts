/**
 * Property-based: generated bodies, headers, query strings, paths and Socket.io payloads thrown at
 * every route. Whatever arrives, the api never answers 5xx, never crashes, and every error is in
 * the documented shape (OpenAI's under /v1); valid requests sent at the same time are unaffected.
 * A failure prints fast-check's seed and the shrunk counterexample; FC_SEED replays a run.
 */
import fc from 'fast-check';
import { io } from 'socket.io-client';
import { createTask, waitForTask } from '../support/http';
import { startTestStack, type TestStack } from '../support/stack';
import { ExchangeLog, settle } from './harness';

let service: TestStack;
let finishedTask: string;

beforeAll(async () => {
  service = await startTestStack({ workers: 1, workerConcurrency: 8 });
  finishedTask = await createTask(service.api, { prompt: 'a finished task', pattern: 'primary' });
  await waitForTask(service.api, finishedTask);
}, 60_000);

afterAll(async () => {
  await service?.stop();
}, 30_000);

const seed = process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED);
const RUNS = Number(process.env.FC_RUNS ?? 150);

const headerText = fc.stringMatching(/^[\x20-\x7e]{0,40}$/);
const taskIdLike = fc.oneof(
  fc.uuid(),
  fc.constant('FINISHED'),
  fc.string({ maxLength: 80 }).map(encodeURIComponent),
  fc.constantFrom('..', '%2e%2e', '%00', 'null', '-1', '0'),
);

/** Bodies: any JSON, near-valid task and chat bodies with a generated field, or text that is not JSON. */
const body = fc.oneof(
  fc.jsonValue({ maxDepth: 6 }).map((value) => JSON.stringify(value)),
  fc
    .record(
      {
        prompt: fc.oneof(fc.string(), fc.jsonValue({ maxDepth: 3 })),
        pattern: fc.oneof(fc.constantFrom('primary', 'auto', 'nope'), fc.jsonValue({ maxDepth: 2 })),
        priority: fc.jsonValue({ maxDepth: 2 }),
        options: fc.jsonValue({ maxDepth: 3 }),
        metadata: fc.jsonValue({ maxDepth: 12 }),
        tools: fc.jsonValue({ maxDepth: 6 }),
        responseFormat: fc.jsonValue({ maxDepth: 4 }),
      },
      { requiredKeys: [] },
    )
    .map((value) => JSON.stringify(value)),
  fc
    .record(
      {
        model: fc.oneof(fc.constantFrom('mageagent:primary', 'gpt-4o'), fc.string()),
        messages: fc.oneof(
          fc.jsonValue({ maxDepth: 5 }),
          fc.array(fc.record({ role: fc.constantFrom('user', 'system', 'tool', 'x'), content: fc.jsonValue({ maxDepth: 4 }) }), { maxLength: 3 }),
        ),
        stream: fc.jsonValue({ maxDepth: 1 }),
        n: fc.jsonValue({ maxDepth: 1 }),
        tools: fc.jsonValue({ maxDepth: 5 }),
      },
      { requiredKeys: [] },
    )
    .map((value) => JSON.stringify(value)),
  fc.string({ maxLength: 200 }),
);

interface GeneratedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  body?: string;
}

const request: fc.Arbitrary<GeneratedRequest> = fc
  .record({
    route: fc.constantFrom(
      'POST /tasks',
      'GET /tasks',
      'POST /v1/chat/completions',
      'GET /tasks/:id',
      'GET /tasks/:id/events',
      'GET /tasks/:id/stream',
      'POST /tasks/:id/cancel',
      'GET /v1/models/:id',
      'GET /patterns',
      'GET /hosts',
      'GET /v1/models',
      'ANY /:anything',
    ),
    id: taskIdLike,
    method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'),
    anything: fc.string({ maxLength: 60 }).map(encodeURIComponent),
    query: fc.dictionary(fc.constantFrom('after', 'limit', 'cursor', 'status', 'pattern', 'createdAfter', 'x', 'after[]', 'status[]'), headerText, {
      maxKeys: 3,
    }),
    contentType: fc.constantFrom(
      'application/json',
      'application/json; charset=utf-8',
      'text/plain',
      'application/x-www-form-urlencoded',
      'application/json; charset=latin1',
      '',
    ),
    lastEventId: fc.option(headerText, { nil: undefined }),
    extraHeader: fc.option(fc.tuple(fc.constantFrom('accept', 'x-api-key', 'authorization', 'idempotency-key', 'accept-encoding'), headerText), {
      nil: undefined,
    }),
    body,
  })
  .map(({ route, id, method, anything, query, contentType, lastEventId, extraHeader, body: text }) => {
    const [verb = 'GET', template = '/'] = route.split(' ');
    const realId = id === 'FINISHED' ? finishedTask : id;
    const path = template.replace(':id', realId).replace(':anything', anything);
    const headers: Record<string, string> = {};
    if (contentType !== '') headers['content-type'] = contentType;
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId;
    if (extraHeader !== undefined) headers[extraHeader[0]] = extraHeader[1];
    const chosen = verb === 'ANY' ? method : verb;
    return { method: chosen, path, query, headers, ...(chosen !== 'GET' && { body: text }) };
  });

/** The documented error shape: `{error: {code, message}}`, or OpenAI's `{error: {message, type, param, code}}` under /v1. */
function isDocumentedError(path: string, body: unknown): boolean {
  const error = (body as { error?: Record<string, unknown> } | null)?.error;
  if (typeof error !== 'object' || error === null || typeof error.message !== 'string') return false;
  if (path.startsWith('/v1')) return typeof error.type === 'string' && 'param' in error && 'code' in error;
  return typeof error.code === 'string';
}

test('any request to any route: never a 5xx, always the documented error shape; valid traffic beside it is unaffected', async () => {
  const log = new ExchangeLog();
  let stop = false;
  const valid: Promise<unknown>[] = [];
  const background = (async () => {
    while (!stop) {
      valid.push(log.post(service.api, '/tasks', { prompt: 'valid beside the fuzz', pattern: 'primary' }));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    await fc.assert(
      fc.asyncProperty(request, async (generated) => {
        const query = new URLSearchParams(generated.query).toString();
        const url = `${service.api}${generated.path}${query === '' ? '' : `?${query}`}`;
        const exchange = await log.request(url, {
          method: generated.method,
          route: `${generated.method} ${generated.path}`,
          headers: generated.headers,
          ...(generated.body !== undefined && { body: generated.body }),
          clientMistake: true,
        });
        if (exchange.status === 0 || exchange.status >= 500) return false;
        if (exchange.status >= 400 && !isDocumentedError(generated.path, exchange.body)) return false;
        return true;
      }),
      { numRuns: RUNS, ...(seed !== undefined && { seed }) },
    );
  } finally {
    stop = true;
    await background;
  }
  // The generated requests reached the routes and exercised their answers (not one status for all).
  const statuses = new Set(log.exchanges.filter((exchange) => exchange.clientMistake).map((exchange) => exchange.status));
  for (const status of [200, 400, 404]) expect(statuses).toContain(status);
  const answers = (await Promise.all(valid)) as Array<{ status: number; body: { id?: string } }>;
  expect(answers.every((answer) => answer.status === 202)).toBe(true);
  const finished = await settle(
    service.api,
    answers.map((answer) => answer.body.id ?? ''),
    60_000,
  );
  expect([...finished.values()].filter((task) => task.status === 'completed')).toHaveLength(answers.length);
  expect(service.stack.api.child.exitCode).toBeNull();
}, 180_000);

test('any Socket.io payload: every ack is a snapshot, ok, or a documented error; the socket and the api stay up', async () => {
  const socket = io(service.api, { transports: ['websocket'] });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const payload = fc.oneof(
    fc.jsonValue({ maxDepth: 8 }),
    fc.record(
      { taskId: fc.oneof(taskIdLike, fc.jsonValue({ maxDepth: 2 })), after: fc.oneof(fc.integer(), fc.double(), fc.jsonValue({ maxDepth: 1 })) },
      { requiredKeys: [] },
    ),
  );
  try {
    await fc.assert(
      // No payload, one, or extra arguments: Socket.io passes the ack last, whatever came before it.
      fc.asyncProperty(fc.constantFrom('subscribe-task', 'unsubscribe-task'), fc.array(payload, { maxLength: 3 }), async (event, generated) => {
        const realised = generated.map((arg) => ((arg as { taskId?: unknown })?.taskId === 'FINISHED' ? { ...(arg as object), taskId: finishedTask } : arg));
        const answer = (await socket
          .timeout(3000)
          .emitWithAck(event, ...realised)
          .catch(() => 'no ack')) as Record<string, unknown>;
        if (!socket.connected) return false;
        if (typeof answer !== 'object' || answer === null) return false;
        if ('task' in answer || answer.ok === true) return true;
        return isDocumentedError('', answer);
      }),
      { numRuns: RUNS, ...(seed !== undefined && { seed }) },
    );
  } finally {
    socket.disconnect();
  }
  expect(service.stack.api.child.exitCode).toBeNull();
}, 120_000);
