import Ajv from 'ajv';
import {
  aggregateSystemPrompt,
  critiqueSystemPrompt,
  critiqueUserPrompt,
  judgeSystemPrompt,
  judgeUserPrompt,
  quote,
  reviewSystemPrompt,
  reviewUserPrompt,
  revisionPrompt,
  routerSystemPrompt,
  selectSystemPrompt,
  selectUserPrompt,
  toolsRetryPrompt,
  toolsSystemPrompt,
  toolsUserPrompt,
  type ToolPromptEntry,
} from '@mageagent/patterns';
import { readCritique, readSelection } from '@mageagent/patterns';
import { directivesForRoles, parseDirectives } from './directives';
import { detectCallRole, excerptOf } from './roles';
import { synthesiseValue } from './schema-values';
import { createSimulator, generateProse, splitIntoTokens, type SimulatedModel, type Simulator } from './simulator';

/** Instant models, so only the pacing tests wait. The validator model also serves the router role. */
const PRIMARY: SimulatedModel = { id: 'sim-primary', host: 'gpu', ttftMs: 0, tokensPerSecond: 0, defaultTokens: 20, roles: ['primary'] };
const VALIDATOR: SimulatedModel = { id: 'sim-validator', host: 'gpu', ttftMs: 0, tokensPerSecond: 0, defaultTokens: 8, roles: ['validator', 'router'] };
const TOOLS_MODEL: SimulatedModel = { id: 'sim-tools', host: 'gpu', ttftMs: 0, tokensPerSecond: 0, defaultTokens: 10, roles: ['tools'] };

let simulator: Simulator;
let baseUrl: string;

beforeAll(async () => {
  simulator = createSimulator({ models: [PRIMARY, VALIDATOR, TOOLS_MODEL] });
  baseUrl = `http://127.0.0.1:${await simulator.listen(0)}`;
});

afterAll(async () => {
  await simulator.close();
});

type Message = { role: 'system' | 'user' | 'assistant'; content: string };

interface Reply {
  status: number;
  content: string;
  completionTokens: number;
}

async function send(model: string, messages: Message[], extra: Record<string, unknown> = {}): Promise<Reply> {
  const response = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages, ...extra }),
  });
  const body = (await response.json()) as {
    choices?: Array<{ message: { content: string } }>;
    usage?: { completion_tokens: number };
  };
  return { status: response.status, content: body.choices?.[0]?.message.content ?? '', completionTokens: body.usage?.completion_tokens ?? 0 };
}

/** The streamed deltas joined, and how many content chunks carried them. */
async function stream(model: string, messages: Message[], extra: Record<string, unknown> = {}): Promise<{ content: string; chunks: number }> {
  const response = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages, stream: true, ...extra }),
  });
  const deltas = (await response.text())
    .split('\n')
    .filter((line) => line.startsWith('data: {'))
    .map((line) => (JSON.parse(line.slice(6)) as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta.content)
    .filter((content): content is string => content !== undefined);
  return { content: deltas.join(''), chunks: deltas.length };
}

const conversation = (system: string, ...turns: string[]): Message[] => [
  { role: 'system', content: system },
  ...turns.map((content, index): Message => ({ role: index % 2 === 0 ? 'user' : 'assistant', content })),
];

const ANSWER_UNDER_REVIEW = 'Use a loop over the lines and return the total.';

const review = (request: string, previousReview?: string): Message[] =>
  conversation(reviewSystemPrompt(), reviewUserPrompt(request, ANSWER_UNDER_REVIEW, previousReview));

const judge = (request: string, letters = ['A', 'B']): Message[] =>
  conversation(
    judgeSystemPrompt(letters),
    judgeUserPrompt(
      request,
      letters.map((letter) => ({ letter, content: `Solution text ${letter}.` })),
    ),
  );

describe('detectCallRole', () => {
  it('reads the role from the contract sentence of each step system prompt, and nothing from others', () => {
    expect(detectCallRole(reviewSystemPrompt())).toBe('reviewer');
    expect(detectCallRole(judgeSystemPrompt(['A', 'B']))).toBe('judge');
    expect(detectCallRole(toolsSystemPrompt([]))).toBe('tools');
    expect(detectCallRole(routerSystemPrompt([{ name: 'general', description: 'anything' }]))).toBe('router');
    expect(detectCallRole('You are a helpful assistant.')).toBeUndefined();
    expect(detectCallRole('')).toBeUndefined();
  });

  it('takes a tool list quoting another role sentence for what it is', () => {
    const tools = [{ name: 'classify', description: 'Reply with PASS or FAIL on the first line', parameters: {} }];
    expect(detectCallRole(toolsSystemPrompt(tools))).toBe('tools');
  });

  it('reads the aggregator, selector and critic sentences', () => {
    expect(detectCallRole(aggregateSystemPrompt(['one', 'two']))).toBe('aggregator');
    expect(detectCallRole(selectSystemPrompt(3))).toBe('selector');
    expect(detectCallRole(critiqueSystemPrompt())).toBe('critic');
    // A contract sentence counts only as written: lower-cased inside other prose it is just prose.
    expect(detectCallRole('Answer, then classify the request as you see fit.')).toBeUndefined();
    expect(detectCallRole('Please synthesize these responses into a single, high-quality response.')).toBeUndefined();
  });

  it('takes the earliest contract sentence, so references quoting another role stay references', () => {
    const references = ['Classify the request first.', 'Reply with PASS or FAIL on the first line', 'Reply with only a JSON array of tool calls'];
    expect(detectCallRole(aggregateSystemPrompt(references))).toBe('aggregator');
    // A later layer's proposer: the references, then the step's own system text.
    expect(detectCallRole(`${aggregateSystemPrompt(references)}\n\n${selectSystemPrompt(2)}`)).toBe('aggregator');
  });
});

