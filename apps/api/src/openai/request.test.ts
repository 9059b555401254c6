import { CreateTaskRequestSchema, MAX_MESSAGES, MAX_TEXT_CHARS, ModelUnavailableError, ValidationError } from '@mageagent/core';
import { fromTaskError, OpenAIFacadeError, toOpenAIError } from './errors';
import { parseChatRequest, patternOfModel, runsInBackground, toTaskRequest } from './request';

const patterns = { has: (name: string) => ['primary', 'hybrid'].includes(name), names: () => ['primary', 'hybrid'] };

/** The OpenAI error a call throws. */
function openAIErrorOf(run: () => unknown): OpenAIFacadeError {
  try {
    run();
  } catch (error) {
    if (error instanceof OpenAIFacadeError) return error;
    throw error;
  }
  throw new Error('expected an OpenAIFacadeError');
}

describe('model ids', () => {
  test('mageagent:<pattern> names a pattern', () => {
    expect(patternOfModel('mageagent:hybrid', patterns)).toBe('hybrid');
  });

  test.each(['hybrid', 'mageagent:nope', 'gpt-4o', 'MAGEAGENT:primary'])('%s is 404 model_not_found listing the models', (model) => {
    const error = openAIErrorOf(() => patternOfModel(model, patterns));
    expect(error.status).toBe(404);
    expect(error.body).toEqual({
      message: `The model \`${model}\` does not exist. Available models: mageagent:primary, mageagent:hybrid.`,
      type: 'invalid_request_error',
      param: 'model',
      code: 'model_not_found',
    });
  });
});

describe('parseChatRequest', () => {
  const minimal = { model: 'mageagent:primary', messages: [{ role: 'user', content: 'hi' }] };

  test('ignores fields it does not use and accepts nulls where OpenAI does', () => {
    const request = parseChatRequest({
      ...minimal,
      top_p: 1,
      seed: 3,
      stop: ['x'],
      logit_bias: {},
      vendor: { deep: true },
      temperature: null,
      stream: null,
      tools: null,
    });
    expect(request).toEqual({ ...minimal, temperature: null, stream: null, tools: null });
  });

  test.each<[string, Record<string, unknown>, string, string]>([
    ['a missing field', { model: 'mageagent:primary' }, 'messages', 'missing_required_parameter'],
    ['a wrong type', { ...minimal, model: 7 }, 'model', 'invalid_type'],
    ['an unknown role', { ...minimal, messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role', 'invalid_value'],
    [
      'a tool message without its call id',
      { ...minimal, messages: [{ role: 'tool', content: 'x' }] },
      'messages[0].tool_call_id',
      'missing_required_parameter',
    ],
    ['n > 1', { ...minimal, n: 3 }, 'n', 'unsupported_value'],
    ['stream_options without stream', { ...minimal, stream_options: { include_usage: true } }, 'stream_options', 'invalid_value'],
    ['max_tokens below 1', { ...minimal, max_tokens: 0 }, 'max_tokens', 'invalid_value'],
    [
      'too many metadata keys',
      { ...minimal, metadata: Object.fromEntries(Array.from({ length: 17 }, (_, index) => [`k${index}`, 'v'])) },
      'metadata',
      'invalid_value',
    ],
    ['a non-string metadata value', { ...minimal, metadata: { background: true } }, 'metadata.background', 'invalid_type'],
    [
      'tool_choice naming a function not in tools',
      { ...minimal, tools: [{ type: 'function', function: { name: 'a' } }], tool_choice: { type: 'function', function: { name: 'b' } } },
      'tool_choice',
      'invalid_value',
    ],
    [
      'tool parameters that are not a JSON Schema',
      {
        ...minimal,
        tools: [
          { type: 'function', function: { name: 'a' } },
          { type: 'function', function: { name: 'g', parameters: { type: 'bogus' } } },
        ],
      },
      'tools[1].function.parameters',
      'invalid_value',
    ],
    [
      'two tools of one name',
      {
        ...minimal,
        tools: [
          { type: 'function', function: { name: 'a' } },
          { type: 'function', function: { name: 'a' } },
        ],
      },
      'tools[1].function.name',
      'invalid_value',
    ],
    [
      'tool_choice naming a function that is not a built-in tool, without tools',
      { ...minimal, tool_choice: { type: 'function', function: { name: 'f' } } },
      'tool_choice.function.name',
      'invalid_value',
    ],
    ["tool_choice 'required' with no tools", { ...minimal, tools: [], tool_choice: 'required' }, 'tool_choice', 'invalid_value'],
  ])('%s is a 400 naming its param', (_what, body, param, code) => {
    const error = openAIErrorOf(() => parseChatRequest(body));
    expect(error.status).toBe(400);
    expect(error.body).toMatchObject({ type: 'invalid_request_error', param, code });
  });

  const long = 'x'.repeat(MAX_TEXT_CHARS + 1);
  test.each<[string, Record<string, unknown>, string, string, string]>([
    [
      'a message over MAX_TEXT_CHARS',
      { ...minimal, messages: [{ role: 'user', content: long }] },
      'messages[0].content',
      'string_above_max_length',
      `Invalid 'messages[0].content': string too long. Expected a string with maximum length ${MAX_TEXT_CHARS}, but got a string with length ${MAX_TEXT_CHARS + 1} instead.`,
    ],
    [
      'a text part over MAX_TEXT_CHARS',
      { ...minimal, messages: [{ role: 'user', content: [{ type: 'text', text: long }] }] },
      'messages[0].content[0].text',
      'string_above_max_length',
      `Invalid 'messages[0].content[0].text': string too long. Expected a string with maximum length ${MAX_TEXT_CHARS}, but got a string with length ${MAX_TEXT_CHARS + 1} instead.`,
    ],
    [
      'tool call arguments over MAX_TEXT_CHARS',
      { ...minimal, messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: long } }] }] },
      'messages[0].tool_calls[0].function.arguments',
      'string_above_max_length',
      expect.stringContaining('string too long'),
    ],
    [
      'more than MAX_MESSAGES messages',
      { ...minimal, messages: Array.from({ length: MAX_MESSAGES + 1 }, () => ({ role: 'user', content: 'hi' })) },
      'messages',
      'array_above_max_length',
      `Invalid 'messages': array too long. Expected an array with maximum length ${MAX_MESSAGES}, but got an array with length ${MAX_MESSAGES + 1} instead.`,
    ],
    [
      'a metadata value over 512 characters',
      { ...minimal, metadata: { note: 'x'.repeat(513) } },
      'metadata.note',
      'string_above_max_length',
      expect.stringContaining('maximum length 512'),
    ],
  ])("%s is a 400 in OpenAI's words, naming its param, without the value", (_what, body, param, code, message) => {
    const error = openAIErrorOf(() => parseChatRequest(body));
    expect(error.status).toBe(400);
    expect(error.body).toEqual({ type: 'invalid_request_error', param, code, message });
    expect(error.body.message).not.toContain('xxxxxxxx');
  });

  test('a body that is not an object is a 400', () => {
    expect(openAIErrorOf(() => parseChatRequest(undefined)).status).toBe(400);
    expect(openAIErrorOf(() => parseChatRequest([minimal])).status).toBe(400);
  });

  test('background is the metadata string "true" only', () => {
    expect(runsInBackground(parseChatRequest({ ...minimal, metadata: { background: 'true' } }))).toBe(true);
    expect(runsInBackground(parseChatRequest({ ...minimal, metadata: { background: 'yes' } }))).toBe(false);
    expect(runsInBackground(parseChatRequest(minimal))).toBe(false);
  });
});

