import { ModelResponseError, type TaskEventPayload } from '@mageagent/core';
import type { PatternInput } from './context';
import { PatternRegistry, runPattern } from './patterns';
import { PREVIOUS_REVIEW_HEADING, TOOLS_RETRY_LEAD } from './prompts';
import { FakeModel, fakeContext } from './test-models';

const input = (text: string, extra: Partial<PatternInput> = {}): PatternInput => ({
  messages: [{ role: 'user', content: text }],
  options: {},
  ...extra,
});

const registry = new PatternRegistry();
const types = (events: TaskEventPayload[]) => events.map((event) => event.type);
const startedSteps = (events: TaskEventPayload[]) => events.flatMap((event) => (event.type === 'step.started' ? [event.step] : []));

describe('validated', () => {
  test('PASS: draft, one review, approved; the draft is not streamed as final', async () => {
    const primary = new FakeModel('p-72b', ['def add(a, b): return a + b']);
    const validator = new FakeModel('v-7b', ['PASS\nCorrect and minimal.']);
    const { context, events } = fakeContext({ primary, validator });
    const result = await runPattern(registry, 'validated', input('explain addition'), context);
    expect(result).toMatchObject({ content: 'def add(a, b): return a + b', approved: true, model: 'p-72b', pattern: 'validated' });
    expect(result.steps.map((step) => [step.name, step.kind, step.verdict])).toEqual([
      ['draft', 'draft', undefined],
      ['review', 'review', 'PASS'],
    ]);
    expect(result.steps[1]!.note).toBe('Correct and minimal.');
    expect(startedSteps(events).map((step) => step.final ?? false)).toEqual([false, false]);
    expect(result.usage.totalTokens).toBe(result.steps.reduce((sum, step) => sum + step.usage.totalTokens, 0));
  });

  test('FAIL → revision with the feedback → re-review that quotes the first review → PASS', async () => {
    const primary = new FakeModel('p', ['first try', 'second try']);
    const validator = new FakeModel('v', ['FAIL\nMissing error handling.', 'PASS\nFixed.']);
    const { context, events } = fakeContext({ primary, validator });
    const result = await runPattern(registry, 'validated', input('write code'), context);
    expect(result).toMatchObject({ content: 'second try', approved: true });
    expect(result.steps.map((step) => `${step.name}:${step.verdict ?? ''}`)).toEqual(['draft:', 'review:FAIL', 'revise:', 'review:PASS']);
    const revisionRequest = primary.requests[1]!.messages;
    expect(revisionRequest.at(-2)).toEqual({ role: 'assistant', content: 'first try' });
    expect(revisionRequest.at(-1)!.content).toContain('Missing error handling.');
    expect(validator.requests[1]!.messages.at(-1)!.content).toContain(PREVIOUS_REVIEW_HEADING);
    expect(validator.requests[1]!.messages.at(-1)!.content).toContain('second try');
    const completed = events.filter((event) => event.type === 'step.completed');
    expect(completed.map((event) => event.type === 'step.completed' && event.verdict)).toEqual([undefined, 'FAIL', undefined, 'PASS']);
  });

  test('FAIL twice: the revised answer stands, not approved, with a warning', async () => {
    const primary = new FakeModel('p', ['first', 'second']);
    const validator = new FakeModel('v', ['FAIL\nwrong']);
    const { context, events } = fakeContext({ primary, validator });
    const result = await runPattern(registry, 'validated', input('write code'), context);
    expect(result).toMatchObject({ content: 'second', approved: false });
    expect(result.steps).toHaveLength(4);
    expect(result.warnings).toEqual(['the answer still failed review after 1 revision']);
    expect(types(events)).toContain('warning');
  });

  test('options.maxRevisions raises the limit', async () => {
    const primary = new FakeModel('p', ['1', '2', '3']);
    const validator = new FakeModel('v', ['FAIL\nno', 'FAIL\nstill no', 'PASS\nok']);
    const { context } = fakeContext({ primary, validator });
    const result = await runPattern(registry, 'validated', input('code', { options: { maxRevisions: 2 } }), context);
    expect(result).toMatchObject({ content: '3', approved: true });
    expect(result.steps).toHaveLength(6);
  });

  test('an unparseable review is FAIL with a note, never PASS', async () => {
    const primary = new FakeModel('p', ['draft', 'revised']);
    const validator = new FakeModel('v', ['Looks fine to me overall.', '**PASS** good now']);
    const { context } = fakeContext({ primary, validator });
    const result = await runPattern(registry, 'validated', input('code'), context);
    expect(result.steps[1]).toMatchObject({ verdict: 'unparseable', note: expect.stringContaining('treated as FAIL') });
    expect(result).toMatchObject({ content: 'revised', approved: true });
    expect(result.warnings?.[0]).toMatch(/unparseable/);
  });
});