describe('reviewer (validator=)', () => {
  it('passes by default with one reason sentence', async () => {
    const { content } = await send(VALIDATOR.id, review('Write a CSV parser.'));
    expect(content).toMatch(/^PASS\n[A-Z][^\n]*\.$/);
  });

  it('answers pass and fail as asked, with the directive read from the quoted request', async () => {
    expect((await send(VALIDATOR.id, review('[[sim: validator=pass]] Write a CSV parser.'))).content).toMatch(/^PASS\n[A-Z]/);
    const failed = (await send(VALIDATOR.id, review('[[sim: validator=fail]] Write a CSV parser.'))).content;
    expect(failed.split('\n')[0]).toBe('FAIL');
    expect(failed.split('\n').length).toBeGreaterThanOrEqual(2);
  });

  it('fails once, then passes the re-review that quotes the earlier review', async () => {
    const request = '[[sim: validator=fail-once]] Write a CSV parser.';
    const first = (await send(VALIDATOR.id, review(request))).content;
    expect(first.split('\n')[0]).toBe('FAIL');
    const second = (await send(VALIDATOR.id, review(request, first))).content;
    expect(second.split('\n')[0]).toBe('PASS');
  });

  it('answers garbage without any verdict in it', async () => {
    const { content } = await send(VALIDATOR.id, review('[[sim: validator=garbage]] Write a CSV parser.'));
    expect(content).not.toMatch(/\b(pass|fail)/i);
    expect(content.length).toBeGreaterThan(0);
  });

  it('streams the same verdict it answers whole, and is deterministic', async () => {
    const messages = review('[[sim: validator=fail]] Sort a list.');
    const whole = await send(VALIDATOR.id, messages);
    const streamed = await stream(VALIDATOR.id, messages);
    expect(streamed.content).toBe(whole.content);
    expect(streamed.chunks).toBe(splitIntoTokens(whole.content).length);
    expect((await send(VALIDATOR.id, messages)).content).toBe(whole.content);
  });

  it('ignores tokens= but keeps ttft and tps pacing', async () => {
    const started = performance.now();
    const { content, completionTokens } = await send(VALIDATOR.id, review('[[sim: validator=fail; tokens=200; ttft=60; tps=200]] Sort a list.'));
    expect(performance.now() - started).toBeGreaterThanOrEqual(60 + (completionTokens - 1) * 5 - 5);
    expect(content.split('\n')[0]).toBe('FAIL');
    expect(completionTokens).toBeLessThan(40);
  });
});

describe('judge (judge=)', () => {
  it('picks A by default, and B or C when told, with one sentence why', async () => {
    expect((await send(VALIDATOR.id, judge('Write a sort.'))).content).toMatch(/^A\nSolution A is better because [^\n]+\.$/);
    expect((await send(VALIDATOR.id, judge('[[sim: judge=B]] Write a sort.'))).content).toMatch(/^B\nSolution B /);
    expect((await send(VALIDATOR.id, judge('[[sim: judge=c]] Write a sort.', ['A', 'B', 'C']))).content).toMatch(/^C\n/);
  });

  it('streams a verdict line equal to the whole answer', async () => {
    const messages = judge('[[sim: judge=B]] Write a sort.');
    expect((await stream(VALIDATOR.id, messages)).content).toBe((await send(VALIDATOR.id, messages)).content);
  });

  it('answers garbage that does not start with a letter verdict', async () => {
    const { content } = await send(VALIDATOR.id, judge('[[sim: judge=garbage]] Write a sort.'));
    expect(content.split('\n')[0]).not.toMatch(/^[A-Z]\b/);
    expect(content).not.toMatch(/^[AB]/);
  });
});

// ---------------------------------------------------------------------------------------------

const object = (properties: Record<string, unknown>, required: string[], extra: Record<string, unknown> = {}) => ({
  type: 'object',
  properties,
  required,
  ...extra,
});
const text = { type: 'string' };

