import { parseToolCalls, type ToolCallsParse } from './parse';

const readCall = { tool: 'Read', arguments: { file_path: 'src/app.ts' } };

function calls(parse: ToolCallsParse) {
  if (!parse.ok) throw new Error(`expected calls, got: ${parse.error}`);
  return parse.calls;
}

test('a bare JSON array', () => {
  expect(parseToolCalls('[{"tool": "Read", "arguments": {"file_path": "src/app.ts"}}]')).toEqual({ ok: true, calls: [readCall], prose: '' });
  expect(parseToolCalls('[]')).toEqual({ ok: true, calls: [], prose: '' });
});

test('a ```json fence with trailing commas, and the prose around it', () => {
  const reply = 'Here you go:\n```json\n[\n  {"tool": "Read", "arguments": {"file_path": "src/app.ts",},},\n]\n```\nDone.';
  expect(parseToolCalls(reply)).toEqual({ ok: true, calls: [readCall], prose: 'Here you go:\n\nDone.' });
});

test('prose around an unfenced array, with brackets in the prose and in the arguments', () => {
  const reply = [
    'I will check the [config] first, then grep for `items[0]`.',
    '[{"tool": "Grep", "arguments": {"pattern": "items\\\\[0\\\\] = {"}}, {"tool": "Read", "arguments": {"file_path": "src/app.ts"}}]',
    'That covers it (see [1]).',
  ].join('\n');
  expect(parseToolCalls(reply)).toEqual({
    ok: true,
    calls: [{ tool: 'Grep', arguments: { pattern: 'items\\[0\\] = {' } }, readCall],
    prose: 'I will check the [config] first, then grep for `items[0]`.\n\nThat covers it (see [1]).',
  });
});

test('{"tool_calls": [...]} and {"calls": [...]} wrappers', () => {
  expect(calls(parseToolCalls('{"tool_calls": [{"tool": "Read", "arguments": {"file_path": "src/app.ts"}}]}'))).toEqual([readCall]);
  expect(calls(parseToolCalls('{"calls": [{"name": "Read", "arguments": {"file_path": "src/app.ts"}}]}'))).toEqual([readCall]);
  expect(calls(parseToolCalls('{"tool_calls": []}'))).toEqual([]);
});

test('OpenAI function calls with arguments as a JSON string, and a single call object', () => {
  const openAi = '[{"id": "x", "type": "function", "function": {"name": "Read", "arguments": "{\\"file_path\\": \\"src/app.ts\\"}"}}]';
  expect(calls(parseToolCalls(openAi))).toEqual([readCall]);
  expect(calls(parseToolCalls('{"name": "Read", "arguments": {"file_path": "src/app.ts"}}'))).toEqual([readCall]);
  // Arguments written beside the name, and missing arguments.
  expect(calls(parseToolCalls('[{"tool": "Read", "file_path": "src/app.ts"}, {"tool": "Bash"}]'))).toEqual([readCall, { tool: 'Bash', arguments: {} }]);
  // An unreadable arguments string is kept for validation to reject.
  expect(calls(parseToolCalls('[{"function": {"name": "Bash", "arguments": "ls -la"}}]'))).toEqual([{ tool: 'Bash', arguments: 'ls -la' }]);
});

test('reasoning in <think> blocks is ignored, also a lone </think> from the chat template', () => {
  const reply =
    '<think>Maybe [{"tool": "Bash", "arguments": {"command": "rm -rf /"}}]? No.</think>\n[{"tool": "Read", "arguments": {"file_path": "src/app.ts"}}]';
  expect(parseToolCalls(reply)).toEqual({ ok: true, calls: [readCall], prose: '' });
  expect(calls(parseToolCalls('thinking [1, 2]...</think>[{"tool": "Read", "arguments": {"file_path": "src/app.ts"}}]'))).toEqual([readCall]);
  expect(parseToolCalls('<think>still thinking about [{"tool": "Read"')).toEqual({ ok: false, error: 'the reply has nothing but reasoning' });
});

test('Hermes <tool_call> blocks and single-quoted near-JSON', () => {
  const hermes =
    'Sure.\n<tool_call>\n{"name": "Read", "arguments": {"file_path": "src/app.ts"}}\n</tool_call>\n<tool_call>{"name": "Bash", "arguments": {"command": "npm test"}}</tool_call>';
  expect(parseToolCalls(hermes)).toEqual({
    ok: true,
    calls: [readCall, { tool: 'Bash', arguments: { command: 'npm test' } }],
    prose: 'Sure.',
  });
  expect(calls(parseToolCalls("Don't worry: [{'tool': 'Bash', 'arguments': {'command': \"echo it's fine\"}}]"))).toEqual([
    { tool: 'Bash', arguments: { command: "echo it's fine" } },
  ]);
});

test('replies without tool calls say why', () => {
  expect(parseToolCalls('')).toEqual({ ok: false, error: 'the reply was empty' });
  expect(parseToolCalls('No tools are needed here.')).toEqual({ ok: false, error: expect.stringMatching(/^the reply contains no JSON/) });
  expect(parseToolCalls('{"answer": 42}')).toEqual({ ok: false, error: expect.stringMatching(/^the reply has JSON but no tool calls/) });
  expect(parseToolCalls('[{"tool": "Read", "arguments": {"file_path": "a"}}, "and then"]')).toEqual({
    ok: false,
    error: expect.stringMatching(/^item 2 of the array is not a tool call/),
  });
  expect(parseToolCalls('[{"tool": "Read", "arguments": {"file_path": "src/ap')).toEqual({
    ok: false,
    error: 'the JSON in the reply is not closed (was the reply cut off?)',
  });
});