describe('compete', () => {
  const solutions = () => ({
    primary: new FakeModel('p-72b', ['solution from primary'], { delayMs: 20 }),
    competitor: new FakeModel('c-32b', ['solution from competitor'], { delayMs: 20 }),
  });

  test.each([
    ['A\nA is clearer.', 'solution from primary', 'A'],
    ['**B** - handles the edge case.', 'solution from competitor', 'B'],
  ])('judge answer %j picks the right solution', async (judgement, content, verdict) => {
    const models = solutions();
    const { context } = fakeContext({ ...models, validator: new FakeModel('v', [judgement]) });
    const result = await runPattern(registry, 'compete', input('sort a list'), context);
    expect(result.content).toBe(content);
    expect(result.steps.map((step) => step.kind)).toEqual(['candidate', 'candidate', 'judge']);
    expect(result.steps[2]).toMatchObject({ verdict });
  });

  test('both solutions start together; only the host scheduler may serialise them', async () => {
    let running = 0;
    let overlap = false;
    const slow = (text: string) => async () => {
      running += 1;
      if (running === 2) overlap = true;
      await new Promise((resolve) => setTimeout(resolve, 20));
      running -= 1;
      return text;
    };
    const { context } = fakeContext({
      primary: new FakeModel('p', [slow('a')]),
      competitor: new FakeModel('c', [slow('b')]),
      validator: new FakeModel('v', ['A\nok']),
    });
    await runPattern(registry, 'compete', input('x'), context);
    expect(overlap).toBe(true);
  });

  test('an unparseable judgement falls back to A (the first solution), recorded, never silently B', async () => {
    const { context } = fakeContext({ ...solutions(), validator: new FakeModel('v', ['A better answer would combine both.']) });
    const result = await runPattern(registry, 'compete', input('x'), context);
    expect(result.content).toBe('solution from primary');
    expect(result.steps[2]).toMatchObject({ verdict: 'unparseable', note: expect.stringContaining('fell back to A') });
    expect(result.warnings?.[0]).toMatch(/unparseable/);
  });

  test('a failed solution drops out with a warning and the other wins without a judge', async () => {
    const { context } = fakeContext({
      primary: new FakeModel('p', [new ModelResponseError('context too long')]),
      competitor: new FakeModel('c', ['only answer']),
      validator: new FakeModel('v', ['A']),
    });
    const result = await runPattern(registry, 'compete', input('x'), context);
    expect(result.content).toBe('only answer');
    expect(result.steps.map((step) => step.kind)).toEqual(['candidate']);
    expect(result.warnings?.[0]).toMatch(/solution A \(primary\) failed/);
  });
});