const BUILT_IN_TOOLS: ToolPromptEntry[] = [
  {
    name: 'Read',
    description: 'Reads a file',
    parameters: object({ file_path: text, offset: { type: 'integer' }, limit: { type: 'integer' } }, ['file_path']),
  },
  { name: 'Write', description: 'Writes a file', parameters: object({ file_path: text, content: text }, ['file_path', 'content']) },
  {
    name: 'Edit',
    description: 'Replaces text in a file',
    parameters: object({ file_path: text, old_string: text, new_string: text, replace_all: { type: 'boolean' } }, ['file_path', 'old_string', 'new_string']),
  },
  { name: 'Bash', description: 'Runs a shell command', parameters: object({ command: text, timeout: { type: 'number' } }, ['command']) },
  { name: 'Glob', description: 'Finds files by name pattern', parameters: object({ pattern: text, path: text }, ['pattern']) },
  { name: 'Grep', description: 'Searches file contents', parameters: object({ pattern: text, path: text }, ['pattern']) },
];

const CUSTOM_TOOLS: ToolPromptEntry[] = [
  {
    name: 'get_weather',
    description: 'Current weather and forecast for a city',
    parameters: object(
      { city: { type: 'string', minLength: 2 }, units: { enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer', minimum: 1, maximum: 7 } },
      ['city', 'units', 'days'],
      { additionalProperties: false },
    ),
  },
  {
    name: 'createTicket',
    description: 'Opens a ticket in the issue tracker',
    parameters: object(
      {
        title: { type: 'string', minLength: 3, maxLength: 80 },
        kind: { const: 'bug' },
        labels: { type: 'array', items: { type: 'string', pattern: '^[a-z-]+$' }, minItems: 2 },
        meta: object({ urgent: { type: 'boolean' }, score: { type: 'number', exclusiveMinimum: 1, multipleOf: 0.5 }, owner: { $ref: '#/$defs/person' } }, [
          'urgent',
          'score',
          'owner',
        ]),
        due: { type: ['string', 'null'], format: 'date' },
      },
      ['title', 'kind', 'labels', 'meta', 'due'],
      { $defs: { person: object({ name: text, id: { type: 'integer', minimum: 100 } }, ['name', 'id']) } },
    ),
  },
];

const ALL_TOOLS = [...BUILT_IN_TOOLS, ...CUSTOM_TOOLS];

// Formats are checked by the synthesiser's own table; ajv here checks the structure.
const ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });

interface ParsedCall {
  tool: string;
  arguments: unknown;
}

/** Whether the call names a listed tool and its arguments validate against that tool's schema. */
function validates(call: ParsedCall, tools: ToolPromptEntry[]): boolean {
  const tool = tools.find((listed) => listed.name === call.tool);
  return tool !== undefined && ajv.validate(tool.parameters, call.arguments);
}

const extract = (request: string, tools: ToolPromptEntry[] = ALL_TOOLS, answer?: string): Message[] =>
  conversation(toolsSystemPrompt(tools), toolsUserPrompt(request, answer));

async function extractCalls(request: string, tools: ToolPromptEntry[] = ALL_TOOLS, answer?: string): Promise<ParsedCall[]> {
  const { content } = await send(TOOLS_MODEL.id, extract(request, tools, answer));
  return JSON.parse(content) as ParsedCall[];
}

