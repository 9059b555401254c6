import type { TaskEventPayload } from '@mageagent/core';
import type { ChatCallOptions, ChatModel, ChatRequest, ChatResponse } from '@mageagent/models';
import type { PatternContext } from '../context';
import { StepIds } from '../generate';
import { TOOLS_INSTRUCTION, TOOLS_RETRY_LEAD } from '../prompts';
import { BUILT_IN_TOOL_SPECS, toolSpecsFor, type ToolSpec } from './definitions';
import { extractTools, toolCallsResponseFormat } from './extract';
import { searchTool } from './test-fixtures';

/** A fake tools model implementing the real interface: answers from a script and keeps every request. */
class ScriptedToolsModel implements ChatModel {
  readonly id = 'fake-hermes-8b';
  readonly host = 'fake-host';
  readonly requests: ChatRequest[] = [];
  constructor(
    private readonly replies: string[],
    readonly structuredOutput = false,
  ) {}

  async chat(request: ChatRequest, options: ChatCallOptions = {}): Promise<ChatResponse> {
    const reply = this.replies[Math.min(this.requests.length, this.replies.length - 1)] ?? '';
    this.requests.push(request);
    options.onDelta?.(reply);
    return { content: reply, usage: { promptTokens: 40, completionTokens: 10, totalTokens: 50 }, finishReason: 'stop', model: this.id };
  }
}

function run(model: ScriptedToolsModel, options: { specs?: ToolSpec[]; required?: boolean; answer?: string } = {}) {
  const events: TaskEventPayload[] = [];
  const roles: string[] = [];
  const context: PatternContext = {
    models: {
      role: (name) => {
        roles.push(name);
        return model;
      },
      has: () => true,
    },
    events: { emit: (event) => events.push(event) },
    signal: new AbortController().signal,
    retry: { retries: 0, baseDelayMs: 1, retryAfterMaxMs: 30_000 },
  };
  const result = extractTools(context, new StepIds(), {
    request: 'Show me src/app.ts and run the tests',
    specs: options.specs ?? [...BUILT_IN_TOOL_SPECS],
    ...(options.answer !== undefined && { answer: options.answer }),
    ...(options.required !== undefined && { required: options.required }),
  });
  return { result, events, roles };
}

function messagesOf(request: ChatRequest | undefined) {
  return (request?.messages ?? []).map((message) => [message.role, message.content]);
}

const READ = '{"tool": "Read", "arguments": {"file_path": "src/app.ts"}}';
const BASH = '{"tool": "Bash", "arguments": {"command": "npm test"}}';
const expectedCalls = [
  { id: 'call_1', tool: 'Read', arguments: { file_path: 'src/app.ts' } },
  { id: 'call_2', tool: 'Bash', arguments: { command: 'npm test' } },
];

test('a valid reply becomes calls with ids, in one tools step of the tools role', async () => {
  const model = new ScriptedToolsModel([`[${READ}, ${BASH}]`]);
  const { result, events, roles } = run(model, { answer: 'Read it, then test.' });
  await expect(result).resolves.toEqual({
    calls: expectedCalls,
    steps: [expect.objectContaining({ id: 'extract-tools-1', name: 'extract-tools', role: 'tools', kind: 'tools', model: 'fake-hermes-8b' })],
    prose: '',
    warnings: [],
  });
  expect(roles.every((role) => role === 'tools')).toBe(true);
  expect(events.map((event) => event.type)).toEqual(['step.started', 'delta', 'step.completed']);
  const [system, user] = model.requests[0]?.messages ?? [];
  expect(system?.content).toContain(TOOLS_INSTRUCTION);
  expect(system?.content).toContain('"name":"Glob"');
  expect(user?.content).toContain('Show me src/app.ts and run the tests');
  expect(user?.content).toContain('Read it, then test.');
  expect(model.requests[0]?.responseFormat).toBeUndefined();
});

test.each([
  ['a ```json fence with trailing commas', `\`\`\`json\n[${READ}, ${BASH},]\n\`\`\``, ''],
  ['prose around the array', `Sure, here they are:\n[${READ}, ${BASH}]\nLet me know.`, 'Sure, here they are:\n\nLet me know.'],
  ['a {"tool_calls": [...]} object', `{"tool_calls": [${READ}, ${BASH}]}`, ''],
  [
    'OpenAI function calls with string arguments',
    '[{"type": "function", "function": {"name": "Read", "arguments": "{\\"file_path\\": \\"src/app.ts\\"}"}}, {"function": {"name": "Bash", "arguments": "{\\"command\\": \\"npm test\\"}"}}]',
    '',
  ],
  ['a <think> block before the array', `<think>The user wants [a file] read, then tests.</think>\n[${READ}, ${BASH}]`, ''],
])('%s is read in one step', async (_shape, reply, prose) => {
  const model = new ScriptedToolsModel([reply]);
  const { result } = run(model);
  await expect(result).resolves.toMatchObject({ calls: expectedCalls, prose, warnings: [] });
  expect(model.requests).toHaveLength(1);
});

