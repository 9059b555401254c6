/**
 * The Mixture-of-Agents step kinds (aggregate, select, critique) with fake models: layers see the
 * previous layer, samples are drawn at their temperature, failures drop out, too few fail the step,
 * a failed aggregator or an unreadable verdict falls back with a warning, critique stops on NO and
 * at maxRounds. Built-ins and declared patterns alike.
 */
import { ModelUnavailableError, type TaskEventPayload } from '@mageagent/core';
import type { ChatRequest } from '@mageagent/models';
import type { PatternInput } from '../context';
import { PatternRegistry, runPattern } from '../patterns';
import { AGGREGATE_INSTRUCTION, AGGREGATE_REFERENCES_HEADING, PREVIOUS_CRITIQUE_HEADING, SELECT_INSTRUCTION } from '../prompts';
import { FakeModel, fakeContext } from '../test-models';
import { readCritique, readSelection } from '../verdicts';

const input = (text: string, extra: Partial<PatternInput> = {}): PatternInput => ({ messages: [{ role: 'user', content: text }], options: {}, ...extra });
const systemOf = (request: ChatRequest) => request.messages.find((message) => message.role === 'system')?.content ?? '';
const startedSteps = (events: TaskEventPayload[]) => events.flatMap((event) => (event.type === 'step.started' ? [event.step] : []));

/** A registry with declared patterns using each new kind with its options. */
function registryWith(patterns: Record<string, unknown>): PatternRegistry {
  return new PatternRegistry({ source: 'test.yaml', patterns });
}