describe('tool extractor (tools=)', () => {
  it.each<[string, ParsedCall[]]>([
    ['Read src/app.ts and tell me what it does.', [{ tool: 'Read', arguments: { file_path: 'src/app.ts' } }]],
    ['Show me /etc/hosts', [{ tool: 'Read', arguments: { file_path: '/etc/hosts' } }]],
    ['Please run `npm test` and report failures.', [{ tool: 'Bash', arguments: { command: 'npm test' } }]],
    ['Run npm run build, then stop.', [{ tool: 'Bash', arguments: { command: 'npm run build' } }]],
    ['Search for TODO in src/', [{ tool: 'Grep', arguments: { pattern: 'TODO', path: 'src/' } }]],
    ['Find all usages of `parseDirectives`.', [{ tool: 'Grep', arguments: { pattern: 'parseDirectives' } }]],
    ['List *.ts files', [{ tool: 'Glob', arguments: { pattern: '*.ts' } }]],
    ['In src/app.ts replace foo with bar', [{ tool: 'Edit', arguments: { file_path: 'src/app.ts', old_string: 'foo', new_string: 'bar' } }]],
    [
      'Read /etc/hosts, then run `cat /etc/hosts`',
      [
        { tool: 'Read', arguments: { file_path: '/etc/hosts' } },
        { tool: 'Bash', arguments: { command: 'cat /etc/hosts' } },
      ],
    ],
  ])('valid (the default): %s', async (request, expected) => {
    const calls = await extractCalls(`[[sim: tools=valid]] ${request}`);
    expect(calls).toEqual(expected);
    expect(calls.every((call) => validates(call, ALL_TOOLS))).toBe(true);
  });

  it('writes the code of the quoted answer into a new file', async () => {
    const answer = 'Here it is:\n```python\nprint("hello")\n```';
    const [call] = await extractCalls('Create the file hello.py', ALL_TOOLS, answer);
    expect(call).toEqual({ tool: 'Write', arguments: { file_path: 'hello.py', content: 'print("hello")\n' } });
  });

  it('picks the custom tool whose words match, with arguments from the request that fit its schema', async () => {
    const weather = await extractCalls('What is the weather in Paris this week?');
    expect(weather).toEqual([{ tool: 'get_weather', arguments: { city: 'Paris', units: 'celsius', days: 1 } }]);
    const ticket = await extractCalls('Open a ticket about the login crash');
    expect(ticket[0]?.tool).toBe('createTicket');
    expect(ticket[0]?.arguments).toMatchObject({
      title: 'Open a ticket about the login crash',
      kind: 'bug',
      due: expect.stringMatching(/^\d{4}-\d{2}-\d{2}$/),
    });
    expect(validates(ticket[0]!, ALL_TOOLS)).toBe(true);
  });

  it('falls back to the first listed tool when nothing matches, so valid always calls something', async () => {
    const calls = await extractCalls('Good morning!', CUSTOM_TOOLS);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.tool).toBe('get_weather');
    expect(validates(calls[0]!, CUSTOM_TOOLS)).toBe(true);
  });

  it('answers [] when no tool is listed', async () => {
    expect((await send(TOOLS_MODEL.id, extract('Read src/app.ts', []))).content).toBe('[]');
  });

  it('fenced: the same calls in a ```json fence with a trailing comma', async () => {
    const valid = await extractCalls('[[sim: tools=valid]] Read src/app.ts and run `make`');
    const { content } = await send(TOOLS_MODEL.id, extract('[[sim: tools=fenced]] Read src/app.ts and run `make`'));
    expect(content).toMatch(/^```json\n\[\n[\s\S]*\n\]\n```$/);
    expect(content).toMatch(/,\n\]/);
    const repaired = content
      .replace(/^```json\n/, '')
      .replace(/\n```$/, '')
      .replace(/,\n\]/, '\n]');
    expect(JSON.parse(repaired)).toEqual(valid);
  });

  it('prose: the same calls between sentences', async () => {
    const valid = await extractCalls('[[sim: tools=valid]] Read src/app.ts');
    const { content } = await send(TOOLS_MODEL.id, extract('[[sim: tools=prose]] Read src/app.ts'));
    expect(content).toMatch(/^Here are the calls you need: \[.*\] Let me know if /);
    expect(() => JSON.parse(content)).toThrow();
    expect(JSON.parse(content.slice(content.indexOf('['), content.lastIndexOf(']') + 1))).toEqual(valid);
  });

  it('invalid: the first call breaks its schema on every attempt, retries included', async () => {
    for (const request of [
      '[[sim: tools=invalid]] Read src/app.ts',
      '[[sim: tools=invalid]] What is the weather in Oslo?',
      '[[sim: tools=invalid]] Open a ticket',
    ]) {
      const first = extract(request);
      const retry = [...first, { role: 'assistant' as const, content: '[]' }, { role: 'user' as const, content: toolsRetryPrompt(['bad']) }];
      for (const messages of [first, retry]) {
        const calls = JSON.parse((await send(TOOLS_MODEL.id, messages)).content) as ParsedCall[];
        expect(calls.length).toBeGreaterThan(0);
        expect(ALL_TOOLS.some((tool) => tool.name === calls[0]?.tool)).toBe(true);
        expect(validates(calls[0]!, ALL_TOOLS)).toBe(false);
      }
    }
  });

  it('invalid-once: invalid first, valid when the last user message is the retry prompt', async () => {
    const first = extract('[[sim: tools=invalid-once]] Read src/app.ts');
    const firstReply = (await send(TOOLS_MODEL.id, first)).content;
    const firstCalls = JSON.parse(firstReply) as ParsedCall[];
    expect(validates(firstCalls[0]!, ALL_TOOLS)).toBe(false);
    const retry: Message[] = [...first, { role: 'assistant', content: firstReply }, { role: 'user', content: toolsRetryPrompt(['file_path is required']) }];
    const retried = JSON.parse((await send(TOOLS_MODEL.id, retry)).content) as ParsedCall[];
    expect(retried).toEqual([{ tool: 'Read', arguments: { file_path: 'src/app.ts' } }]);
  });

  it('none: an empty array', async () => {
    expect((await send(TOOLS_MODEL.id, extract('[[sim: tools=none]] Read src/app.ts'))).content).toBe('[]');
  });

  it('answers {"tool_calls": [...]} under a json_schema response format, still fenced when told', async () => {
    const responseFormat = { response_format: { type: 'json_schema', json_schema: { name: 'tool_calls', schema: { type: 'object' } } } };
    const whole = await send(TOOLS_MODEL.id, extract('Read src/app.ts'), responseFormat);
    expect(JSON.parse(whole.content)).toEqual({ tool_calls: [{ tool: 'Read', arguments: { file_path: 'src/app.ts' } }] });
    const fenced = await send(TOOLS_MODEL.id, extract('[[sim: tools=fenced]] Read src/app.ts'), responseFormat);
    expect(fenced.content).toMatch(/^```json\n\{"tool_calls": \[\n[\s\S]*,\n\]\}\n```$/);
    expect((await send(TOOLS_MODEL.id, extract('[[sim: tools=none]] x'), responseFormat)).content).toBe('{"tool_calls": []}');
  });

  it('streams the calls in several chunks that join to the whole answer', async () => {
    const messages = extract('Read /etc/hosts, then run `cat /etc/hosts`');
    const streamed = await stream(TOOLS_MODEL.id, messages);
    expect(streamed.chunks).toBeGreaterThan(1);
    expect(streamed.content).toBe((await send(TOOLS_MODEL.id, messages)).content);
  });
});