describe('toTaskRequest', () => {
  const map = (body: Record<string, unknown>) => toTaskRequest(parseChatRequest({ model: 'mageagent:hybrid', ...body }), 'hybrid');

  test('maps the OpenAI fields to a POST /tasks body that its own schema accepts', () => {
    const tools = [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object' } } }];
    const body = map({
      messages: [{ role: 'user', content: 'hi' }],
      temperature: 0.2,
      max_tokens: 100,
      max_completion_tokens: 50,
      tools,
      tool_choice: { type: 'function', function: { name: 'lookup' } },
      response_format: { type: 'json_object' },
      user: 'u-1',
      metadata: { user: 'overridden', team: 'a' },
    });
    expect(body).toEqual({
      messages: [{ role: 'user', content: 'hi' }],
      pattern: 'hybrid',
      options: { temperature: 0.2, maxTokens: 50 },
      tools,
      toolChoice: { type: 'function', function: { name: 'lookup' } },
      responseFormat: { type: 'json_object' },
      metadata: { user: 'u-1', team: 'a' },
    });
    expect(CreateTaskRequestSchema.safeParse(body).success).toBe(true);
  });

  test('leaves out what the request did not set', () => {
    expect(map({ messages: [{ role: 'user', content: 'hi' }], temperature: null })).toEqual({ messages: [{ role: 'user', content: 'hi' }], pattern: 'hybrid' });
  });

  test('multi-part text is joined; developer is system; refusals are text', () => {
    const { messages } = map({
      messages: [
        {
          role: 'developer',
          content: [
            { type: 'text', text: 'Be ' },
            { type: 'text', text: 'brief.' },
          ],
        },
        { role: 'user', content: [{ type: 'text', text: 'hi' }], name: 'ann' },
        { role: 'assistant', content: [{ type: 'refusal', refusal: 'No.' }] },
      ],
    });
    expect(messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'hi', name: 'ann' },
      { role: 'assistant', content: 'No.' },
    ]);
  });

  test('tool calls and their results become text, consecutive results one user message', () => {
    const { messages } = map({
      messages: [
        { role: 'user', content: 'Weather in Paris and Rome?' },
        {
          role: 'assistant',
          content: 'Checking.',
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'weather', arguments: '{"city":"Paris"}' } },
            { id: 'call_2', type: 'function', function: { name: 'weather', arguments: '{"city":"Rome"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '21' },
        { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: '25' }] },
        { role: 'tool', tool_call_id: 'call_9', content: '?' },
        { role: 'assistant', content: null, function_call: { name: 'legacy', arguments: '{}' } },
        { role: 'function', name: 'legacy', content: 'ok' },
      ],
    });
    expect(messages).toEqual([
      { role: 'user', content: 'Weather in Paris and Rome?' },
      { role: 'assistant', content: 'Checking.\nTool call call_1: weather {"city":"Paris"}\nTool call call_2: weather {"city":"Rome"}' },
      {
        role: 'user',
        content: 'Result of tool call call_1 (weather):\n21\n\nResult of tool call call_2 (weather):\n25\n\nResult of tool call call_9:\n?',
      },
      { role: 'assistant', content: 'Function call: legacy {}' },
      { role: 'user', content: 'Result of function legacy:\nok' },
    ]);
  });

  test('a message within bounds field by field but not as the models read it is refused, naming it', () => {
    const half = 'x'.repeat(MAX_TEXT_CHARS / 2 + 1);
    const parts = openAIErrorOf(() =>
      map({
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: half },
              { type: 'text', text: half },
            ],
          },
        ],
      }),
    );
    expect(parts.body).toMatchObject({ param: 'messages[0]', code: 'string_above_max_length' });
    expect(parts.body.message).toBe(
      `Invalid 'messages[0]': the text the models would read is ${MAX_TEXT_CHARS + 2} characters; at most ${MAX_TEXT_CHARS} are accepted.`,
    );
    const results = openAIErrorOf(() =>
      map({
        messages: [
          { role: 'user', content: 'go' },
          {
            role: 'assistant',
            content: null,
            tool_calls: [
              { id: 'a', type: 'function', function: { name: 'f', arguments: '{}' } },
              { id: 'b', type: 'function', function: { name: 'f', arguments: '{}' } },
            ],
          },
          { role: 'tool', tool_call_id: 'a', content: half },
          { role: 'tool', tool_call_id: 'b', content: half },
        ],
      }),
    );
    expect(results.body).toMatchObject({ param: 'messages[3]', code: 'string_above_max_length' });
    expect(results.body.message).toMatch(/^Invalid 'messages\[2\]' to 'messages\[3\]' \(tool results, read as one message\)/);
    // Within bounds once converted: the task's own schema accepts what the facade accepts.
    const fits = map({ messages: [{ role: 'user', content: 'x'.repeat(MAX_TEXT_CHARS) }] });
    expect(CreateTaskRequestSchema.safeParse(fits).success).toBe(true);
  });

  test('images, audio and files are refused by name', () => {
    const error = openAIErrorOf(() =>
      map({
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'look' },
              { type: 'image_url', image_url: { url: 'x' } },
            ],
          },
        ],
      }),
    );
    expect(error.body).toMatchObject({ param: 'messages[0].content[1].type', code: 'unsupported_value' });
  });
});