describe('aggregate', () => {
  test('moa: the three references start together, the aggregator sees every one of them and writes the final answer', async () => {
    const primary = new FakeModel('p-72b', [(request) => (systemOf(request).includes(AGGREGATE_INSTRUCTION) ? 'the synthesis' : 'primary view')], {
      delayMs: 20,
    });
    const competitor = new FakeModel('c-32b', ['competitor view'], { delayMs: 20 });
    const validator = new FakeModel('v-7b', ['validator view'], { delayMs: 20 });
    const { context, events } = fakeContext({ primary, competitor, validator });
    const result = await runPattern(new PatternRegistry(), 'moa', input('what is MoA?'), context);
    expect(result).toMatchObject({ content: 'the synthesis', model: 'p-72b', pattern: 'moa', aggregation: { layers: [{ layer: 1, answered: 3, failed: 0 }] } });
    expect(result.steps.map((step) => [step.kind, step.role, step.layer, step.reference])).toEqual([
      ['reference', 'primary', 1, 1],
      ['reference', 'competitor', 1, 2],
      ['reference', 'validator', 1, 3],
      ['aggregate', 'primary', undefined, undefined],
    ]);
    const aggregatorSystem = systemOf(primary.requests.at(-1)!);
    expect(aggregatorSystem).toContain(AGGREGATE_REFERENCES_HEADING);
    for (const view of ['primary view', 'competitor view', 'validator view']) expect(aggregatorSystem).toContain(view);
    expect(aggregatorSystem).toMatch(/may be biased or incorrect/);
    // Started together (the fake models ran at the same time); only the aggregator's call is final.
    const started = startedSteps(events);
    expect(started.filter((step) => step.final).map((step) => step.kind)).toEqual(['aggregate']);
    expect(started.find((step) => step.role === 'competitor')).toMatchObject({ layer: 1, reference: 2, kind: 'reference' });
    expect(primary.maxInFlight + competitor.maxInFlight + validator.maxInFlight).toBe(3);
  });

  test('moa-deep: layer-2 proposers see layer 1’s answers; the aggregator sees layer 2’s', async () => {
    const layerOf = (request: ChatRequest) => (systemOf(request).includes(AGGREGATE_INSTRUCTION) ? 2 : 1);
    const proposer = (name: string) => (request: ChatRequest) => `${name} layer ${layerOf(request)}`;
    const primary = new FakeModel('p', [proposer('primary'), proposer('primary'), 'final synthesis']);
    const competitor = new FakeModel('c', [proposer('competitor')]);
    const validator = new FakeModel('v', [proposer('validator')]);
    const { context } = fakeContext({ primary, competitor, validator });
    const result = await runPattern(new PatternRegistry(), 'moa-deep', input('hard question'), context);
    expect(result.content).toBe('final synthesis');
    expect(result.aggregation?.layers.map((layer) => layer.answered)).toEqual([3, 3]);
    const secondLayer = systemOf(competitor.requests[1]!);
    for (const earlier of ['primary layer 1', 'competitor layer 1', 'validator layer 1']) expect(secondLayer).toContain(earlier);
    expect(secondLayer).not.toContain('layer 2');
    const aggregatorSystem = systemOf(primary.requests[2]!);
    for (const later of ['primary layer 2', 'competitor layer 2', 'validator layer 2']) expect(aggregatorSystem).toContain(later);
    expect(aggregatorSystem).not.toContain('layer 1');
  });

  test('self-moa: three samples of the primary at temperature 0.7 (never the request’s), distinct, then synthesised', async () => {
    let sample = 0;
    const primary = new FakeModel('p', [(request) => (systemOf(request).includes(AGGREGATE_INSTRUCTION) ? 'synthesis' : `sample ${++sample}`)]);
    const { context } = fakeContext({ primary });
    const result = await runPattern(new PatternRegistry(), 'self-moa', input('q', { options: { temperature: 0 } }), context);
    expect(primary.requests.slice(0, 3).map((request) => request.temperature)).toEqual([0.7, 0.7, 0.7]);
    expect(result.steps.slice(0, 3).map((step) => step.temperature)).toEqual([0.7, 0.7, 0.7]);
    expect(new Set(result.steps.slice(0, 3).map((step) => step.reference))).toEqual(new Set([1, 2, 3]));
    expect(systemOf(primary.requests[3]!)).toEqual(expect.stringContaining('sample 3'));
    expect(result.content).toBe('synthesis');
  });

  test('a failed reference drops out with a warning; the aggregator sees the survivors', async () => {
    const primary = new FakeModel('p', [(request) => (systemOf(request).includes(AGGREGATE_INSTRUCTION) ? 'synthesis' : 'primary view')]);
    const competitor = new FakeModel('c', [new ModelUnavailableError('competitor is down', { retryable: false })]);
    const validator = new FakeModel('v', ['validator view']);
    const { context } = fakeContext({ primary, competitor, validator });
    const result = await runPattern(new PatternRegistry(), 'moa', input('q'), context);
    expect(result.content).toBe('synthesis');
    expect(result.aggregation?.layers).toEqual([{ layer: 1, answered: 2, failed: 1 }]);
    expect(result.warnings).toEqual([expect.stringMatching(/^reference 2 of layer 1 \(competitor\) failed: competitor is down/)]);
    const aggregatorSystem = systemOf(primary.requests.at(-1)!);
    expect(aggregatorSystem).toContain('validator view');
    expect(aggregatorSystem).not.toContain('[3]');
  });

  test('below minReferences the step fails with a clear error', async () => {
    const registry = registryWith({
      strict: {
        description: 'needs three',
        steps: [{ aggregate: { references: [{ role: 'primary' }, { role: 'competitor' }, { role: 'validator' }], aggregator: 'primary', minReferences: 3 } }],
      },
    });
    const down = () => new ModelUnavailableError('down', { retryable: false });
    const { context } = fakeContext({ primary: new FakeModel('p', ['ok']), competitor: new FakeModel('c', [down()]), validator: new FakeModel('v', ['ok']) });
    await expect(runPattern(registry, 'strict', input('q'), context)).rejects.toMatchObject({
      code: 'MODEL_UNAVAILABLE',
      message: expect.stringMatching(/only 2 of 3 references of layer 1 answered; step aggregate-1 needs at least 3/),
    });
  });

  test('a failed aggregator leaves the first reference as the answer, recorded and warned', async () => {
    const primary = new FakeModel('p', [
      (request) => (systemOf(request).includes(AGGREGATE_INSTRUCTION) ? new ModelUnavailableError('aggregator crashed', { retryable: false }) : 'primary view'),
    ]);
    const { context } = fakeContext({ primary, competitor: new FakeModel('c', ['competitor view']), validator: new FakeModel('v', ['validator view']) });
    const result = await runPattern(new PatternRegistry(), 'moa', input('q'), context);
    expect(result.content).toBe('primary view');
    expect(result.aggregation).toMatchObject({ fallback: true });
    expect(result.warnings).toEqual([
      expect.stringMatching(/the aggregator \(primary\) failed \(aggregator crashed\); the first reference of the last layer is the answer/),
    ]);
  });

  test('a declaration asking for more references than a layer has is refused at load', () => {
    expect(() =>
      registryWith({
        bad: { description: 'x', steps: [{ aggregate: { references: [{ role: 'primary', samples: 2 }], aggregator: 'primary', minReferences: 3 } }] },
      }),
    ).toThrow(/test\.yaml: pattern "bad": step 1 \(aggregate\)\.minReferences: minReferences is more than the references/);
  });
});

