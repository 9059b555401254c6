import type { StepInfo, StepRecord, TaskEvent, TaskEventPayload, TaskResult } from '@mageagent/core';
import { buildChatCompletion, finishReasonOf } from './completion';
import { ChatStreamTranslator, type StreamFrame, type StreamStep } from './stream';

const task = { id: '01a1fbeb-16d2-75fb-93db-d4bbd9f7c1ce', pattern: 'validated', createdAt: '2026-01-01T00:00:10.000Z' };

function stepRecord(overrides: Partial<StepRecord>): StepRecord {
  return {
    id: 'answer-1',
    name: 'answer',
    role: 'primary',
    model: 'big',
    host: 'gpu',
    attempt: 1,
    startedAt: task.createdAt,
    durationMs: 5,
    usage: { promptTokens: 3, completionTokens: 4, totalTokens: 7 },
    ...overrides,
  };
}

function result(overrides: Partial<TaskResult> = {}): TaskResult {
  return {
    content: 'Hello world',
    toolCalls: [],
    steps: [stepRecord({})],
    usage: { promptTokens: 3, completionTokens: 4, totalTokens: 7 },
    model: 'big',
    ...overrides,
  };
}

/** Feeds payloads through a translator as numbered events; returns every step. */
function run(payloads: TaskEventPayload[], options: { includeUsage?: boolean; maxTokens?: number } = {}) {
  const translator = new ChatStreamTranslator({ task, model: 'mageagent:validated', includeUsage: options.includeUsage ?? false, ...options });
  const frames: StreamFrame[] = [translator.start()];
  let end: StreamStep['end'];
  payloads.forEach((payload, index) => {
    const step = translator.accept({ ...payload, taskId: task.id, seq: index + 1, at: task.createdAt } as TaskEvent);
    frames.push(...step.frames);
    end ??= step.end;
  });
  const deltas = frames.flatMap((frame) => ('choices' in frame ? frame.choices.map((choice) => choice.delta) : []));
  return {
    frames,
    end,
    content: deltas.map((delta) => delta.content ?? '').join(''),
    reasoning: deltas.map((delta) => delta.reasoning_content ?? '').join(''),
    errors: frames.flatMap((frame) => ('error' in frame ? [frame.error] : [])),
  };
}

const started = (id: string, extra: Partial<StepInfo> = {}): TaskEventPayload => ({
  type: 'step.started',
  step: { id, name: id, role: 'primary', model: 'big', host: 'gpu', attempt: 1, ...extra },
});
const delta = (stepId: string, text: string): TaskEventPayload => ({ type: 'delta', stepId, text });
const processing: TaskEventPayload = { type: 'status', status: 'processing' };
const completed = (content = 'Hello world'): TaskEventPayload[] => [
  { type: 'result', result: result({ content }) },
  { type: 'status', status: 'completed' },
];

test('the first chunk announces the assistant; chunks carry the call identity in OpenAI order', () => {
  const { frames } = run([]);
  expect(frames[0]).toEqual({
    id: `chatcmpl-${task.id}`,
    object: 'chat.completion.chunk',
    created: Date.parse(task.createdAt) / 1000,
    model: 'mageagent:validated',
    choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
  });
  expect(Object.keys(frames[0] ?? {})).toEqual(['id', 'object', 'created', 'model', 'choices']);
});

test('final steps stream as content, the others as reasoning, one paragraph per step', () => {
  const read = run([
    processing,
    started('draft-1', { kind: 'draft' }),
    delta('draft-1', 'Draft '),
    delta('draft-1', 'text'),
    started('review-2', { kind: 'review' }),
    delta('review-2', 'FAIL'),
    started('revision-3', { kind: 'revision', final: true }),
    delta('revision-3', 'Hello '),
    delta('revision-3', 'world'),
    ...completed(),
  ]);
  expect(read.reasoning).toBe('Draft text\n\nFAIL');
  expect(read.content).toBe('Hello world');
  expect(read.end).toBe('done');
  const last = read.frames[read.frames.length - 1];
  expect(last).toMatchObject({ choices: [{ delta: {}, finish_reason: 'stop' }], mageagent: { taskId: task.id, pattern: 'validated' } });
});

test('with no final step the result content is sent whole when it arrives', () => {
  const read = run([processing, started('primary-1'), delta('primary-1', 'Hello world'), ...completed()]);
  expect(read.reasoning).toBe('Hello world');
  expect(read.content).toBe('Hello world');
});

test('the result completes content a final step left short', () => {
  const read = run([processing, started('answer-1', { final: true }), delta('answer-1', 'Hello'), ...completed()]);
  expect(read.content).toBe('Hello world');
});