// ---------------------------------------------------------------------------------------------

const ROUTES = [
  { name: 'coding', description: 'writing or changing code' },
  { name: 'reasoning', description: 'explanations, analysis and plans' },
  { name: 'general', description: 'everything else' },
];

const route = (request: string, routes = ROUTES): Message[] => conversation(routerSystemPrompt(routes), quote('Request:', request));

async function routeOf(request: string, routes = ROUTES): Promise<unknown> {
  return JSON.parse((await send(VALIDATOR.id, route(request, routes))).content);
}

describe('router (router=)', () => {
  it.each([
    ['Implement a function that merges two sorted lists.', 'coding'],
    ['Please fix the bug in my parser.', 'coding'],
    ['Why does this fail?\n```js\nx()\n```', 'coding'],
    ['Explain how a B-tree works.', 'reasoning'],
    ['Compare Redis and Postgres for queues.', 'reasoning'],
    ['What is the capital of France?', 'general'],
  ])('classifies %j as %s by keywords', async (request, expected) => {
    expect(await routeOf(request)).toEqual({ route: expected, confidence: 0.9, reason: expect.stringMatching(/^The request .*\.$/) });
  });

  it('uses the last listed route when the keyword category is not listed', async () => {
    const routes = [ROUTES[1]!, { name: 'chat', description: 'anything' }];
    expect(await routeOf('Implement a queue.', routes)).toMatchObject({ route: 'chat' });
  });

  it('answers the route it is told, listed or not', async () => {
    expect(await routeOf('[[sim: router=reasoning]] Implement a queue.')).toMatchObject({ route: 'reasoning', confidence: 0.9 });
    expect(await routeOf('[[sim: router=Coding]] Hello')).toMatchObject({ route: 'coding' });
    expect(await routeOf('[[sim: router=astrology]] Hello')).toMatchObject({ route: 'astrology' });
  });

  it('low: the keyword route with confidence 0.2', async () => {
    expect(await routeOf('[[sim: router=low]] Explain monads.')).toMatchObject({ route: 'reasoning', confidence: 0.2 });
  });

  it('garbage: text that is not JSON, streamed or not', async () => {
    const messages = route('[[sim: router=garbage]] Explain monads.');
    const whole = (await send(VALIDATOR.id, messages)).content;
    expect(() => JSON.parse(whole)).toThrow();
    expect(whole).not.toContain('{');
    expect((await stream(VALIDATOR.id, messages)).content).toBe(whole);
  });
});

// ---------------------------------------------------------------------------------------------

describe('ordinary answers', () => {
  it('stay prose, as generateProse writes it, under an ordinary system prompt', async () => {
    const messages = conversation('You are a helpful assistant.', 'Tell me about queues.');
    const { content } = await send(PRIMARY.id, messages);
    const expected = generateProse({ model: PRIMARY.id, messages, stream: false, includeUsage: false, body: {} }, {}, PRIMARY).text;
    expect(content).toBe(expected);
  });

  it('answer {"answer": <prose>} under json_object, with tokens= still setting the prose length', async () => {
    const { content } = await send(PRIMARY.id, conversation('Be brief.', '[[sim: tokens=7]] Hi'), { response_format: { type: 'json_object' } });
    const parsed = JSON.parse(content) as { answer: string };
    expect(Object.keys(parsed)).toEqual(['answer']);
    expect(splitIntoTokens(parsed.answer)).toHaveLength(7);
  });

  it('answer a value fitting the schema under json_schema', async () => {
    const schema = object(
      {
        answer: text,
        verdict: { enum: ['yes', 'no'] },
        version: { const: 2 },
        steps: { type: 'array', items: object({ index: { type: 'integer', minimum: 1 }, done: { type: 'boolean' } }, ['index', 'done']), minItems: 1 },
        nickname: { anyOf: [{ type: 'null' }, { type: 'string', maxLength: 4 }] },
      },
      ['answer', 'verdict', 'version', 'steps', 'nickname'],
      { additionalProperties: false },
    );
    const { content } = await send(PRIMARY.id, conversation('Be brief.', 'Hi'), {
      response_format: { type: 'json_schema', json_schema: { name: 'reply', schema } },
    });
    const parsed = JSON.parse(content) as Record<string, unknown>;
    expect(ajv.validate(schema, parsed)).toBe(true);
    expect(parsed).toMatchObject({ verdict: 'yes', version: 2, steps: [{ index: 1, done: true }], nickname: 'exam' });
    expect(typeof parsed.answer).toBe('string');
  });
});

