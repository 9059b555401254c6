/**
 * The OpenAI-compatible facade against the official `openai` SDK: simulator, api and workers as
 * real processes, patterns served as models.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import type { TaskEvent, TaskRecord } from '@mageagent/core';
import { TaskStore } from '@mageagent/tasks';
import { stopService } from '../apps/launcher/src/stack';
import { eventually, postJson, requestJson, waitForTask } from './support/http';
import { REDIS_URL, startTestStack, type TestStack } from './support/stack';

let service: TestStack;
let client: OpenAI;
let configDirectory: string;

/** The simulator config with structured output allowed for every role, so response_format reaches the models. */
function writeModelsConfig(): string {
  configDirectory = mkdtempSync(path.join(tmpdir(), 'mageagent-openai-'));
  const original = readFileSync(path.resolve(__dirname, '../config/models.sim.yaml'), 'utf8');
  let roles = 0;
  const text = original.replace(/^( {4})endpoint: .*$/gm, (line, indent: string) => {
    roles += 1;
    return `${line}\n${indent}structuredOutput: true`;
  });
  if (roles === 0) throw new Error('config/models.sim.yaml changed shape: no role got structuredOutput');
  const file = path.join(configDirectory, 'models.yaml');
  writeFileSync(file, text);
  return file;
}

beforeAll(async () => {
  service = await startTestStack({ env: { MODELS_CONFIG: writeModelsConfig(), OPENAI_KEEPALIVE_MS: '200' } });
  // No SDK retries: a retried call would be a second task and hide what the first answered.
  client = new OpenAI({ baseURL: `${service.api}/v1`, apiKey: 'unused', maxRetries: 0 });
}, 60_000);

afterAll(async () => {
  await service?.stop();
  if (configDirectory) rmSync(configDirectory, { recursive: true, force: true });
}, 30_000);

const listModelIds = async () => (await client.models.list()).data.map((model) => model.id);

const task = async (taskId: string) => (await requestJson<TaskRecord>(`${service.api}/tasks/${taskId}`)).body;