describe('tool extraction inside patterns', () => {
  const readCall = '[{"tool": "Read", "arguments": {"file_path": "src/app.ts"}}]';

  test('hybrid extracts when the request reads like it needs tools; the answer step is final', async () => {
    const tools = new FakeModel('hermes', [readCall]);
    const { context, events } = fakeContext({ primary: new FakeModel('p', ['Open the file.']), tools });
    const result = await runPattern(registry, 'hybrid', input('read the file src/app.ts and explain it'), context);
    expect(result.toolCalls).toEqual([{ id: 'call_1', tool: 'Read', arguments: { file_path: 'src/app.ts' } }]);
    expect(result.content).toBe('Open the file.');
    expect(startedSteps(events).map((step) => [step.kind, step.final ?? false])).toEqual([
      ['answer', true],
      ['tools', false],
    ]);
    expect(events.find((event) => event.type === 'tool_calls')).toMatchObject({ calls: result.toolCalls });
  });

  test('hybrid skips extraction for plain questions, and options.extractTools forces it', async () => {
    const tools = new FakeModel('hermes', [readCall]);
    const models = { primary: new FakeModel('p', ['Quicksort partitions.']), tools };
    const plain = await runPattern(registry, 'hybrid', input('explain quicksort'), fakeContext(models).context);
    expect(plain.toolCalls).toEqual([]);
    expect(tools.calls).toBe(0);
    const forced = await runPattern(registry, 'hybrid', input('explain quicksort', { options: { extractTools: 'always' } }), fakeContext(models).context);
    expect(forced.toolCalls).toHaveLength(1);
  });

  test('tool_choice none skips extraction even when tools are supplied', async () => {
    const tools = new FakeModel('hermes', [readCall]);
    const { context } = fakeContext({ primary: new FakeModel('p', ['ok']), tools });
    const result = await runPattern(
      registry,
      'hybrid',
      input('read src/app.ts', {
        toolChoice: 'none',
        tools: [{ type: 'function', function: { name: 'Read', parameters: { type: 'object' } } }],
      }),
      context,
    );
    expect(result.toolCalls).toEqual([]);
    expect(tools.calls).toBe(0);
  });

  test('request-supplied tools are the allowed set and their schemas validate the arguments', async () => {
    const weather = {
      type: 'function' as const,
      function: {
        name: 'get_weather',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false },
      },
    };
    const tools = new FakeModel('hermes', [
      '[{"tool": "get_weather", "arguments": {"town": "Oslo"}}]',
      '[{"tool": "get_weather", "arguments": {"city": "Oslo"}}]',
    ]);
    const { context } = fakeContext({ primary: new FakeModel('p', ['Checking.']), tools });
    const result = await runPattern(registry, 'hybrid', input('weather in Oslo?', { tools: [weather] }), context);
    expect(result.toolCalls).toEqual([{ id: 'call_1', tool: 'get_weather', arguments: { city: 'Oslo' } }]);
    expect(tools.requests[1]!.messages.at(-1)!.content).toContain(TOOLS_RETRY_LEAD);
  });

  test('the tools pattern is one call on the tools role', async () => {
    const tools = new FakeModel('hermes', [`Sure: ${readCall}`]);
    const { context } = fakeContext({ tools });
    const result = await runPattern(registry, 'tools', input('show me package.json'), context);
    expect(result.steps).toHaveLength(1);
    expect(result.steps[0]).toMatchObject({ role: 'tools', kind: 'tools' });
    expect(result.toolCalls).toHaveLength(1);
  });

  test('without a tools role, automatic extraction is skipped with a warning', async () => {
    const { context } = fakeContext({ primary: new FakeModel('p', ['ok']) });
    const result = await runPattern(registry, 'hybrid', input('run the tests with npm test'), context);
    expect(result.toolCalls).toEqual([]);
    expect(result.warnings?.[0]).toMatch(/no "tools" role/);
  });
});

