import type { TaskEventPayload, TaskResult } from '@mageagent/core';
import { OpenAICompatibleModel } from '@mageagent/models';
import { PatternRegistry, readCritique, runPattern, type PatternContext } from '@mageagent/patterns';
import { excerptOf } from './roles';
import { createSimulator, splitIntoTokens, type SimulatedModelInput, type Simulator } from './simulator';

/**
 * The Mixture-of-Agents, self-consistency and critic patterns run end to end against the real
 * simulator over HTTP, through the real OpenAI-compatible client: the simulator's answers in role
 * drive each pattern's branches, and its call log shows what reached the models.
 */

/** Instant models, one per role as the shipped config has them. */
const MODELS: SimulatedModelInput[] = [
  { id: 'sim-primary', roles: ['primary'], defaultTokens: 30 },
  { id: 'sim-competitor', roles: ['competitor'], defaultTokens: 20 },
  { id: 'sim-validator', roles: ['validator'], defaultTokens: 10 },
  { id: 'sim-tools', roles: ['tools'], defaultTokens: 10 },
].map((model) => ({ ...model, host: 'sim-mac', ttftMs: 0, tokensPerSecond: 0 }));

/**
 * Every role sampled at a low temperature unless a step says otherwise, as a config's role
 * temperatures do; low and distinct from the patterns' 0.7 so the call log shows whose
 * temperature a call carried.
 */
const ROLE_TEMPERATURE = 0.2;

let simulator: Simulator;
let context: PatternContext;
let events: TaskEventPayload[];
const registry = new PatternRegistry();

beforeAll(async () => {
  simulator = createSimulator({ models: MODELS });
  const endpoint = `http://127.0.0.1:${await simulator.listen(0)}/v1`;
  const clients = new Map(
    MODELS.map((model) => [
      model.roles?.[0] ?? model.id,
      new OpenAICompatibleModel({
        id: model.id,
        host: 'sim-mac',
        endpoint,
        timeouts: { firstTokenMs: 5000, totalMs: 10_000 },
        defaults: { temperature: ROLE_TEMPERATURE },
      }),
    ]),
  );
  context = {
    models: {
      role: (name) => {
        const client = clients.get(name);
        if (client === undefined) throw new Error(`no simulated model for role ${name}`);
        return client;
      },
      has: (name) => clients.has(name),
    },
    events: { emit: (event) => events.push(event) },
    signal: new AbortController().signal,
    retry: { retries: 1, baseDelayMs: 1, retryAfterMaxMs: 1000 },
  };
});

beforeEach(() => {
  events = [];
  simulator.reset();
});

afterAll(async () => {
  await simulator.close();
});

const run = (pattern: string, prompt: string): Promise<TaskResult> =>
  runPattern(registry, pattern, { messages: [{ role: 'user', content: prompt }], options: {} }, context);

/** What a step streamed, by the step's record. */
function textOf(step: { id: string }): string {
  return events.map((event) => (event.type === 'delta' && event.stepId === step.id ? event.text : '')).join('');
}

