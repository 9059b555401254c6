/**
 * Tracing over real processes: simulator, api and a worker export OTLP/HTTP (http/json) to a tiny
 * collector in this test. One task's trace must cross the queue hop (api request span → task
 * creation span → worker task span), nest steps and model calls under the task, reach the
 * simulator, carry no prompt text, and be flushed by the processes' SIGTERM drains. Without an
 * endpoint, the processes must not load the SDK at all.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTask, eventually, postJson, waitForTask } from './support/http';
import { eventsOf, startTestStack, type TestStack } from './support/stack';

interface OtlpAttribute {
  key: string;
  value: Record<string, unknown>;
}

interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  status: { code?: number; message?: string };
  attributes: Record<string, unknown>;
  /** Everything the span carries, as exported, for the no-prompt check. */
  raw: string;
}

/** OTLP's SpanKind numbers (SPAN_KIND_SERVER = 2, ...). */
const KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;
const STATUS_ERROR = 2;

function attributeValue(value: Record<string, unknown>): unknown {
  if ('stringValue' in value) return value.stringValue;
  if ('intValue' in value) return Number(value.intValue);
  if ('doubleValue' in value) return value.doubleValue;
  if ('boolValue' in value) return value.boolValue;
  if ('arrayValue' in value) return ((value.arrayValue as { values?: Record<string, unknown>[] }).values ?? []).map(attributeValue);
  return value;
}

function attributesOf(list: OtlpAttribute[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map(({ key, value }) => [key, attributeValue(value)]));
}