describe('optional steps that fail, and tools nobody extracts', () => {
  const weather = {
    type: 'function' as const,
    function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
  };

  test('a failed extraction keeps the answer and warns; the tools pattern, with nothing else, fails', async () => {
    const broken = new FakeModel('hermes', [new ModelResponseError('tools model rejected the request')]);
    const { context } = fakeContext({ primary: new FakeModel('p', ['the answer']), tools: broken });
    const result = await runPattern(registry, 'hybrid', input('run the tests with npm test'), context);
    expect(result).toMatchObject({ content: 'the answer', toolCalls: [] });
    expect(result.warnings?.[0]).toMatch(/tool extraction failed/);
    await expect(runPattern(registry, 'tools', input('run npm test'), fakeContext({ tools: broken }).context)).rejects.toMatchObject({ code: 'MODEL_ERROR' });
  });

  test('a failed judge leaves compete with solution A and a warning', async () => {
    const { context } = fakeContext({
      primary: new FakeModel('p', ['solution A']),
      competitor: new FakeModel('c', ['solution B']),
      validator: new FakeModel('v', [new ModelResponseError('judge exploded')]),
    });
    const result = await runPattern(registry, 'compete', input('x'), context);
    expect(result.content).toBe('solution A');
    expect(result.warnings?.[0]).toMatch(/the judge failed/);
  });

  test('auto extracts request tools even on the fast route, once, and never twice after validated', async () => {
    const tools = new FakeModel('hermes', ['[{"tool": "get_weather", "arguments": {"city": "Paris"}}]']);
    const general = await runPattern(
      registry,
      'auto',
      input('what is the weather in Paris?', { tools: [weather] }),
      fakeContext({ validator: new FakeModel('v', ['Sunny.']), tools }).context,
    );
    expect(general).toMatchObject({ pattern: 'validator', toolCalls: [{ tool: 'get_weather', arguments: { city: 'Paris' } }] });
    expect(tools.calls).toBe(1);
    const coding = await runPattern(
      registry,
      'auto',
      input('implement a function for the weather in Paris', { tools: [weather] }),
      fakeContext({ primary: new FakeModel('p', ['code']), validator: new FakeModel('v', ['PASS\nok']), tools }).context,
    );
    expect(coding).toMatchObject({ pattern: 'validated', toolCalls: [{ tool: 'get_weather' }] });
    expect(tools.calls).toBe(2);
  });

  test('a direct pattern given tools says it did not use them', async () => {
    const { context } = fakeContext({ primary: new FakeModel('p', ['answer']) });
    const result = await runPattern(registry, 'primary', input('weather?', { tools: [weather] }), context);
    expect(result.warnings?.[0]).toMatch(/does not extract tool calls/);
  });

  test('a revision continues the conversation of the step that answered, system prompt included', async () => {
    const declared = new PatternRegistry({
      source: 'p.yaml',
      patterns: {
        styled: {
          description: 'd',
          steps: [{ generate: { role: 'primary', system: 'Answer in French.' } }, { validate: {} }],
        },
      },
    });
    const primary = new FakeModel('p', ['hello', 'bonjour']);
    const { context } = fakeContext({ primary, validator: new FakeModel('v', ['FAIL\nnot French', 'PASS\nok']) });
    const result = await runPattern(declared, 'styled', input('greet me'), context);
    expect(result.content).toBe('bonjour');
    expect(primary.requests[1]!.messages.slice(0, 3)).toEqual([
      { role: 'system', content: 'Answer in French.' },
      { role: 'user', content: 'greet me' },
      { role: 'assistant', content: 'hello' },
    ]);
  });
});

describe('auto', () => {
  const base = () => ({
    primary: new FakeModel('p', ['primary answer']),
    validator: new FakeModel('v', ['PASS\nfine']),
  });

  test.each([
    ['implement a function that parses dates', 'coding', 'validated'],
    ['```js\nconst x = 1\n```\nwhat is wrong?', 'coding', 'validated'],
    ['explain the CAP theorem', 'reasoning', 'hybrid'],
    ['hello there', 'general', 'validator'],
  ])('keywords route %j to %s → %s', async (text, route, pattern) => {
    const { context, events } = fakeContext(base());
    const result = await runPattern(registry, 'auto', input(text), context);
    expect(result.route).toMatchObject({ route, pattern, method: 'keywords' });
    expect(result.pattern).toBe(pattern);
    expect(events.find((event) => event.type === 'route')).toMatchObject({ decision: { route, pattern } });
  });

  test('a configured router decides, and its decision is recorded', async () => {
    const router = new FakeModel('r', ['{"route": "reasoning", "confidence": 0.8, "reason": "asks for a plan"}']);
    const { context } = fakeContext({ ...base(), router });
    const result = await runPattern(registry, 'auto', input('hello there'), context);
    expect(result.route).toEqual({ pattern: 'hybrid', route: 'reasoning', method: 'router', reason: 'asks for a plan', confidence: 0.8 });
    expect(result.steps[0]).toMatchObject({ kind: 'route', verdict: 'reasoning' });
  });

  test.each([
    ['garbage', 'I think this is a coding question.', /no JSON object/],
    ['low confidence', '{"route": "general", "confidence": 0.2, "reason": "unsure"}', /below 0.5/],
    ['unknown route', '{"route": "poetry", "confidence": 0.9, "reason": "?"}', /unknown route/],
    ['a failed call', new ModelResponseError('router exploded'), /router call failed/],
  ])('router %s → keyword fallback with the reason recorded', async (_case, answer, reason) => {
    const { context } = fakeContext({ ...base(), router: new FakeModel('r', [answer]) });
    const result = await runPattern(registry, 'auto', input('implement a class'), context);
    expect(result.route).toMatchObject({ route: 'coding', pattern: 'validated', method: 'keywords', fallbackReason: expect.stringMatching(reason) });
  });
});