test('a retried final step is held back while it repeats what was sent, then streams on', () => {
  const read = run([
    processing,
    started('answer-1', { final: true }),
    delta('answer-1', 'Hello '),
    started('answer-1', { final: true, attempt: 2 }),
    delta('answer-1', 'Hel'),
    delta('answer-1', 'lo wo'),
    delta('answer-1', 'rld'),
    ...completed(),
  ]);
  const contentDeltas = read.frames.flatMap((frame) =>
    'choices' in frame ? frame.choices.flatMap((choice) => (choice.delta.content ? [choice.delta.content] : [])) : [],
  );
  expect(contentDeltas).toEqual(['Hello ', 'wo', 'rld']);
  expect(read.content).toBe('Hello world');
});

test('a restarted task (second processing) is held back the same way', () => {
  const read = run([
    processing,
    started('answer-1', { final: true }),
    delta('answer-1', 'Hello '),
    { type: 'status', status: 'processing', attempt: 2 },
    started('answer-1', { final: true }),
    delta('answer-1', 'Hello world'),
    ...completed(),
  ]);
  expect(read.content).toBe('Hello world');
  expect(read.errors).toEqual([]);
});

test('a retry that says something else ends the stream with an error naming the task', () => {
  const read = run([
    processing,
    started('answer-1', { final: true }),
    delta('answer-1', 'Hello '),
    started('answer-1', { final: true, attempt: 2 }),
    delta('answer-1', 'Goodbye'),
    ...completed('Goodbye'),
  ]);
  expect(read.end).toBe('error');
  expect(read.content).toBe('Hello ');
  expect(read.errors).toEqual([{ message: expect.stringContaining(`GET /tasks/${task.id}`), type: 'server_error', param: null, code: 'answer_diverged' }]);
  expect(read.frames.filter((frame) => 'error' in frame)).toHaveLength(1);
});

test('tool calls stream as delta.tool_calls with finish_reason tool_calls; usage comes last with no choices', () => {
  const toolResult = result({
    toolCalls: [
      { id: 'call_1', tool: 'weather', arguments: { city: 'Paris' } },
      { id: 'call_2', tool: 'time', arguments: {} },
    ],
  });
  const read = run([processing, { type: 'result', result: toolResult }], { includeUsage: true });
  const toolDeltas = read.frames.flatMap((frame) => ('choices' in frame ? frame.choices.flatMap((choice) => choice.delta.tool_calls ?? []) : []));
  expect(toolDeltas).toEqual([
    { index: 0, id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
    { index: 1, id: 'call_2', type: 'function', function: { name: 'time', arguments: '{}' } },
  ]);
  const [finish, usage] = read.frames.slice(-2);
  expect(finish).toMatchObject({ choices: [{ finish_reason: 'tool_calls' }], usage: null });
  expect(usage).toMatchObject({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } });
  expect(read.frames.slice(0, -1).every((frame) => 'usage' in frame && frame.usage === null)).toBe(true);
});

test('a failed or cancelled task ends the stream with its error in OpenAI shape', () => {
  const failed = run([
    processing,
    { type: 'error', error: { code: 'MODEL_TIMEOUT', message: 'too slow', retryable: true } },
    { type: 'status', status: 'failed' },
  ]);
  expect(failed.end).toBe('error');
  expect(failed.errors).toEqual([{ message: 'too slow', type: 'server_error', param: null, code: 'model_timeout' }]);
  const cancelled = run([processing, { type: 'status', status: 'cancelled' }]);
  expect(cancelled.errors).toEqual([{ message: 'the task was cancelled', type: 'invalid_request_error', param: null, code: 'cancelled' }]);
});

describe('finish reasons and the non-streaming completion', () => {
  test('length when the answering call used the whole token limit; intermediate steps do not count', () => {
    const cut = result({ steps: [stepRecord({ usage: { promptTokens: 1, completionTokens: 5, totalTokens: 6 } })] });
    expect(finishReasonOf(cut, 5)).toBe('length');
    expect(finishReasonOf(cut, 6)).toBe('stop');
    expect(finishReasonOf(cut, undefined)).toBe('stop');
    const reviewedLater = result({
      steps: [stepRecord({}), stepRecord({ id: 'review-2', kind: 'review', usage: { promptTokens: 1, completionTokens: 5, totalTokens: 6 } })],
    });
    expect(finishReasonOf(reviewedLater, 5)).toBe('stop');
  });

  test('a completed task becomes a chat.completion with tool calls and the pipeline record', () => {
    const done = result({
      toolCalls: [{ id: 'call_1', tool: 'weather', arguments: { city: 'Paris' } }],
      route: { pattern: 'hybrid', route: 'coding', method: 'keywords', reason: 'code words' },
      pattern: 'hybrid',
      approved: true,
    });
    expect(buildChatCompletion(task, done, 'mageagent:auto', undefined)).toEqual({
      id: `chatcmpl-${task.id}`,
      object: 'chat.completion',
      created: Date.parse(task.createdAt) / 1000,
      model: 'mageagent:auto',
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content: 'Hello world',
            refusal: null,
            tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } }],
          },
          logprobs: null,
          finish_reason: 'tool_calls',
        },
      ],
      usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
      mageagent: { taskId: task.id, pattern: 'hybrid', steps: done.steps, route: done.route, approved: true, warnings: [] },
    });
  });
});