test('calls to unknown tools are dropped with a warning, without a retry', async () => {
  const model = new ScriptedToolsModel([`[{"tool": "Browse", "arguments": {"url": "https://example.com"}}, ${READ}]`]);
  const { result, events } = run(model);
  await expect(result).resolves.toMatchObject({
    calls: [{ id: 'call_1', tool: 'Read' }],
    warnings: ['dropped calls to unknown tools: Browse'],
  });
  expect(model.requests).toHaveLength(1);
  expect(events).toContainEqual({ type: 'warning', stepId: 'extract-tools-1', message: 'dropped calls to unknown tools: Browse' });
});

test('an invalid call is sent back once with the errors, in the same conversation, and the repair is used', async () => {
  const first = `[{"tool": "Read", "arguments": {"path": "src/app.ts"}}, ${BASH}]`;
  const model = new ScriptedToolsModel([first, `[${READ}, ${BASH}]`]);
  const { result, events } = run(model);
  const outcome = await result;
  expect(outcome).toMatchObject({ calls: expectedCalls, warnings: [] });
  expect(outcome.steps.map((step) => [step.id, step.name, step.kind])).toEqual([
    ['extract-tools-1', 'extract-tools', 'tools'],
    ['extract-tools-retry-2', 'extract-tools-retry', 'tools'],
  ]);
  const retryMessages = messagesOf(model.requests[1]);
  expect(retryMessages.slice(0, 2)).toEqual(messagesOf(model.requests[0]));
  expect(retryMessages[2]).toEqual(['assistant', first]);
  expect(retryMessages[3]?.[0]).toBe('user');
  expect(retryMessages[3]?.[1]).toMatch(new RegExp(`^${TOOLS_RETRY_LEAD}`));
  expect(retryMessages[3]?.[1]).toContain('call 1: Read.file_path is required');
  expect(retryMessages[3]?.[1]).toContain('call 1: Read has unknown arguments: path');
  expect(events.filter((event) => event.type === 'step.started')).toHaveLength(2);
  expect(events.some((event) => event.type === 'warning')).toBe(false);
});

test('invalid twice gives up: no calls, not even the valid ones, and a warning event', async () => {
  const invalid = `[${READ}, {"tool": "Bash", "arguments": {"command": ""}}]`;
  const model = new ScriptedToolsModel([invalid, invalid]);
  const { result, events } = run(model);
  const outcome = await result;
  const message = 'tool-call extraction gave up after a retry, no tool calls returned: call 2: Bash.command must not be empty';
  expect(outcome).toMatchObject({ calls: [], warnings: [message] });
  expect(outcome.steps).toHaveLength(2);
  expect(events).toContainEqual({ type: 'warning', stepId: 'extract-tools-retry-2', message });
});

test('unparseable twice gives up with the parse error in the retry and the warning', async () => {
  const model = new ScriptedToolsModel(['I would read the file first.', 'Sorry, no JSON today.']);
  const { result, events } = run(model);
  const outcome = await result;
  expect(outcome.calls).toEqual([]);
  expect(outcome.prose).toBe('');
  expect(outcome.warnings).toEqual([expect.stringMatching(/gave up after a retry.*the reply contains no JSON/)]);
  expect(messagesOf(model.requests[1])[3]?.[1]).toContain(`${TOOLS_RETRY_LEAD} the reply contains no JSON`);
  expect(events.filter((event) => event.type === 'warning')).toHaveLength(1);
});

test('request-supplied tools are checked by ajv: the invalid call is repaired, the valid one kept', async () => {
  const selection = toolSpecsFor({ tools: [searchTool] });
  const model = new ScriptedToolsModel([
    '[{"tool": "search", "arguments": {"query": "zod 4"}}, {"tool": "search", "arguments": {"query": "ajv", "limit": "ten"}}]',
    '[{"tool": "search", "arguments": {"query": "zod 4"}}, {"tool": "search", "arguments": {"query": "ajv", "limit": 10}}]',
  ]);
  const { result } = run(model, { specs: selection?.specs ?? [] });
  await expect(result).resolves.toMatchObject({
    calls: [
      { id: 'call_1', tool: 'search', arguments: { query: 'zod 4' } },
      { id: 'call_2', tool: 'search', arguments: { query: 'ajv', limit: 10 } },
    ],
  });
  expect(model.requests[0]?.messages[0]?.content).toContain('"name":"search"');
  expect(model.requests[0]?.messages[0]?.content).not.toContain('"name":"Read"');
  expect(messagesOf(model.requests[1])[3]?.[1]).toContain('call 2: search.limit must be integer');
});