describe('declared patterns', () => {
  test('templates see the request and earlier steps; onFail stop ends the pipeline', async () => {
    const declared = new PatternRegistry({
      source: 'patterns.yaml',
      patterns: {
        'outline-then-write': {
          description: 'Outline with the small model, write with the big one, review once.',
          steps: [
            { generate: { id: 'outline', role: 'validator', prompt: 'Outline: {{request}}' } },
            { generate: { id: 'write', role: 'primary', system: 'Follow this outline:\n{{steps.outline}}' } },
            { validate: { onFail: 'stop' } },
            { extractTools: { when: 'always' } },
          ],
        },
      },
    });
    const primary = new FakeModel('p', ['the essay']);
    const validator = new FakeModel('v', ['1. intro 2. body', 'FAIL\ntoo short']);
    const tools = new FakeModel('t', ['[]']);
    const { context } = fakeContext({ primary, validator, tools });
    const result = await runPattern(declared, 'outline-then-write', input('an essay on tea'), context);
    expect(validator.requests[0]!.messages).toEqual([{ role: 'user', content: 'Outline: an essay on tea' }]);
    expect(primary.requests[0]!.messages[0]).toEqual({ role: 'system', content: 'Follow this outline:\n1. intro 2. body' });
    expect(result).toMatchObject({ content: 'the essay', approved: false, pattern: 'outline-then-write' });
    expect(tools.calls).toBe(0);
    expect(declared.list().find((pattern) => pattern.name === 'outline-then-write')).toMatchObject({ builtIn: false, steps: expect.any(Array) });
  });

  test.each([
    [{ steps: [{ validate: {} }] }, /step 1 \(validate\): nothing to validate/],
    [{ steps: [{ generate: { role: 'primary', prompt: '{{steps.later}}' } }] }, /step 1 \(generate\): template references \{\{steps.later\}\}/],
    [{ steps: [{ route: { routes: { a: { pattern: 'nope', description: 'x' } }, default: 'a' } }] }, /routes to unknown pattern "nope"/],
    [{ steps: [{ generate: { role: 'primary', id: 'x' } }, { generate: { role: 'primary', id: 'x' } }] }, /duplicate step id "x"/],
    [{ steps: [{ generate: { role: 'primary', temperature: 9 } }] }, /step 1 \(generate\)\.temperature/],
    [{ steps: [{ summarise: {} }] }, /step 1/],
  ])('an invalid declaration fails with the file, pattern and step named (%#)', (declaration, message) => {
    const build = () => new PatternRegistry({ source: 'my-patterns.yaml', patterns: { mine: { description: 'd', ...declaration } } });
    expect(build).toThrow(/my-patterns.yaml: pattern "mine"/);
    expect(build).toThrow(message);
  });

  test('a declared pattern may not take a built-in name', () => {
    expect(() => new PatternRegistry({ source: 'p.yaml', patterns: { compete: { description: 'd', steps: [{ generate: { role: 'primary' } }] } } })).toThrow(
      /already defined/,
    );
  });
});