/** The `[n] "excerpt"` lines a synthesis quotes its references with. */
const quotedReferences = (synthesis: string): string[] => synthesis.split('\n').filter((line) => /^\[\d+\] "/.test(line));

const expectedQuotes = (references: string[]): string[] => references.map((reference, index) => `[${index + 1}] "${excerptOf(reference)}"`);

describe('aggregate (moa, moa-deep, self-moa) against the simulator', () => {
  it('moa: a failing reference drops out, and the aggregator draws on exactly the two that answered', async () => {
    const result = await run('moa', 'Explain how a work queue spreads load. [[sim: competitor.error=500]]');
    const references = result.steps.filter((step) => step.kind === 'reference');
    expect(references.map((step) => step.role)).toEqual(['primary', 'validator']);
    expect(result.aggregation).toEqual({ layers: [{ layer: 1, answered: 2, failed: 1 }] });
    expect(result.warnings).toEqual([expect.stringMatching(/^reference 2 of layer 1 \(competitor\) failed: /)]);
    const aggregator = result.steps.find((step) => step.kind === 'aggregate')!;
    expect(aggregator.role).toBe('primary');
    expect(result.content).toBe(textOf(aggregator));
    expect(result.content.split('\n')[0]).toBe('Synthesised from 2 responses:');
    expect(quotedReferences(result.content)).toEqual(expectedQuotes(references.map(textOf)));
    // The competitor was called, once and once more on retry, and answered nothing.
    expect(simulator.stats().requestsByModel).toMatchObject({ 'sim-competitor': 2, 'sim-primary': 2, 'sim-validator': 1 });
  });

  it('moa-deep: each layer-2 proposer draws on the three layer-1 answers, the aggregator on the three layer-2 answers', async () => {
    const result = await run('moa-deep', 'Explain how a work queue spreads load.');
    const layer = (number: number) => result.steps.filter((step) => step.kind === 'reference' && step.layer === number);
    expect(layer(1)).toHaveLength(3);
    expect(layer(2)).toHaveLength(3);
    const firstLayerQuotes = expectedQuotes(layer(1).map(textOf));
    for (const proposer of layer(2)) {
      expect(textOf(proposer).split('\n')[0]).toBe('Synthesised from 3 responses:');
      expect(quotedReferences(textOf(proposer))).toEqual(firstLayerQuotes);
    }
    expect(quotedReferences(result.content)).toEqual(expectedQuotes(layer(2).map(textOf)));
    const calls = simulator.stats({ includeCalls: true }).calls ?? [];
    expect(calls.map((call) => call.role).sort()).toEqual(['aggregator', 'aggregator', 'aggregator', 'aggregator', 'answer', 'answer', 'answer']);
  });

  it("self-moa: three different samples at the step's temperature 0.7, all three synthesised", async () => {
    const result = await run('self-moa', 'Explain how a work queue spreads load.');
    const samples = result.steps.filter((step) => step.kind === 'reference');
    expect(samples.map((step) => [step.role, step.temperature])).toEqual([
      ['primary', 0.7],
      ['primary', 0.7],
      ['primary', 0.7],
    ]);
    const texts = samples.map(textOf);
    expect(new Set(texts).size).toBe(3);
    expect(quotedReferences(result.content)).toEqual(expectedQuotes(texts));
    // What reached the model: the samples at 0.7, variants 0, 1 and 2 of one request; the synthesis at the role's temperature.
    const calls = simulator.stats({ includeCalls: true }).calls ?? [];
    const sampleCalls = calls.filter((call) => call.role === 'answer');
    expect(sampleCalls.map((call) => call.temperature)).toEqual([0.7, 0.7, 0.7]);
    expect(sampleCalls.map((call) => call.variant).sort()).toEqual([0, 1, 2]);
    expect(calls.filter((call) => call.role === 'aggregator').map((call) => call.temperature)).toEqual([ROLE_TEMPERATURE]);
  });
});

describe('select (self-consistent) against the simulator', () => {
  it("draws three different samples at 0.7 and takes the selector's most consistent one by default", async () => {
    const result = await run('self-consistent', 'What is the capital of France?');
    const samples = result.steps.filter((step) => step.kind === 'sample');
    expect(new Set(samples.map(textOf)).size).toBe(3);
    expect(samples.every((step) => step.temperature === 0.7)).toBe(true);
    expect(result.selection).toMatchObject({ samples: 3, method: 'judge', confidence: expect.any(Number) });
    expect(result.content).toBe(textOf(samples[result.selection!.chosen - 1]!));
    // Deterministic: after a reset the same three texts come back (in whatever order the calls
    // arrived), and the same text is picked, with the same confidence.
    simulator.reset();
    events = [];
    const again = await run('self-consistent', 'What is the capital of France?');
    expect(again.content).toBe(result.content);
    expect(again.selection?.confidence).toBe(result.selection?.confidence);
  });

  it('select=3 takes sample 3 with confidence 0.8', async () => {
    const result = await run('self-consistent', 'What is the capital of France? [[sim: select=3]]');
    const samples = result.steps.filter((step) => step.kind === 'sample');
    expect(result.selection).toEqual({ samples: 3, chosen: 3, method: 'judge', confidence: 0.8 });
    expect(result.content).toBe(textOf(samples[2]!));
    expect(result.steps.find((step) => step.kind === 'select')).toMatchObject({ role: 'validator', verdict: '3' });
  });

  it.each(['select=9', 'select=garbage'])('%s: the selection is unusable, so sample 1 stands, recorded and warned', async (directive) => {
    const result = await run('self-consistent', `What is the capital of France? [[sim: ${directive}]]`);
    expect(result.selection).toEqual({ samples: 3, chosen: 1, method: 'fallback' });
    expect(result.content).toBe(textOf(result.steps.find((step) => step.kind === 'sample')!));
    expect(result.steps.find((step) => step.kind === 'select')?.verdict).toBe('unparseable');
    expect(result.warnings).toEqual([expect.stringMatching(/unparseable; sample 1 was chosen/)]);
  });
});

describe('critique (critic) against the simulator', () => {
  it('by default (issues-once): issues, one revision, then no issues', async () => {
    const result = await run('critic', 'Write a CSV parser.');
    expect(result.steps.map((step) => `${step.kind}:${step.verdict ?? ''}`)).toEqual(['draft:', 'critique:YES', 'revision:', 'critique:NO']);
    const [draft, firstCritique, revision, secondCritique] = result.steps;
    // The critic read the draft, then the revision.
    expect(textOf(firstCritique!)).toContain(`"${excerptOf(textOf(draft!))}"`);
    expect(result.critique).toEqual({
      rounds: [
        { round: 1, verdict: 'YES', issues: readCritique(textOf(firstCritique!)).issues },
        { round: 2, verdict: 'NO', issues: '' },
      ],
      finalVerdict: 'NO',
    });
    expect(textOf(secondCritique!)).toBe('ISSUES_FOUND: NO');
    expect(result.content).toBe(textOf(revision!));
    expect(result.content).not.toBe(textOf(draft!));
    expect(result.warnings).toBeUndefined();
  });

  it('critic=issues: issues in every round, so the loop runs out of rounds and says so', async () => {
    const result = await run('critic', 'Write a CSV parser. [[sim: critic=issues]]');
    expect(result.critique?.rounds.map((round) => round.verdict)).toEqual(['YES', 'YES']);
    expect(result.steps.filter((step) => step.kind === 'revision')).toHaveLength(2);
    expect(result.warnings).toEqual(['the critic still found issues after 2 rounds; the last revision stands']);
  });

  it('critic=none: the draft stands after one critique; validator.critic=garbage: unparseable, counted as issues', async () => {
    const clean = await run('critic', 'Write a CSV parser. [[sim: critic=none]]');
    expect(clean.critique).toEqual({ rounds: [{ round: 1, verdict: 'NO', issues: '' }], finalVerdict: 'NO' });
    expect(clean.content).toBe(textOf(clean.steps[0]!));
    events = [];
    const garbled = await run('critic', 'Write a CSV parser. [[sim: validator.critic=garbage]]');
    expect(garbled.critique?.rounds.map((round) => round.verdict)).toEqual(['unparseable', 'unparseable']);
    expect(garbled.warnings?.filter((warning) => /unparseable and counted as YES/.test(warning))).toHaveLength(2);
  });

  it('revises with ordinary prose, so primary.tokens= sets the length of the draft and of each revision', async () => {
    const result = await run('critic', 'Write a CSV parser. [[sim: primary.tokens=12]]');
    for (const step of result.steps.filter((record) => record.role === 'primary')) expect(splitIntoTokens(textOf(step))).toHaveLength(12);
  });
});
