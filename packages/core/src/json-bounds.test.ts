import { checkJsonBounds, boundedJson, type JsonBounds } from './json-bounds';
import { CreateTaskRequestSchema, zodIssuesToDetails } from './schemas';
import { z } from 'zod';

/** `{"a": {"a": ... {}}}`, `levels` objects deep, built without recursion. */
function nested(levels: number): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  let innermost = root;
  for (let level = 1; level < levels; level += 1) {
    const next: Record<string, unknown> = {};
    innermost.a = next;
    innermost = next;
  }
  return root;
}

const bounds: JsonBounds = { maxDepth: 4, maxChars: 100 };

test('depth counts objects and arrays; a value at the limit passes, one level more does not', () => {
  expect(checkJsonBounds(nested(4), bounds)).toBeUndefined();
  expect(checkJsonBounds(nested(5), bounds)).toMatch(/deeper than 4/);
  expect(checkJsonBounds([[[[1]]]], bounds)).toBeUndefined();
  expect(checkJsonBounds([[[[[1]]]]], bounds)).toMatch(/deeper than 4/);
  expect(checkJsonBounds('a string', bounds)).toBeUndefined();
});

test('size is the value written as JSON, about; strings, keys and numbers all count', () => {
  expect(checkJsonBounds({ text: 'x'.repeat(80) }, bounds)).toBeUndefined();
  expect(checkJsonBounds({ text: 'x'.repeat(100) }, bounds)).toMatch(/larger than 100/);
  expect(checkJsonBounds({ ['k'.repeat(100)]: 1 }, bounds)).toMatch(/larger than 100/);
  expect(
    checkJsonBounds(
      Array.from({ length: 60 }, () => 1),
      bounds,
    ),
  ).toMatch(/larger than 100/);
  expect(JSON.stringify({ text: 'x'.repeat(80) }).length).toBeLessThanOrEqual(100);
});

test('a value far too deep for recursive code is measured without overflowing the stack', () => {
  const deep = nested(200_000);
  expect(() => JSON.stringify(deep)).toThrow(RangeError);
  expect(checkJsonBounds(deep, { maxDepth: 32, maxChars: 10_000_000 })).toMatch(/deeper than 32/);
});

test('boundedJson makes a schema refuse oversized values with an issue at the field', () => {
  const schema = z.object({ metadata: boundedJson(z.record(z.string(), z.unknown()), bounds) });
  const parsed = schema.safeParse({ metadata: nested(10) });
  expect(parsed.success).toBe(false);
  if (!parsed.success) expect(zodIssuesToDetails(parsed.error)).toEqual([{ path: 'metadata', message: 'is nested deeper than 4 levels' }]);
});

test('task requests bound metadata, tool schemas and response-format schemas, naming the field', () => {
  const deep = nested(10_000);
  const details = (body: Record<string, unknown>) => {
    const parsed = CreateTaskRequestSchema.safeParse({ prompt: 'hi', ...body });
    return parsed.success ? [] : zodIssuesToDetails(parsed.error);
  };
  expect(details({ metadata: deep })).toEqual([{ path: 'metadata', message: expect.stringMatching(/deeper than 8/) }]);
  expect(details({ tools: [{ type: 'function', function: { name: 'f', parameters: deep } }] })).toEqual([
    { path: 'tools.0.function.parameters', message: expect.stringMatching(/deeper than 32/) },
  ]);
  expect(details({ responseFormat: { type: 'json_schema', json_schema: { name: 's', schema: deep } } })).toEqual([
    { path: 'responseFormat.json_schema.schema', message: expect.stringMatching(/deeper than 32/) },
  ]);
  expect(details({ metadata: { note: 'x'.repeat(20_000) } })).toEqual([{ path: 'metadata', message: expect.stringMatching(/larger than/) }]);
  expect(details({ messages: [{ role: 'user', content: Array.from({ length: 300 }, () => ({ type: 'text', text: 'x' })) }], prompt: undefined })).toEqual([
    { path: 'messages.0.content', message: expect.stringMatching(/256/) },
  ]);
  expect(details({ metadata: nested(8) })).toEqual([]);
});