describe('errors in OpenAI shape', () => {
  test('task errors keep core statuses and say whether a retry may help', () => {
    expect(fromTaskError({ code: 'MODEL_UNAVAILABLE', message: 'down', retryable: true })).toMatchObject({
      status: 503,
      retryable: true,
      body: { message: 'down', type: 'server_error', param: null, code: 'model_unavailable' },
    });
    expect(fromTaskError({ code: 'TASK_TIMEOUT', message: 'slow', retryable: false })).toMatchObject({ status: 504, retryable: false });
    expect(fromTaskError({ code: 'CANCELLED', message: 'gone', retryable: false })).toMatchObject({
      status: 409,
      body: { type: 'invalid_request_error', code: 'cancelled' },
    });
    expect(fromTaskError({ code: 'INTERNAL', message: 'oops', retryable: false }).status).toBe(500);
  });

  test('body-parser errors, core errors and unknown errors', () => {
    expect(toOpenAIError(Object.assign(new Error('x'), { type: 'entity.parse.failed' }))).toMatchObject({
      status: 400,
      body: { type: 'invalid_request_error' },
    });
    expect(toOpenAIError(Object.assign(new Error('x'), { type: 'entity.too.large' }))).toMatchObject({ status: 413, body: { code: 'request_too_large' } });
    expect(toOpenAIError(new ValidationError('bad'))).toMatchObject({ status: 400, body: { message: 'bad', code: 'validation_failed' } });
    expect(toOpenAIError(new ModelUnavailableError('down'))).toMatchObject({ status: 503, retryable: true });
    const unknown = toOpenAIError(new Error('secret detail at file.ts:12'));
    expect(unknown.status).toBe(500);
    expect(JSON.stringify(unknown.body)).not.toMatch(/secret|file\.ts/);
  });
});