describe('select', () => {
  test('self-consistent: three distinct samples at 0.7, the judge’s strict pick wins with its confidence', async () => {
    let sample = 0;
    const primary = new FakeModel('p', [() => `answer ${++sample}`]);
    const validator = new FakeModel('v', ['SELECTED: 2\nCONFIDENCE: 0.9\nIt agrees with the third.']);
    const { context, events } = fakeContext({ primary, validator });
    const result = await runPattern(new PatternRegistry(), 'self-consistent', input('2+2?'), context);
    expect(primary.requests.map((request) => request.temperature)).toEqual([0.7, 0.7, 0.7]);
    expect(systemOf(validator.requests[0]!)).toContain(SELECT_INSTRUCTION);
    expect(result).toMatchObject({ content: 'answer 2', selection: { samples: 3, chosen: 2, confidence: 0.9, method: 'judge' } });
    expect(result.steps.at(-1)).toMatchObject({ kind: 'select', verdict: '2', note: expect.stringContaining('confidence 0.9') });
    // No sample is final: which one is the answer is known only after the selection.
    expect(startedSteps(events).some((step) => step.final)).toBe(false);
  });

  test('garbage from the judge, or a number out of range, falls back to sample 1, recorded and warned', async () => {
    for (const verdict of ['I like the second one best.', 'SELECTED: 7\nCONFIDENCE: 1']) {
      let sample = 0;
      const { context } = fakeContext({ primary: new FakeModel('p', [() => `answer ${++sample}`]), validator: new FakeModel('v', [verdict]) });
      const result = await runPattern(new PatternRegistry(), 'self-consistent', input('q'), context);
      expect(result).toMatchObject({ content: 'answer 1', selection: { chosen: 1, method: 'fallback' } });
      expect(result.steps.at(-1)).toMatchObject({ verdict: 'unparseable' });
      expect(result.warnings).toEqual([expect.stringMatching(/unparseable; sample 1 was chosen/)]);
    }
  });

  test('readSelection is strict: the verdict must lead, within range; confidence is optional and bounded', () => {
    expect(readSelection('SELECTED: 3\nCONFIDENCE: 0.75', 3)).toEqual({ index: 3, confidence: 0.75, reason: '' });
    expect(readSelection('**SELECTED: candidate 1**\nconfidence: 2', 2)).toMatchObject({ index: 1, confidence: null });
    expect(readSelection('I pick SELECTED: 1', 3).index).toBeNull();
    expect(readSelection('SELECTED: 0', 3).index).toBeNull();
  });
});