const events = async (taskId: string) => (await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${taskId}/events`)).body.events;

const reasoningOf = (chunk: ChatCompletionChunk) => (chunk.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '';

/** Deltas of steps not marked final: what the facade streams as reasoning. */
function intermediateDeltas(log: TaskEvent[]): string {
  const finalSteps = new Set(log.flatMap((event) => (event.type === 'step.started' && event.step.final === true ? [event.step.id] : [])));
  return log.map((event) => (event.type === 'delta' && !finalSteps.has(event.stepId) ? event.text : '')).join('');
}

interface StreamRead {
  chunks: ChatCompletionChunk[];
  content: string;
  reasoning: string;
  taskId: string;
}

async function readStream(body: OpenAI.Chat.ChatCompletionCreateParamsStreaming): Promise<StreamRead> {
  const { data: stream, response } = await client.chat.completions.create(body).withResponse();
  const read: StreamRead = { chunks: [], content: '', reasoning: '', taskId: response.headers.get('x-task-id') ?? '' };
  for await (const chunk of stream) {
    read.chunks.push(chunk);
    read.content += chunk.choices[0]?.delta.content ?? '';
    read.reasoning += reasoningOf(chunk);
  }
  return read;
}

test('models: the list is the pattern registry, each retrievable; unknown ids are 404', async () => {
  const ids = await listModelIds();
  const patterns = (await requestJson<{ patterns: Array<{ name: string }> }>(`${service.api}/patterns`)).body.patterns;
  expect(ids).toEqual(patterns.map((pattern) => `mageagent:${pattern.name}`));
  for (const id of ids) {
    expect(await client.models.retrieve(id)).toMatchObject({ id, object: 'model', owned_by: 'mageagent', created: expect.any(Number) });
  }
  await expect(client.models.retrieve('mageagent:nope')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
});

test('a non-streaming call per model answers a chat.completion that matches its task', async () => {
  const ids = await listModelIds();
  await Promise.all(
    ids.map(async (model) => {
      const { data: completion, response } = await client.chat.completions
        .create({
          model,
          messages: [
            { role: 'system', content: 'Be brief.' },
            { role: 'user', content: `Say hello, ${model}` },
          ],
        })
        .withResponse();
      const taskId = response.headers.get('x-task-id');
      expect(taskId).toMatch(/^[0-9a-f-]{36}$/);
      expect(completion).toMatchObject({ id: `chatcmpl-${taskId}`, object: 'chat.completion', model });
      const choice = completion.choices[0];
      expect(choice?.message.role).toBe('assistant');
      const record = await task(taskId ?? '');
      expect(record).toMatchObject({ status: 'completed', pattern: model.slice('mageagent:'.length) });
      const callCount = record.result?.toolCalls.length ?? 0;
      // The tools pattern answers with calls only: content null and finish_reason tool_calls, as OpenAI does.
      if (callCount > 0) {
        expect(choice?.finish_reason).toBe('tool_calls');
        expect(choice?.message.tool_calls).toHaveLength(callCount);
        expect(choice?.message.content ?? '').toBe(record.result?.content);
      } else {
        expect(choice?.finish_reason).toBe('stop');
        expect(choice?.message.content?.length).toBeGreaterThan(0);
        expect(choice?.message.content).toBe(record.result?.content);
      }
      // usage is every model call of the pattern, not just the one that wrote the answer.
      const steps = record.result?.steps ?? [];
      expect(completion.usage?.completion_tokens).toBeGreaterThan(0);
      expect(completion.usage?.completion_tokens).toBe(steps.reduce((sum, step) => sum + step.usage.completionTokens, 0));
      expect(completion.usage?.total_tokens).toBe(record.result?.usage.totalTokens);
      expect((completion as unknown as { mageagent: unknown }).mageagent).toEqual({
        taskId,
        pattern: record.result?.pattern ?? record.pattern,
        steps,
        route: record.result?.route ?? null,
        approved: record.result?.approved ?? null,
        warnings: record.result?.warnings ?? [],
      });
    }),
  );
});

test('a streaming call per model: concatenated content is the task result; intermediate steps stream as reasoning', async () => {
  const ids = await listModelIds();
  const reads = await Promise.all(
    ids.map(async (model) => ({ model, read: await readStream({ model, stream: true, messages: [{ role: 'user', content: `Stream please, ${model}` }] }) })),
  );
  for (const { model, read } of reads) {
    expect(read.chunks[0]?.choices[0]?.delta.role).toBe('assistant');
    for (const chunk of read.chunks) expect(chunk).toMatchObject({ id: `chatcmpl-${read.taskId}`, object: 'chat.completion.chunk', model });
    const last = read.chunks[read.chunks.length - 1];
    const record = await waitForTask(service.api, read.taskId);
    expect(record.status).toBe('completed');
    expect(last?.choices[0]?.finish_reason).toBe((record.result?.toolCalls.length ?? 0) > 0 ? 'tool_calls' : 'stop');
    expect((last as unknown as { mageagent?: { taskId: string } }).mageagent?.taskId).toBe(read.taskId);
    expect(read.content).toBe(record.result?.content);
    const intermediate = intermediateDeltas(await events(read.taskId));
    // Reasoning is the intermediate steps' text, each step on its own paragraph.
    expect(read.reasoning.replace(/\s+/g, '')).toBe(intermediate.replace(/\s+/g, ''));
    if ((record.result?.steps.length ?? 0) > 1) expect(read.reasoning).not.toBe('');
  }
});

test('the Mixture-of-Agents models: listed, and their references and critiques stream as reasoning before the answer', async () => {
  const ids = await listModelIds();
  for (const name of ['moa', 'moa-deep', 'self-moa', 'self-consistent', 'critic']) expect(ids).toContain(`mageagent:${name}`);
  const moa = await readStream({ model: 'mageagent:moa', stream: true, messages: [{ role: 'user', content: 'Three views on caching, please' }] });
  const log = await events(moa.taskId);
  const referenceIds = new Set(log.flatMap((event) => (event.type === 'step.started' && event.step.kind === 'reference' ? [event.step.id] : [])));
  expect(referenceIds.size).toBe(3);
  for (const id of referenceIds) {
    const text = log.map((event) => (event.type === 'delta' && event.stepId === id ? event.text : '')).join('');
    expect(moa.reasoning).toContain(text.trim());
  }
  expect(moa.content).toMatch(/^Synthesised from 3 responses:/);
  // Reasoning comes first: no reasoning chunk follows the first content chunk.
  const firstContent = moa.chunks.findIndex((chunk) => (chunk.choices[0]?.delta.content ?? '') !== '');
  expect(moa.chunks.slice(firstContent).some((chunk) => reasoningOf(chunk) !== '')).toBe(false);

  const critic = await readStream({ model: 'mageagent:critic', stream: true, messages: [{ role: 'user', content: 'Write a retry loop' }] });
  expect(critic.reasoning).toMatch(/ISSUES_FOUND: YES/);
  expect(critic.content).toBe((await task(critic.taskId)).result?.content);
});

test('stream_options.include_usage adds a final usage chunk with no choices', async () => {
  const read = await readStream({
    model: 'mageagent:primary',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'count my tokens' }],
  });
  const usageChunk = read.chunks[read.chunks.length - 1];
  expect(usageChunk?.choices).toEqual([]);
  const record = await waitForTask(service.api, read.taskId);
  expect(usageChunk?.usage).toEqual({
    prompt_tokens: record.result?.usage.promptTokens,
    completion_tokens: record.result?.usage.completionTokens,
    total_tokens: record.result?.usage.totalTokens,
  });
  for (const chunk of read.chunks.slice(0, -1)) expect(chunk.usage).toBeNull();
});

test('max_tokens cuts the answer and finish_reason says length', async () => {
  const completion = await client.chat.completions.create({
    model: 'mageagent:primary',
    max_tokens: 5,
    messages: [{ role: 'user', content: 'a long one [[sim: tokens=50]]' }],
  });
  expect(completion.choices[0]?.finish_reason).toBe('length');
  expect(completion.usage?.completion_tokens).toBe(5);
});

test('tool exchanges and multi-part content are accepted and reach the models as text', async () => {
  const messages: ChatCompletionMessageParam[] = [
    {
      role: 'developer',
      content: [
        { type: 'text', text: 'Use ' },
        { type: 'text', text: 'tools.' },
      ],
    },
    { role: 'user', content: 'Weather in Paris?' },
    {
      role: 'assistant',
      content: null,
      tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }],
    },
    { role: 'tool', tool_call_id: 'call_1', content: '{"celsius":21}' },
    { role: 'user', content: 'And so?' },
  ];
  const { data: completion, response } = await client.chat.completions
    // Fields this service does not use (sampling knobs, vendor extensions) are ignored, not refused.
    .create({ model: 'mageagent:validator', messages, top_p: 0.5, seed: 7, user: 'u-42', metadata: { ticket: 'T-1' }, ...{ vendor_knob: true } })
    .withResponse();
  expect(completion.choices[0]?.message.content).not.toBe('');
  const record = await task(response.headers.get('x-task-id') ?? '');
  expect(record.metadata).toEqual({ ticket: 'T-1', user: 'u-42' });
  expect(record.input.messages).toEqual([
    { role: 'system', content: 'Use tools.' },
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: 'Tool call call_1: get_weather {"city":"Paris"}' },
    { role: 'user', content: 'Result of tool call call_1 (get_weather):\n{"celsius":21}' },
    { role: 'user', content: 'And so?' },
  ]);
});

describe('errors are OpenAI errors the SDK understands', () => {
  test('an unknown model raises NotFoundError listing the models; a bare pattern name is not guessed at', async () => {
    for (const model of ['gpt-4o', 'primary']) {
      const error = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(OpenAI.NotFoundError);
      expect((error as InstanceType<typeof OpenAI.NotFoundError>).error).toMatchObject({
        type: 'invalid_request_error',
        param: 'model',
        code: 'model_not_found',
        message: expect.stringContaining('mageagent:primary'),
      });
    }
  });

  test('bad requests raise BadRequestError naming the param', async () => {
    const cases: Array<[Record<string, unknown>, string, string]> = [
      [{ model: 'mageagent:primary' }, 'messages', 'missing_required_parameter'],
      [{ model: 'mageagent:primary', messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role', 'invalid_value'],
      [{ model: 'mageagent:primary', messages: 'hi' }, 'messages', 'invalid_type'],
      [{ model: 'mageagent:primary', n: 2, messages: [{ role: 'user', content: 'x' }] }, 'n', 'unsupported_value'],
      [
        { model: 'mageagent:primary', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] },
        'messages[0].content[0].type',
        'unsupported_value',
      ],
      [{ model: 'mageagent:primary', temperature: 3, messages: [{ role: 'user', content: 'x' }] }, 'temperature', 'invalid_value'],
    ];
    for (const [body, param, code] of cases) {
      const error = await client.chat.completions
        .create(body as unknown as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming)
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      expect((error as InstanceType<typeof OpenAI.BadRequestError>).error).toEqual({ message: expect.any(String), type: 'invalid_request_error', param, code });
    }
  });

  test('unreadable bodies, unknown routes and wrong methods under /v1 answer in OpenAI shape', async () => {
    const openAIError = (status: number) => ({
      status,
      body: { error: { message: expect.any(String), type: 'invalid_request_error', param: null, code: expect.anything() } },
    });
    const malformed = await requestJson(`${service.api}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"model": ',
    });
    expect(malformed).toMatchObject({ status: 400, body: { error: { type: 'invalid_request_error', param: null } } });
    expect(await requestJson(`${service.api}/v1/embeddings`, { method: 'POST' })).toMatchObject(openAIError(404));
    expect(await requestJson(`${service.api}/v1/chat/completions`)).toMatchObject(openAIError(405));
    // A path that does not URI-decode is the client's mistake, not a 500.
    expect(await requestJson(`${service.api}/v1/models/%E0%A4%A`)).toMatchObject({ status: 400, body: { error: { type: 'invalid_request_error' } } });
    expect(await requestJson(`${service.api}/tasks/%E0%A4%A`)).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION_FAILED' } } });
    // The rest of the API keeps its own shape.
    expect((await requestJson(`${service.api}/nope`)).body).toMatchObject({ error: { code: 'NOT_FOUND' } });
  });

  test('a failed task answers its error and status, with X-Task-Id; streaming it raises mid-stream', async () => {
    const failing = { model: 'mageagent:primary', messages: [{ role: 'user' as const, content: 'broken [[sim: error=500]]' }] };
    const response = await postJson(`${service.api}/v1/chat/completions`, failing);
    expect(response.status).toBe(503);
    expect(response.body).toEqual({ error: { message: expect.stringMatching(/500/), type: 'server_error', param: null, code: 'model_unavailable' } });
    const taskId = response.headers.get('x-task-id') ?? '';
    expect((await task(taskId)).error).toMatchObject({ code: 'MODEL_UNAVAILABLE' });

    const streamed = await readStream({ ...failing, stream: true }).catch((caught: unknown) => caught);
    expect(streamed).toBeInstanceOf(OpenAI.APIError);
    expect((streamed as InstanceType<typeof OpenAI.APIError>).error).toMatchObject({ type: 'server_error', code: 'model_unavailable' });
  });
});