/** A minimal OTLP/HTTP trace receiver for the http/json protocol. */
class Collector {
  readonly spans: ReceivedSpan[] = [];
  readonly bodies: string[] = [];
  private readonly server: Server;

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/v1/traces' || !String(req.headers['content-type']).startsWith('application/json')) {
          res.writeHead(404).end();
          return;
        }
        const body = Buffer.concat(chunks).toString('utf8');
        this.bodies.push(body);
        this.ingest(JSON.parse(body));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
  }

  private ingest(request: { resourceSpans?: any[] }): void {
    for (const resourceSpans of request.resourceSpans ?? []) {
      const service = String(attributesOf(resourceSpans.resource?.attributes)['service.name']);
      for (const scopeSpans of resourceSpans.scopeSpans ?? []) {
        for (const span of scopeSpans.spans ?? []) {
          this.spans.push({
            service,
            traceId: span.traceId,
            spanId: span.spanId,
            parentSpanId: span.parentSpanId ?? '',
            name: span.name,
            kind: span.kind,
            status: span.status ?? {},
            attributes: attributesOf(span.attributes),
            raw: JSON.stringify(span),
          });
        }
      }
    }
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const RECORDER = path.resolve(__dirname, 'support/record-imports.mjs');
/** Modules only the SDK side loads (the API package is loaded either way). */
const SDK_MODULE = /@opentelemetry\/(sdk-trace|exporter-trace-otlp|resources|context-async-hooks)\//;

let workDir: string;
let collector: Collector;
let endpoint: string;

beforeAll(async () => {
  workDir = mkdtempSync(path.join(tmpdir(), 'mageagent-tracing-'));
  collector = new Collector();
  endpoint = await collector.start();
});

afterAll(async () => {
  await collector.close();
  rmSync(workDir, { recursive: true, force: true });
});

function importsOf(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

test('one trace from the api request through the queue to the worker, its steps, model calls and the simulator; flushed on SIGTERM', async () => {
  const importsFile = path.join(workDir, 'imports-on.txt');
  let service: TestStack | undefined = await startTestStack({
    workers: 1,
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      // Longer than the test: spans can only reach the collector through the shutdown flush.
      OTEL_BSP_SCHEDULE_DELAY: '120000',
      NODE_ARGS: `--import ${RECORDER}`,
      RECORD_IMPORTS_FILE: importsFile,
    },
  });
  let taskId: string;
  const simUrl = service.sim;
  const secret = `PROMPT-TEXT-${randomUUID()}`;
  try {
    // Validated with a validator that fails once: the primary writes, is reviewed, revises, is approved.
    taskId = await createTask(service.api, { prompt: `Fix the bug in my parser ${secret} [[sim: validator=fail-once]]`, pattern: 'validated' });
    const task = await waitForTask(service.api, taskId);
    expect(task.status).toBe('completed');
    // Nothing is exported yet: the batch delay has not passed, so what arrives below is the drain's flush.
    expect(collector.spans).toHaveLength(0);
    const stopping = service;
    service = undefined;
    await stopping.stop();
  } finally {
    await service?.stop();
  }

  // The SDK was loaded: the recorder sees it (the control for the "off" test below).
  expect(importsOf(importsFile).some((url) => SDK_MODULE.test(url))).toBe(true);

  const spans = collector.spans;
  const byId = new Map(spans.map((span) => [span.spanId, span]));
  const taskSpan = spans.find((span) => span.name === 'task run' && span.attributes['mageagent.task.id'] === taskId);
  expect(taskSpan).toBeDefined();
  if (taskSpan === undefined) return;
  expect(taskSpan).toMatchObject({
    service: 'mageagent-worker',
    kind: KIND.CONSUMER,
    attributes: expect.objectContaining({
      'mageagent.task.pattern': 'validated',
      'mageagent.tenant': 'default',
      'mageagent.task.status': 'completed',
      'mageagent.task.attempt': 1,
    }),
  });

  // The queue hop: the worker's task span's ancestors are the api's creation span, then its request span.
  const ancestors = (span: ReceivedSpan): ReceivedSpan[] => {
    const chain: ReceivedSpan[] = [];
    for (let parent = byId.get(span.parentSpanId); parent !== undefined; parent = byId.get(parent.parentSpanId)) chain.push(parent);
    return chain;
  };
  const [creation, request] = ancestors(taskSpan);
  expect(creation).toMatchObject({
    service: 'mageagent-api',
    name: 'task create',
    kind: KIND.PRODUCER,
    attributes: expect.objectContaining({ 'mageagent.task.id': taskId }),
  });
  expect(request).toMatchObject({
    service: 'mageagent-api',
    name: 'POST /tasks',
    kind: KIND.SERVER,
    attributes: expect.objectContaining({ 'http.route': '/tasks', 'http.response.status_code': 202, 'mageagent.tenant': 'default' }),
  });
  expect(request?.parentSpanId).toBe('');

  const trace = spans.filter((span) => span.traceId === taskSpan.traceId);
  expect(new Set(trace.map((span) => span.service))).toEqual(new Set(['mageagent-api', 'mageagent-worker', 'mageagent-model-sim']));
  const underTask = (span: ReceivedSpan) => ancestors(span).includes(taskSpan);

  // Declared steps: validated = generate, validate (which revises after the failed review).
  const steps = trace.filter((span) => span.name.startsWith('step '));
  expect(steps.map((span) => span.attributes['mageagent.step.kind'])).toEqual(expect.arrayContaining(['generate', 'validate']));
  for (const step of steps) expect(byId.get(step.parentSpanId)).toBe(taskSpan);

  // Model-call steps (a span per attempt) under a declared step, each with one model call under it.
  const calls = trace.filter((span) => span.name.startsWith('generate '));
  expect(calls.map((span) => span.attributes['mageagent.role'])).toEqual(expect.arrayContaining(['primary', 'validator']));
  expect(calls.length).toBeGreaterThanOrEqual(4); // primary, validator (FAIL), revision, validator (PASS)
  for (const call of calls) {
    expect(steps).toContain(byId.get(call.parentSpanId));
    expect(call.attributes).toMatchObject({ 'mageagent.step.attempt': 1, 'mageagent.step.name': expect.any(String) });
    const models = trace.filter((span) => span.parentSpanId === call.spanId && span.name.startsWith('chat '));
    expect(models).toHaveLength(1);
    const model = models[0]!;
    expect(model).toMatchObject({
      service: 'mageagent-worker',
      kind: KIND.CLIENT,
      attributes: expect.objectContaining({
        'gen_ai.operation.name': 'chat',
        'gen_ai.request.model': expect.any(String),
        'mageagent.role': call.attributes['mageagent.role'],
        'mageagent.host': expect.any(String),
        'mageagent.outcome': 'ok',
        'server.address': '127.0.0.1',
        'server.port': Number(new URL(simUrl).port),
        'gen_ai.usage.input_tokens': expect.any(Number),
        'gen_ai.usage.output_tokens': expect.any(Number),
      }),
    });
    expect(model.attributes['gen_ai.usage.output_tokens']).toBeGreaterThan(0);
    // Inside the call: the host lease wait, and the simulator's server span (the traceparent header).
    const inside = trace.filter((span) => span.parentSpanId === model.spanId);
    expect(inside.map((span) => `${span.service} ${span.name}`).sort()).toEqual([
      'mageagent-model-sim POST /v1/chat/completions',
      'mageagent-worker host lease wait',
    ]);
  }
  for (const span of [...steps, ...calls]) expect(underTask(span)).toBe(true);

  // No span, anywhere, carries the prompt (nor does any export body).
  expect(spans.length).toBeGreaterThan(10);
  for (const span of spans) expect(span.raw).not.toContain(secret);
  for (const body of collector.bodies) expect(body).not.toContain(secret);
}, 90_000);

test('a failed model call is an error with its code; a cancelled task says cancelled and is no error', async () => {
  collector.spans.length = 0;
  const service = await startTestStack({
    workers: 1,
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '200', MODEL_RETRIES: '0' },
  });
  let taskId: string;
  let cancelledId: string;
  try {
    taskId = await createTask(service.api, { prompt: 'Say hello [[sim: error=400]]', pattern: 'primary' });
    expect(await waitForTask(service.api, taskId)).toMatchObject({ status: 'failed' });
    // A task whose model call hangs until it is cancelled.
    cancelledId = await createTask(service.api, { prompt: 'hold the GPU [[sim: hang]]', pattern: 'primary' });
    await eventually(
      async () => ((await eventsOf(service, cancelledId)).some((event) => event.type === 'step.started') ? true : undefined),
      10_000,
      'the call to start',
    );
    expect((await postJson(`${service.api}/tasks/${cancelledId}/cancel`, {})).body).toMatchObject({ status: 'cancelled' });
    await eventually(
      async () => (collector.spans.some((span) => span.name === 'task run' && span.attributes['mageagent.task.id'] === cancelledId) ? true : undefined),
      10_000,
      'the cancelled task span',
    );
  } finally {
    await service.stop();
  }
  const cancelled = collector.spans.find((span) => span.name === 'task run' && span.attributes['mageagent.task.id'] === cancelledId);
  expect(cancelled).toMatchObject({ attributes: expect.objectContaining({ 'mageagent.task.status': 'cancelled' }) });
  expect(cancelled?.status.code ?? 0).not.toBe(STATUS_ERROR);
  // The aborted call inside it says why.
  const aborted = collector.spans.find((span) => span.traceId === cancelled?.traceId && span.name.startsWith('chat '));
  expect(aborted).toMatchObject({ attributes: expect.objectContaining({ 'mageagent.outcome': 'CANCELLED', 'error.type': 'CANCELLED' }) });
  const taskSpan = collector.spans.find((span) => span.name === 'task run' && span.attributes['mageagent.task.id'] === taskId);
  expect(taskSpan).toMatchObject({ status: { code: STATUS_ERROR }, attributes: expect.objectContaining({ 'mageagent.task.status': 'failed' }) });
  const code = taskSpan?.attributes['error.type'];
  // The worker's log line about the failure leads to the trace.
  const failedLine = service.output.find((line) => line.includes('"task failed"') && line.includes(taskId));
  expect(JSON.parse(failedLine!.slice(failedLine!.indexOf('{')))).toMatchObject({ traceId: taskSpan?.traceId, spanId: taskSpan?.spanId });
  expect(code).toEqual(expect.stringMatching(/^[A-Z_]+$/));
  const call = collector.spans.find((span) => span.traceId === taskSpan?.traceId && span.name.startsWith('chat '));
  expect(call).toMatchObject({
    status: { code: STATUS_ERROR, message: code },
    attributes: expect.objectContaining({ 'mageagent.outcome': code, 'error.type': code }),
  });
}, 60_000);

test('without OTEL_EXPORTER_OTLP_ENDPOINT the processes never load the SDK and export nothing', async () => {
  collector.spans.length = 0;
  const importsFile = path.join(workDir, 'imports-off.txt');
  const service = await startTestStack({
    workers: 1,
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: '', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '', NODE_ARGS: `--import ${RECORDER}`, RECORD_IMPORTS_FILE: importsFile },
  });
  try {
    const taskId = await createTask(service.api, { prompt: 'Explain how Redis persistence works', pattern: 'hybrid' });
    expect(await waitForTask(service.api, taskId)).toMatchObject({ status: 'completed' });
  } finally {
    await service.stop();
  }
  const imports = importsOf(importsFile);
  // The recorder did record the processes' loads (their entry files), just not the SDK.
  expect(imports.some((url) => url.endsWith('/apps/api/src/main.ts'))).toBe(true);
  expect(imports.some((url) => url.endsWith('/apps/worker/src/main.ts'))).toBe(true);
  expect(imports.filter((url) => SDK_MODULE.test(url) || url.includes('tracing-sdk'))).toEqual([]);
  expect(collector.spans).toHaveLength(0);
}, 60_000);