describe('critique', () => {
  test('critic: YES → revision with the issues → NO stops; every round recorded; the critic sees its earlier list', async () => {
    const primary = new FakeModel('p', ['draft', 'revised']);
    const validator = new FakeModel('v', ['ISSUES_FOUND: YES\n- no example\n- too long', 'ISSUES_FOUND: NO']);
    const { context } = fakeContext({ primary, validator });
    const result = await runPattern(new PatternRegistry(), 'critic', input('explain queues'), context);
    expect(result.content).toBe('revised');
    expect(result.critique).toEqual({
      rounds: [
        { round: 1, verdict: 'YES', issues: '- no example\n- too long' },
        { round: 2, verdict: 'NO', issues: '' },
      ],
      finalVerdict: 'NO',
    });
    expect(result.steps.map((step) => `${step.kind}:${step.verdict ?? ''}`)).toEqual(['draft:', 'critique:YES', 'revision:', 'critique:NO']);
    expect(primary.requests[1]!.messages.at(-1)!.content).toContain('- no example');
    expect(validator.requests[1]!.messages.at(-1)!.content).toContain(PREVIOUS_CRITIQUE_HEADING);
    expect(result.warnings).toBeUndefined();
  });

  test('stops at maxRounds with the last revision, warned; an unparseable critique counts as YES', async () => {
    const primary = new FakeModel('p', ['v0', 'v1', 'v2']);
    const validator = new FakeModel('v', ['This could be clearer.', 'ISSUES_FOUND: YES\n- still unclear']);
    const { context } = fakeContext({ primary, validator });
    const result = await runPattern(new PatternRegistry(), 'critic', input('q'), context);
    expect(result.content).toBe('v2');
    expect(result.critique?.rounds.map((round) => round.verdict)).toEqual(['unparseable', 'YES']);
    expect(result.critique?.finalVerdict).toBe('YES');
    expect(result.warnings).toEqual([expect.stringMatching(/unparseable and counted as YES/), expect.stringMatching(/still found issues after 2 rounds/)]);
    expect(primary.requests[1]!.messages.at(-1)!.content).toContain('This could be clearer.');
  });

  test('readCritique is strict: the verdict must come first', () => {
    expect(readCritique('ISSUES_FOUND: NO')).toEqual({ verdict: 'NO', issues: '' });
    expect(readCritique('**Issues found: yes**\n- x')).toMatchObject({ verdict: 'YES' });
    expect(readCritique('Overall, ISSUES_FOUND: NO').verdict).toBe('unparseable');
  });

  test('a declared critique needs an answer before it', () => {
    expect(() => registryWith({ bad: { description: 'x', steps: [{ critique: {} }] } })).toThrow(/step 1 \(critique\): nothing to critique/);
  });
});

describe('declared patterns of each kind', () => {
  test('each new kind is declarable, listed with its options, and its roles are required', () => {
    const registry = registryWith({
      panel: {
        description: 'mixed panel',
        steps: [{ aggregate: { references: [{ role: 'competitor', samples: 2 }, { role: 'validator' }], aggregator: 'competitor' } }],
      },
      vote: { description: 'vote', steps: [{ select: { role: 'competitor', samples: 4, judge: 'validator' } }] },
      polish: { description: 'polish', steps: [{ generate: { role: 'competitor' } }, { critique: { critic: 'validator', maxRounds: 1 } }] },
    });
    const listed = registry.list().filter((pattern) => !pattern.builtIn);
    expect(listed.map((pattern) => pattern.steps[0])).toEqual([
      {
        aggregate: expect.objectContaining({
          layers: 1,
          minReferences: 1,
          references: [
            { role: 'competitor', samples: 2 },
            { role: 'validator', samples: 1 },
          ],
        }),
      },
      { select: expect.objectContaining({ samples: 4, temperature: 0.7 }) },
      { generate: { role: 'competitor' } },
    ]);
    const missing = registry.missingRoles((role) => role === 'competitor');
    expect(missing.filter((entry) => !entry.builtIn)).toEqual([
      { pattern: 'panel', builtIn: false, roles: ['validator'] },
      { pattern: 'vote', builtIn: false, roles: ['validator'] },
      { pattern: 'polish', builtIn: false, roles: ['validator'] },
    ]);
  });
});