test('a client that disconnects mid-stream cancels its task; metadata.background keeps it running', async () => {
  const statsBefore = (await requestJson(`${service.sim}/sim/stats`)).body;
  const abandon = async (metadata?: Record<string, string>, prompt = 'slow [[sim: tps=5; tokens=200]]') => {
    const controller = new AbortController();
    const { data: stream, response } = await client.chat.completions
      .create(
        { model: 'mageagent:primary', stream: true, messages: [{ role: 'user', content: prompt }], ...(metadata && { metadata }) },
        { signal: controller.signal },
      )
      .withResponse();
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta.content || reasoningOf(chunk)) break;
    }
    controller.abort();
    return response.headers.get('x-task-id') ?? '';
  };

  const cancelled = await abandon();
  const record = await eventually(
    async () => {
      const current = await task(cancelled);
      return current.status === 'cancelled' ? current : undefined;
    },
    10_000,
    'the task to be cancelled',
  );
  expect(record.error).toMatchObject({ code: 'CANCELLED', message: expect.stringContaining('disconnected') });
  await eventually(
    async () => ((await requestJson(`${service.sim}/sim/stats`)).body.aborted > statsBefore.aborted ? true : undefined),
    10_000,
    'the model call to be aborted',
  );

  const kept = await abandon({ background: 'true' }, 'slow but wanted [[sim: tps=40; tokens=20]]');
  expect((await waitForTask(service.api, kept)).status).toBe('completed');
});