describe('synthesiseValue', () => {
  it('fits numeric bounds, string lengths and patterns, and stops at recursive references', () => {
    expect(synthesiseValue({ type: 'integer', minimum: 5 })).toBe(5);
    expect(synthesiseValue({ type: 'number', exclusiveMaximum: 0 })).toBe(-0.5);
    expect(synthesiseValue({ type: 'integer', minimum: 3, multipleOf: 5 })).toBe(5);
    expect(synthesiseValue({ type: 'string', minLength: 10 })).toHaveLength(10);
    expect(synthesiseValue({ type: 'string', pattern: '^[0-9]$' })).toBe('0');
    const tree = { $defs: { node: object({ child: { $ref: '#/$defs/node' } }, ['child']) }, $ref: '#/$defs/node' };
    // No finite value fits a required self-reference; the synthesiser cuts it off instead of recursing forever.
    expect(synthesiseValue(tree)).toMatchObject({ child: { child: { child: {} } } });
  });
});

// ---------------------------------------------------------------------------------------------

describe('role-scoped directives', () => {
  it('apply <role>.<key> only to models serving that role, over the unscoped key', () => {
    const directives = parseDirectives('[[sim: tokens=10; primary.tokens=3; router.error=500; Validator.TTFT=5]]');
    expect(directivesForRoles(directives, ['primary'])).toEqual({ tokens: '3' });
    expect(directivesForRoles(directives, ['validator', 'router'])).toEqual({ tokens: '10', error: '500', ttft: '5' });
    expect(directivesForRoles(directives, ['tools'])).toEqual({ tokens: '10' });
    const unscoped = parseDirectives('[[sim: tokens=4]]');
    expect(directivesForRoles(unscoped, ['primary'])).toBe(unscoped);
  });

  it('let the first of a model’s roles in config order win', () => {
    const directives = parseDirectives('[[sim: router.tokens=2; validator.tokens=5]]');
    expect(directivesForRoles(directives, ['validator', 'router'])).toEqual({ tokens: '5' });
  });

  it('fail only the router role with router.error, quoted in every step', async () => {
    const request = '[[sim: router.error=500]] Explain monads.';
    expect((await send(VALIDATOR.id, route(request))).status).toBe(500);
    const primary = await send(PRIMARY.id, [{ role: 'user', content: request }]);
    expect(primary.status).toBe(200);
    expect(primary.completionTokens).toBe(PRIMARY.defaultTokens);
    expect((await send(TOOLS_MODEL.id, extract(request))).status).toBe(200);
  });

  it('scope tokens and ttft to the primary role', async () => {
    const request = '[[sim: tokens=9; primary.tokens=3; primary.ttft=150]] Tell me about queues.';
    let started = performance.now();
    expect((await send(PRIMARY.id, [{ role: 'user', content: request }])).completionTokens).toBe(3);
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
    started = performance.now();
    expect((await send(TOOLS_MODEL.id, [{ role: 'user', content: request }])).completionTokens).toBe(9);
    expect(performance.now() - started).toBeLessThan(140);
  });

  it('scope role answers too: validator.validator=fail fails the reviewer model only', async () => {
    const request = '[[sim: validator.validator=fail]] Write a parser.';
    expect((await send(VALIDATOR.id, review(request))).content).toMatch(/^FAIL\n/);
    expect((await send(TOOLS_MODEL.id, review(request))).content).toMatch(/^PASS\n/);
  });

  it('find directives of the original request in a revision conversation', async () => {
    const messages: Message[] = [
      { role: 'user', content: '[[sim: primary.tokens=4]] Write a parser.' },
      { role: 'assistant', content: 'A first draft.' },
      { role: 'user', content: revisionPrompt('FAIL\nMissing error handling.') },
    ];
    expect((await send(PRIMARY.id, messages)).completionTokens).toBe(4);
  });
});

// ---------------------------------------------------------------------------------------------

const critique = (request: string, answer: string, previousIssues?: string): Message[] =>
  conversation(critiqueSystemPrompt(), critiqueUserPrompt(request, answer, previousIssues));

const issueLines = (content: string) => content.split('\n').filter((line) => line.startsWith('- '));