test('a toolChoice naming a function restricts the tools offered and the calls kept', async () => {
  const selection = toolSpecsFor({ toolChoice: { type: 'function', function: { name: 'Bash' } } });
  expect(selection?.specs.map((spec) => spec.name)).toEqual(['Bash']);
  const model = new ScriptedToolsModel([`[${READ}, ${BASH}]`]);
  const { result } = run(model, { specs: selection?.specs ?? [], required: selection?.required ?? false });
  await expect(result).resolves.toMatchObject({
    calls: [{ id: 'call_1', tool: 'Bash', arguments: { command: 'npm test' } }],
    warnings: ['dropped calls to unknown tools: Read'],
  });
  expect(model.requests[0]?.messages[0]?.content).not.toContain('"name":"Read"');
});

test('toolChoice none means no extraction at all', () => {
  expect(toolSpecsFor({ tools: [searchTool], toolChoice: 'none' })).toBeNull();
});

test('an empty reply is fine unless a call is required, then it is asked for again', async () => {
  const optional = new ScriptedToolsModel(['[]']);
  await expect(run(optional).result).resolves.toMatchObject({ calls: [], warnings: [] });
  expect(optional.requests).toHaveLength(1);

  const required = new ScriptedToolsModel(['[]', `[${BASH}]`]);
  await expect(run(required, { required: true }).result).resolves.toMatchObject({ calls: [{ id: 'call_1', tool: 'Bash' }], warnings: [] });
  expect(messagesOf(required.requests[1])[3]?.[1]).toContain('at least one call to an available tool is required');
});

test('a required call answered only with unknown tools is retried, naming the available ones', async () => {
  const specs = BUILT_IN_TOOL_SPECS.filter((spec) => spec.name === 'Read' || spec.name === 'Bash');
  const model = new ScriptedToolsModel(['[{"tool": "Browse", "arguments": {}}]', `[${READ}]`]);
  await expect(run(model, { specs, required: true }).result).resolves.toMatchObject({ calls: [{ tool: 'Read' }], warnings: [] });
  expect(messagesOf(model.requests[1])[3]?.[1]).toContain('unknown tools Browse (available: Read, Bash)');
});

test('a model with structured output is sent the tool-calls response_format', async () => {
  const specs = toolSpecsFor({ tools: [searchTool] })?.specs ?? [];
  const model = new ScriptedToolsModel(['{"tool_calls": [{"tool": "search", "arguments": {"query": "zod"}}]}'], true);
  await expect(run(model, { specs }).result).resolves.toMatchObject({ calls: [{ id: 'call_1', tool: 'search', arguments: { query: 'zod' } }] });
  expect(model.requests[0]?.responseFormat).toEqual(toolCallsResponseFormat(specs));
  expect(model.requests[0]?.responseFormat).toEqual({
    type: 'json_schema',
    json_schema: {
      name: 'tool_calls',
      strict: false,
      schema: {
        type: 'object',
        properties: {
          tool_calls: {
            type: 'array',
            items: {
              anyOf: [
                {
                  type: 'object',
                  properties: { tool: { const: 'search' }, arguments: searchTool.function.parameters },
                  required: ['tool', 'arguments'],
                  additionalProperties: false,
                },
              ],
            },
          },
        },
        required: ['tool_calls'],
        additionalProperties: false,
      },
    },
  });
});

test('parameters with $ref are loosened inside the response_format, and no tools is a usage error', async () => {
  const withRef = toolSpecsFor({
    tools: [
      {
        type: 'function',
        function: { name: 'tag', parameters: { type: 'object', properties: { label: { $ref: '#/$defs/label' } }, $defs: { label: { type: 'string' } } } },
      },
    ],
  });
  const format = JSON.stringify(toolCallsResponseFormat(withRef?.specs ?? []));
  expect(format).toContain('"arguments":{"type":"object"}');
  expect(format).not.toContain('$ref');
  await expect(run(new ScriptedToolsModel(['[]']), { specs: [] }).result).rejects.toMatchObject({ code: 'VALIDATION_FAILED' });
});