test('a non-streaming caller that gives up cancels its task too', async () => {
  // The caller never sees X-Task-Id (headers come with the answer), so the task is found by a marker.
  const marker = `probe-${Date.now()}`;
  const controller = new AbortController();
  const call = client.chat.completions
    .create(
      { model: 'mageagent:primary', metadata: { marker }, messages: [{ role: 'user', content: 'slow [[sim: tps=5; tokens=200]]' }] },
      { signal: controller.signal },
    )
    .catch((caught: unknown) => caught);
  const redis = new Redis(REDIS_URL);
  try {
    const store = new TaskStore(redis, service.prefix, { retentionSeconds: 60 });
    const findTask = async () => {
      const keys = await redis.keys(`${service.prefix}:task:{*}`);
      const records = await Promise.all(keys.map((key) => store.get(key.slice(key.indexOf('{') + 1, key.indexOf('}')))));
      return records.find((record) => record?.metadata.marker === marker);
    };
    await eventually(async () => ((await findTask())?.status === 'processing' ? true : undefined), 10_000, 'the task to start');
    controller.abort();
    expect(await call).toBeInstanceOf(OpenAI.APIUserAbortError);
    const cancelled = await eventually(
      async () => {
        const record = await findTask();
        return record?.status === 'cancelled' ? record : undefined;
      },
      10_000,
      'the task to be cancelled',
    );
    expect(cancelled.error).toMatchObject({ code: 'CANCELLED', message: expect.stringContaining('disconnected') });
  } finally {
    redis.disconnect();
  }
});