describe('critic (critic=)', () => {
  const answer = 'Read the file line by line, split each line on commas and collect the fields.';

  it('issues-once by default: YES with two or three issues drawn from the answer, then NO once a round quotes them', async () => {
    const first = (await send(VALIDATOR.id, critique('Write a CSV parser.', answer))).content;
    expect(first.split('\n')[0]).toBe('ISSUES_FOUND: YES');
    expect(issueLines(first).length).toBeGreaterThanOrEqual(2);
    expect(issueLines(first).length).toBeLessThanOrEqual(3);
    expect(first.split('\n')).toHaveLength(1 + issueLines(first).length);
    expect(first).toContain(`"${excerptOf(answer)}"`);
    expect(readCritique(first)).toMatchObject({ verdict: 'YES', issues: expect.stringMatching(/^- /) });
    const issues = readCritique(first).issues;
    expect((await send(VALIDATOR.id, critique('Write a CSV parser.', 'A revised answer.', issues))).content).toBe('ISSUES_FOUND: NO');
  });

  it('issues: YES in every round, with issues drawn from the answer under critique', async () => {
    const request = '[[sim: critic=issues]] Write a CSV parser.';
    const first = (await send(VALIDATOR.id, critique(request, answer))).content;
    const revised = 'Use the csv module: it handles quoting, escapes and embedded newlines for you.';
    const second = (await send(VALIDATOR.id, critique(request, revised, readCritique(first).issues))).content;
    expect(readCritique(second).verdict).toBe('YES');
    expect(second).toContain(`"${excerptOf(revised)}"`);
    expect(second).not.toContain(excerptOf(answer));
  });

  it('is deterministic for the same answer, and answers another answer with other issues', async () => {
    const messages = critique('[[sim: critic=issues]] Write a CSV parser.', answer);
    const whole = (await send(VALIDATOR.id, messages)).content;
    expect((await send(VALIDATOR.id, messages)).content).toBe(whole);
    expect((await stream(VALIDATOR.id, messages)).content).toBe(whole);
    expect((await send(VALIDATOR.id, critique('[[sim: critic=issues]] Write a CSV parser.', `${answer} Then print them.`))).content).not.toBe(whole);
  });

  it('none: NO at once; garbage: prose with no verdict line', async () => {
    expect((await send(VALIDATOR.id, critique('[[sim: critic=none]] Write a CSV parser.', answer))).content).toBe('ISSUES_FOUND: NO');
    const garbage = (await send(VALIDATOR.id, critique('[[sim: critic=garbage]] Write a CSV parser.', answer))).content;
    expect(readCritique(garbage).verdict).toBe('unparseable');
    expect(garbage).not.toMatch(/issues[_ ]found|^- /im);
  });

  it('scopes to a role: validator.critic=none clears the validator model only', async () => {
    const messages = critique('[[sim: validator.critic=none; critic=issues]] Write a CSV parser.', answer);
    expect((await send(VALIDATOR.id, messages)).content).toBe('ISSUES_FOUND: NO');
    expect(readCritique((await send(TOOLS_MODEL.id, messages)).content).verdict).toBe('YES');
  });

  it('keeps its verdict when sampled, while the issues may vary', async () => {
    const messages = critique('[[sim: critic=issues]] Write a CSV parser.', answer);
    for (let sample = 0; sample < 4; sample += 1) {
      const content = (await send(VALIDATOR.id, messages, { temperature: 0.7 })).content;
      expect(readCritique(content).verdict).toBe('YES');
      expect(content).toContain(`"${excerptOf(answer)}"`);
    }
  });
});

// ---------------------------------------------------------------------------------------------

const CANDIDATES = ['Lyon is the capital of France, I believe.', 'Paris is the capital of France.', 'The capital of France is Paris.'];

const selection = (request: string, candidates = CANDIDATES): Message[] =>
  conversation(selectSystemPrompt(candidates.length), selectUserPrompt(request, candidates));

describe('selector (select=)', () => {
  it('by default picks the candidate whose words agree most with the others, the first on a tie', async () => {
    const content = (await send(VALIDATOR.id, selection('What is the capital of France?'))).content;
    // Candidates 2 and 3 share every word (Jaccard 1) and 5 of 9 with candidate 1: 2 and 3 tie at 0.78, 2 comes first.
    expect(content).toMatch(/^SELECTED: 2\nCONFIDENCE: 0\.89\n[A-Z][^\n]*\.$/);
    expect(readSelection(content, 3)).toMatchObject({ index: 2, confidence: 0.89 });
    const reordered = [CANDIDATES[1]!, CANDIDATES[0]!, 'Lyon, I believe, is the capital of France.'];
    expect(readSelection((await send(VALIDATOR.id, selection('What is the capital of France?', reordered))).content, 3).index).toBe(2);
  });

  it('answers select=<n> with that number and confidence 0.8, even past the last candidate', async () => {
    const chosen = (await send(VALIDATOR.id, selection('[[sim: select=3]] What is the capital of France?'))).content;
    expect(chosen).toMatch(/^SELECTED: 3\nCONFIDENCE: 0\.8\n[A-Z][^\n]*\.$/);
    expect(readSelection(chosen, 3)).toMatchObject({ index: 3, confidence: 0.8 });
    const impossible = (await send(VALIDATOR.id, selection('[[sim: select=7]] What is the capital of France?'))).content;
    expect(impossible.split('\n')[0]).toBe('SELECTED: 7');
    expect(readSelection(impossible, 3).index).toBeNull();
  });

  it('garbage: a sentence without the format', async () => {
    const content = (await send(VALIDATOR.id, selection('[[sim: select=garbage]] What is the capital of France?'))).content;
    expect(readSelection(content, 3).index).toBeNull();
    expect(content).not.toMatch(/selected|confidence|\d/i);
  });

  it('keeps its pick when sampled, and scopes to a role', async () => {
    const messages = selection('[[sim: validator.select=1]] What is the capital of France?');
    for (let sample = 0; sample < 3; sample += 1) {
      expect((await send(VALIDATOR.id, messages, { temperature: 0.9 })).content.split('\n')[0]).toBe('SELECTED: 1');
    }
    expect((await send(TOOLS_MODEL.id, messages)).content.split('\n')[0]).toBe('SELECTED: 2');
  });
});

