import { CreateTaskRequestSchema, MAX_CONTENT_PARTS, MAX_MESSAGES, MAX_TEXT_CHARS, zodIssuesToDetails } from './schemas';

/** The `details` a POST /tasks body gets, or 'ok'. */
function detailsOf(body: unknown): Array<{ path: string; message: string }> | 'ok' {
  const parsed = CreateTaskRequestSchema.safeParse(body);
  return parsed.success ? 'ok' : zodIssuesToDetails(parsed.error);
}

const text = (chars: number) => 'x'.repeat(chars);
const user = (content: unknown) => ({ role: 'user', content });

describe('per-field bounds of POST /tasks', () => {
  test('a prompt of MAX_TEXT_CHARS is accepted; one more is a 400 naming prompt, with the length and not the text', () => {
    expect(detailsOf({ prompt: text(MAX_TEXT_CHARS) })).toBe('ok');
    expect(detailsOf({ prompt: text(MAX_TEXT_CHARS + 1) })).toEqual([
      { path: 'prompt', message: `must be at most ${MAX_TEXT_CHARS} characters (got ${MAX_TEXT_CHARS + 1})` },
    ]);
  });

  test('each message content is bounded alike, as a string or as parts joined', () => {
    expect(detailsOf({ messages: [user(text(MAX_TEXT_CHARS))] })).toBe('ok');
    expect(detailsOf({ messages: [user('hi'), user(text(MAX_TEXT_CHARS + 1))] })).toEqual([
      { path: 'messages.1.content', message: `must be at most ${MAX_TEXT_CHARS} characters (got ${MAX_TEXT_CHARS + 1})` },
    ]);
    const half = { type: 'text', text: text(MAX_TEXT_CHARS / 2 + 1) };
    expect(detailsOf({ messages: [user([half, half])] })).toEqual([
      { path: 'messages.0.content', message: `parts must be at most ${MAX_TEXT_CHARS} characters together (got ${MAX_TEXT_CHARS + 2})` },
    ]);
    expect(detailsOf({ messages: [user([{ type: 'text', text: text(MAX_TEXT_CHARS + 1) }])] })).toEqual([
      { path: 'messages.0.content.0.text', message: `must be at most ${MAX_TEXT_CHARS} characters (got ${MAX_TEXT_CHARS + 1})` },
    ]);
    expect(detailsOf({ messages: [user(Array.from({ length: MAX_CONTENT_PARTS + 1 }, () => ({ type: 'text', text: 'a' })))] })).not.toBe('ok');
  });

  test('at most MAX_MESSAGES messages', () => {
    expect(detailsOf({ messages: Array.from({ length: MAX_MESSAGES }, () => user('hi')) })).toBe('ok');
    expect(detailsOf({ messages: Array.from({ length: MAX_MESSAGES + 1 }, () => user('hi')) })).toEqual([
      { path: 'messages', message: `must be at most ${MAX_MESSAGES} messages (got ${MAX_MESSAGES + 1})` },
    ]);
  });

  test.each<[string, Record<string, unknown>, string]>([
    ['maxTokens', { maxTokens: 131_073 }, 'options.maxTokens'],
    ['maxTokens', { maxTokens: 0 }, 'options.maxTokens'],
    ['timeoutMs', { timeoutMs: 24 * 3600 * 1000 + 1 }, 'options.timeoutMs'],
    ['timeoutMs', { timeoutMs: 99 }, 'options.timeoutMs'],
    ['temperature', { temperature: 2.5 }, 'options.temperature'],
    ['maxRevisions', { maxRevisions: 6 }, 'options.maxRevisions'],
  ])('options.%s out of bounds is named', (_name, options, path) => {
    const details = detailsOf({ prompt: 'hi', options });
    expect(details).toHaveLength(1);
    expect(details).toEqual([{ path, message: expect.any(String) }]);
  });

  test.each<[string, Record<string, unknown>, string]>([
    ['metadata over 16 KB', { metadata: { note: text(20_000) } }, 'metadata'],
    ['a tool_choice name over 64 characters', { toolChoice: { type: 'function', function: { name: text(65) } } }, 'toolChoice.function.name'],
    [
      'a json_schema description over 4 096 characters',
      { responseFormat: { type: 'json_schema', json_schema: { name: 's', description: text(4097) } } },
      'responseFormat.json_schema.description',
    ],
  ])('%s is a 400 naming the field', (_what, fields, path) => {
    expect(detailsOf({ prompt: 'hi', ...fields })).toEqual([{ path, message: expect.any(String) }]);
  });

  test('an error never echoes the oversized text', () => {
    const details = detailsOf({ prompt: `secret-${text(MAX_TEXT_CHARS)}` });
    expect(JSON.stringify(details)).not.toContain('secret-');
    expect(JSON.stringify(details).length).toBeLessThan(200);
  });
});