test('streams carry SSE headers and X-Task-Id, and keep-alive comments while a step is quiet', async () => {
  const response = await fetch(`${service.api}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mageagent:primary', stream: true, messages: [{ role: 'user', content: 'quiet [[sim: ttft=700; tokens=2]]' }] }),
  });
  expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
  expect(response.headers.get('cache-control')).toMatch(/no-cache/);
  expect(response.headers.get('x-accel-buffering')).toBe('no');
  expect(response.headers.get('x-task-id')).toMatch(/^[0-9a-f-]{36}$/);
  const text = await response.text();
  expect(text.match(/^: keep-alive$/gm)?.length ?? 0).toBeGreaterThanOrEqual(2);
  expect(text.endsWith('data: [DONE]\n\n')).toBe(true);
});

test('request tools come back as tool_calls whose arguments parse and validate, streamed or not', async () => {
  const tools: OpenAI.Chat.ChatCompletionTool[] = [
    {
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'Current weather in a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
      },
    },
  ];
  const body = { model: 'mageagent:tools', tools, messages: [{ role: 'user' as const, content: 'Weather in Paris? [[sim: tools=valid]]' }] };
  const isValidWeatherCall = (call: { function: { name: string; arguments: string } }) => {
    const parsed = JSON.parse(call.function.arguments) as Record<string, unknown>;
    return call.function.name === 'get_weather' && typeof parsed.city === 'string' && Object.keys(parsed).every((key) => key === 'city');
  };

  const completion = await client.chat.completions.create(body);
  const choice = completion.choices[0];
  expect(choice?.finish_reason).toBe('tool_calls');
  const calls = choice?.message.tool_calls ?? [];
  expect(calls.length).toBeGreaterThan(0);
  for (const call of calls) {
    expect(call).toMatchObject({ id: expect.any(String), type: 'function' });
    expect(call.type === 'function' && isValidWeatherCall(call)).toBe(true);
  }

  // The SDK's stream helper assembles delta.tool_calls into the same calls.
  const streamed = await client.chat.completions.stream(body).finalChatCompletion();
  expect(streamed.choices[0]?.finish_reason).toBe('tool_calls');
  const streamedCalls = streamed.choices[0]?.message.tool_calls ?? [];
  expect(streamedCalls.length).toBeGreaterThan(0);
  for (const call of streamedCalls) expect(call.type === 'function' && isValidWeatherCall(call)).toBe(true);

  const none = await client.chat.completions.create({ ...body, tool_choice: 'none' });
  expect(none.choices[0]?.finish_reason).toBe('stop');
  expect(none.choices[0]?.message.tool_calls).toBeUndefined();
});

test('response_format json_object is honoured when the role allows structured output', async () => {
  const completion = await client.chat.completions.create({
    model: 'mageagent:primary',
    response_format: { type: 'json_object' },
    messages: [{ role: 'user', content: 'Give me a JSON object describing Paris.' }],
  });
  const content = completion.choices[0]?.message.content ?? '';
  expect(() => JSON.parse(content)).not.toThrow();
  expect(typeof JSON.parse(content)).toBe('object');
});

// Stops the api: keep this test last.
test('an api shutting down ends open chat streams with an error naming the task, which runs on', async () => {
  const { data: stream, response } = await client.chat.completions
    .create({ model: 'mageagent:primary', stream: true, messages: [{ role: 'user', content: 'outlive the api [[sim: tps=40; tokens=40]]' }] })
    .withResponse();
  const taskId = response.headers.get('x-task-id') ?? '';
  const consumed = (async () => {
    for await (const _chunk of stream) {
      // drain until the server ends the stream
    }
  })();
  await eventually(async () => ((await task(taskId)).status === 'processing' ? true : undefined), 10_000, 'the task to start');
  await stopService(service.stack.api);

  const error = await consumed.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(OpenAI.APIError);
  expect((error as InstanceType<typeof OpenAI.APIError>).error).toMatchObject({ code: 'server_shutting_down', message: expect.stringContaining(taskId) });
  const redis = new Redis(REDIS_URL);
  try {
    const store = new TaskStore(redis, service.prefix, { retentionSeconds: 60 });
    await eventually(async () => ((await store.get(taskId))?.status === 'completed' ? true : undefined), 10_000, 'the task to complete');
  } finally {
    redis.disconnect();
  }
});