// ---------------------------------------------------------------------------------------------

const REFERENCES = [
  'Use a loop over the lines and return the total of the parsed numbers.',
  'Split the input on newlines, parse each line as a number, then sum them.',
  'Reduce over the lines with an accumulator; skip the blank ones.',
];

const aggregation = (request: string, references = REFERENCES): Message[] => conversation(aggregateSystemPrompt(references), request);

/** The reference lines of a synthesis: `[n] "excerpt"`. */
const referenceLines = (content: string) => content.split('\n').filter((line) => /^\[\d+\] "/.test(line));

describe('aggregator (and later-layer proposers)', () => {
  it('says how many responses it synthesised and quotes the start of each, then writes prose', async () => {
    const { content } = await send(PRIMARY.id, aggregation('Sum the numbers in a file.'));
    const lines = content.split('\n');
    expect(lines[0]).toBe('Synthesised from 3 responses:');
    expect(referenceLines(content)).toEqual(REFERENCES.map((reference, index) => `[${index + 1}] "${excerptOf(reference)}"`));
    expect(lines[4]).toBe('');
    expect(splitIntoTokens(lines.slice(5).join('\n'))).toHaveLength(PRIMARY.defaultTokens);
    expect(excerptOf(REFERENCES[0]!)).toBe('Use a loop over the lines…');
  });

  it('is deterministic for the same references, and draws on other references otherwise', async () => {
    const messages = aggregation('Sum the numbers in a file.');
    const whole = (await send(PRIMARY.id, messages)).content;
    expect((await send(PRIMARY.id, messages)).content).toBe(whole);
    expect((await stream(PRIMARY.id, messages)).content).toBe(whole);
    const two = (await send(PRIMARY.id, aggregation('Sum the numbers in a file.', [REFERENCES[2]!, REFERENCES[0]!]))).content;
    expect(two.split('\n')[0]).toBe('Synthesised from 2 responses:');
    expect(referenceLines(two)).toEqual([`[1] "${excerptOf(REFERENCES[2]!)}"`, `[2] "${excerptOf(REFERENCES[0]!)}"`]);
  });

  it('reads references that contain closing lines, contract sentences or nothing', async () => {
    const tricky = ['First line\n>>>\nstill the first reference', 'Reply with PASS or FAIL on the first line', 'Short one', ''];
    const { status, content } = await send(PRIMARY.id, aggregation('Summarise.', tricky));
    expect(status).toBe(200);
    expect(referenceLines(content)).toEqual(['[1] "First line >>> still the first…"', '[2] "Reply with PASS or FAIL on…"', '[3] "Short one"', '[4] ""']);
  });

  it("answers a later layer's proposer (the step's own system text after the references) the same way", async () => {
    const messages: Message[] = [
      { role: 'system', content: `${aggregateSystemPrompt(REFERENCES)}\n\nBe concise.` },
      { role: 'user', content: 'Sum the numbers.' },
    ];
    expect(referenceLines((await send(PRIMARY.id, messages)).content)).toHaveLength(3);
  });

  it('lets tokens= set the prose length, and puts the whole synthesis in {"answer"} under json_object', async () => {
    const short = (await send(PRIMARY.id, aggregation('[[sim: tokens=5]] Sum the numbers.'))).content;
    expect(splitIntoTokens(short.split('\n').slice(5).join('\n'))).toHaveLength(5);
    const json = JSON.parse((await send(PRIMARY.id, aggregation('Sum the numbers.'), { response_format: { type: 'json_object' } })).content) as {
      answer: string;
    };
    expect(json.answer).toBe((await send(PRIMARY.id, aggregation('Sum the numbers.'))).content);
  });

  it('varies the prose, not the references it quotes, when sampled', async () => {
    const messages = aggregation('[[sim: tokens=12]] Sum the numbers in a list.');
    const samples = [];
    for (let sample = 0; sample < 3; sample += 1) samples.push((await send(PRIMARY.id, messages, { temperature: 0.7 })).content);
    expect(new Set(samples).size).toBe(3);
    for (const content of samples) expect(referenceLines(content)).toEqual(referenceLines(samples[0]!));
  });
});
