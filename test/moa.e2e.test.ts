/**
 * The Mixture-of-Agents repertoire through the real processes: the simulator (one GPU host, one
 * generation at a time), the api and workers. Each new built-in, and one declared pattern per new
 * step kind (config/patterns.example.yaml), runs as a task; what the models were sent is read
 * back from the simulator's call log, what they answered from the task's events.
 */
import path from 'node:path';
import type { StepInfo, TaskEvent, TaskRecord } from '@mageagent/core';
import { excerptOf } from '../apps/model-sim/src/simulator';
import { callsOn, overlap, simStats } from './support/hosts';
import { createTask, eventually, postJson, requestJson, waitForTask } from './support/http';
import { eventsOf, startTestStack, type TestStack } from './support/stack';

let service: TestStack;

beforeAll(async () => {
  service = await startTestStack({ env: { PATTERNS_CONFIG: path.resolve(__dirname, '../config/patterns.example.yaml') } });
}, 60_000);
afterAll(async () => {
  await service?.stop();
}, 30_000);
beforeEach(async () => {
  await postJson(`${service.sim}/sim/reset`, {});
});

/** A step as its events tell it: how it started, and the text it streamed. */
interface StepRun {
  step: StepInfo;
  text: string;
  verdict?: string;
}

async function run(prompt: string, pattern: string): Promise<{ task: TaskRecord; steps: StepRun[]; events: TaskEvent[] }> {
  const task = await waitForTask(service.api, await createTask(service.api, { prompt, pattern }), 30_000);
  const events = await eventsOf(service, task.id);
  const steps = new Map<string, StepRun>();
  for (const event of events) {
    if (event.type === 'step.started') steps.set(event.step.id, { step: event.step, text: '' });
    if (event.type === 'delta') steps.get(event.stepId)!.text += event.text;
    if (event.type === 'step.completed' && event.verdict !== undefined) steps.get(event.stepId)!.verdict = event.verdict;
  }
  return { task, steps: [...steps.values()], events };
}

const ofKind = (steps: StepRun[], kind: string) => steps.filter((entry) => entry.step.kind === kind);

/** The references the simulator's aggregator says it drew on: the `[n] "…"` lines of its synthesis. */
function quotedReferences(synthesis: string): string[] {
  return [...synthesis.matchAll(/^\[\d+\] "(.*)"$/gm)].map((match) => match[1]!);
}

test('moa: three references start together, then the primary synthesises all three; only the synthesis is final', async () => {
  const { task, steps } = await run('What makes a good API? [[sim: ttft=60]]', 'moa');
  expect(task.status).toBe('completed');
  const references = ofKind(steps, 'reference');
  expect(references.map((entry) => [entry.step.role, entry.step.layer, entry.step.reference, entry.step.final ?? false])).toEqual(
    expect.arrayContaining([
      ['primary', 1, 1, false],
      ['competitor', 1, 2, false],
      ['validator', 1, 3, false],
    ]),
  );
  expect(references).toHaveLength(3);
  const [aggregate] = ofKind(steps, 'aggregate');
  expect(aggregate?.step).toMatchObject({ role: 'primary', final: true });
  // The aggregator saw every reference: its synthesis quotes the start of each answer.
  expect(aggregate!.text).toMatch(/^Synthesised from 3 responses:/);
  expect(quotedReferences(aggregate!.text).sort()).toEqual(references.map((entry) => excerptOf(entry.text)).sort());
  expect(task.result).toMatchObject({
    pattern: 'moa',
    content: aggregate!.text,
    aggregation: { layers: [{ layer: 1, answered: 3, failed: 0 }] },
    toolCalls: [],
  });
  expect(task.result!.aggregation!.fallback).toBeUndefined();
  // One GPU host: the host lease let the three references (started together) run one at a time.
  const stats = await simStats(service.sim);
  const calls = callsOn(stats, 'sim-mac');
  expect(calls).toHaveLength(4);
  for (const [index, call] of calls.entries()) for (const other of calls.slice(index + 1)) expect(overlap(call, other)).toBe(false);
  expect(stats.maxInFlightByHost['sim-mac']).toBe(1);
});

test('moa: a failing reference drops out with a warning and the aggregator quotes exactly the survivors', async () => {
  const { task, steps } = await run('Compare two queues [[sim: competitor.error=400]]', 'moa');
  expect(task.status).toBe('completed');
  const survivors = ofKind(steps, 'reference').filter((entry) => entry.step.role !== 'competitor');
  expect(survivors).toHaveLength(2);
  const [aggregate] = ofKind(steps, 'aggregate');
  expect(aggregate!.text).toMatch(/^Synthesised from 2 responses:/);
  expect(quotedReferences(aggregate!.text).sort()).toEqual(survivors.map((entry) => excerptOf(entry.text)).sort());
  expect(task.result!.aggregation).toMatchObject({ layers: [{ layer: 1, answered: 2, failed: 1 }] });
  expect(task.result!.warnings).toEqual(expect.arrayContaining([expect.stringMatching(/reference 2 of layer 1 \(competitor\)/)]));
});

test('aggregate: every reference failing fails the task; a failed aggregator leaves the first reference, recorded and warned', async () => {
  // panel: references competitor ×2 and validator, aggregator primary.
  const none = await run('Nothing answers [[sim: competitor.error=400; validator.error=400]]', 'panel');
  expect(none.task).toMatchObject({ status: 'failed', error: { code: expect.any(String), message: expect.any(String) } });
  expect(ofKind(none.steps, 'aggregate')).toHaveLength(0);

  const { task, steps } = await run('Aggregator down [[sim: primary.error=400]]', 'panel');
  expect(task.status).toBe('completed');
  const first = ofKind(steps, 'reference').find((entry) => entry.step.reference === 1)!;
  expect(task.result).toMatchObject({ content: first.text, aggregation: { fallback: true, layers: [{ answered: 3, failed: 0 }] } });
  expect(task.result!.warnings).toEqual(expect.arrayContaining([expect.stringMatching(/the aggregator \(primary\) failed/)]));
});

test("moa-deep: the second layer sees the first layer's answers, the aggregator the second layer's", async () => {
  const { task, steps } = await run('Design a cache [[sim: tokens=30]]', 'moa-deep');
  expect(task.status).toBe('completed');
  const layer = (n: number) => ofKind(steps, 'reference').filter((entry) => entry.step.layer === n);
  expect(layer(1)).toHaveLength(3);
  expect(layer(2)).toHaveLength(3);
  // A layer-2 proposer is asked to synthesise too: its answer quotes the first layer's three answers.
  const firstLayer = layer(1)
    .map((entry) => excerptOf(entry.text))
    .sort();
  for (const proposer of layer(2)) expect(quotedReferences(proposer.text).sort()).toEqual(firstLayer);
  const [aggregate] = ofKind(steps, 'aggregate');
  expect(quotedReferences(aggregate!.text).sort()).toEqual(
    layer(2)
      .map((entry) => excerptOf(entry.text))
      .sort(),
  );
  expect(task.result!.aggregation!.layers).toEqual([
    { layer: 1, answered: 3, failed: 0 },
    { layer: 2, answered: 3, failed: 0 },
  ]);
});

test('self-moa: three samples of the primary reach the model at 0.7, differ, and are all synthesised', async () => {
  const { task, steps } = await run('Name a good variable [[sim: tokens=20]]', 'self-moa');
  expect(task.status).toBe('completed');
  const samples = ofKind(steps, 'reference');
  expect(samples.map((entry) => [entry.step.role, entry.step.temperature])).toEqual([
    ['primary', 0.7],
    ['primary', 0.7],
    ['primary', 0.7],
  ]);
  expect(new Set(samples.map((entry) => entry.text)).size).toBe(3);
  const calls = (await simStats(service.sim)).calls;
  expect(calls.filter((call) => call.role === 'answer').map((call) => call.temperature)).toEqual([0.7, 0.7, 0.7]);
  const [aggregate] = ofKind(steps, 'aggregate');
  expect(quotedReferences(aggregate!.text).sort()).toEqual(samples.map((entry) => excerptOf(entry.text)).sort());
});

test("self-consistent: the validator's selection is the answer; an unreadable one falls back to sample 1 with a warning", async () => {
  const picked = await run('What is 17 * 23? [[sim: select=2]]', 'self-consistent');
  expect(picked.task.status).toBe('completed');
  const samples = ofKind(picked.steps, 'sample');
  expect(samples).toHaveLength(3);
  expect(new Set(samples.map((entry) => entry.text)).size).toBe(3);
  expect(ofKind(picked.steps, 'select')[0]).toMatchObject({ step: { role: 'validator' }, verdict: '2' });
  expect(picked.task.result).toMatchObject({
    content: samples.find((entry) => entry.step.reference === 2)!.text,
    selection: { samples: 3, chosen: 2, method: 'judge', confidence: 0.8 },
  });

  const garbage = await run('What is 17 * 24? [[sim: select=garbage]]', 'self-consistent');
  expect(garbage.task.status).toBe('completed');
  expect(garbage.task.result).toMatchObject({
    content: ofKind(garbage.steps, 'sample').find((entry) => entry.step.reference === 1)!.text,
    selection: { chosen: 1, method: 'fallback' },
    warnings: expect.arrayContaining([expect.stringMatching(/select/i)]),
  });
  expect(ofKind(garbage.steps, 'select')[0]?.verdict).toBe('unparseable');
});

test('critic: issues once → one revision, then NO; issues every time → stops at two rounds; none → no revision', async () => {
  const once = await run('Write a parser [[sim: critic=issues-once]]', 'critic');
  expect(once.task.status).toBe('completed');
  expect(once.steps.map((entry) => entry.step.kind)).toEqual(['draft', 'critique', 'revision', 'critique']);
  expect(once.task.result!.critique).toMatchObject({
    rounds: [
      { round: 1, verdict: 'YES' },
      { round: 2, verdict: 'NO' },
    ],
    finalVerdict: 'NO',
  });
  expect(once.task.result!.critique!.rounds[0]!.issues).not.toBe('');
  expect(once.task.result!.content).toBe(once.steps[2]!.text);

  // Calls whose answer the pipeline reads go out at temperature 0, not at the role's sampling temperature.
  const verdictCalls = (await simStats(service.sim)).calls.filter((call) => call.role === 'critic' || call.role === 'tools');
  expect(verdictCalls.length).toBeGreaterThanOrEqual(2);
  expect(verdictCalls.map((call) => call.temperature)).toEqual(verdictCalls.map(() => 0));

  const always = await run('Write a lexer [[sim: critic=issues]]', 'critic');
  expect(always.steps.map((entry) => entry.step.kind)).toEqual(['draft', 'critique', 'revision', 'critique', 'revision']);
  expect(always.task.result!.critique).toMatchObject({ finalVerdict: 'YES', rounds: [{ verdict: 'YES' }, { verdict: 'YES' }] });

  const none = await run('Write a tokenizer [[sim: critic=none]]', 'critic');
  expect(none.steps.map((entry) => entry.step.kind)).toEqual(['draft', 'critique']);
  expect(none.task.result).toMatchObject({ content: none.steps[0]!.text, critique: { rounds: [{ verdict: 'NO' }], finalVerdict: 'NO' } });

  // An unreadable critique counts as YES, like an unreadable review counts as FAIL: revised, and warned.
  const garbage = await run('Write a formatter [[sim: critic=garbage]]', 'critic');
  expect(garbage.steps.map((entry) => entry.step.kind)).toEqual(['draft', 'critique', 'revision', 'critique', 'revision']);
  expect(garbage.steps.filter((entry) => entry.step.kind === 'critique').map((entry) => entry.verdict)).toEqual(['unparseable', 'unparseable']);
  expect(garbage.task.result).toMatchObject({
    content: garbage.steps[4]!.text,
    critique: { finalVerdict: 'unparseable' },
    warnings: expect.arrayContaining([expect.stringMatching(/unparseable/)]),
  });
});

test('declared aggregate (panel): two samples of the coder at 0.8 and the validator, synthesised by the primary', async () => {
  const { task, steps } = await run('Refactor this loop [[sim: tokens=20]]', 'panel');
  expect(task.status).toBe('completed');
  expect(ofKind(steps, 'reference').map((entry) => [entry.step.role, entry.step.temperature ?? null])).toEqual(
    expect.arrayContaining([
      ['competitor', 0.8],
      ['competitor', 0.8],
      ['validator', null],
    ]),
  );
  expect((await simStats(service.sim)).calls.filter((call) => call.temperature === 0.8)).toHaveLength(2);
  expect(ofKind(steps, 'aggregate')[0]!.text).toMatch(/^Synthesised from 3 responses:/);
  // minReferences 2: one failure is tolerated, two are not.
  const degraded = await run('Refactor this loop again [[sim: validator.error=400]]', 'panel');
  expect(degraded.task).toMatchObject({ status: 'completed', result: { aggregation: { layers: [{ answered: 2, failed: 1 }] } } });
  const failed = await run('Refactor it once more [[sim: competitor.error=400]]', 'panel');
  expect(failed.task).toMatchObject({ status: 'failed', error: { message: expect.stringMatching(/only 1 of 3 references of layer 1 answered.*at least 2/) } });
});

test('declared select (majority) and critique (tough-critic) run their declared roles', async () => {
  const majority = await run('Capital of France? [[sim: select=4]]', 'majority');
  expect(majority.task.status).toBe('completed');
  expect(ofKind(majority.steps, 'sample').map((entry) => [entry.step.role, entry.step.temperature])).toEqual(
    Array.from({ length: 5 }, () => ['competitor', 0.9]),
  );
  expect(majority.task.result).toMatchObject({
    selection: { samples: 5, chosen: 4, method: 'judge' },
    content: ofKind(majority.steps, 'sample').find((entry) => entry.step.reference === 4)!.text,
  });

  const critic = await run('Write a queue [[sim: critic=issues]]', 'tough-critic');
  expect(critic.task.status).toBe('completed');
  expect(critic.steps.map((entry) => `${entry.step.kind}/${entry.step.role}`)).toEqual([
    'draft/competitor',
    'critique/primary',
    'revision/competitor',
    'critique/primary',
    'revision/competitor',
    'critique/primary',
    'revision/competitor',
  ]);
  expect(critic.task.result!.critique!.rounds).toHaveLength(3);
});

test('cancelling moa while its references run aborts the call on the GPU, stops the ones waiting for it, and never synthesises', async () => {
  // The first reference holds the one GPU host; the other two wait for its lease.
  const id = await createTask(service.api, { prompt: 'Hold on [[sim: hang]]', pattern: 'moa' });
  await eventually(async () => ((await simStats(service.sim)).inFlight === 1 ? true : undefined), 10_000, 'the first reference on the GPU');
  const cancelled = await postJson(`${service.api}/tasks/${id}/cancel`, {});
  expect(cancelled.body).toMatchObject({ id, status: 'cancelled' });
  await eventually(async () => ((await simStats(service.sim)).aborted === 1 ? true : undefined), 10_000, 'the simulator to see the abort');
  // Nothing started after the cancel: no other reference, no synthesis.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const stats = await simStats(service.sim);
  expect(stats.requests).toBe(1);
  expect(stats.inFlight).toBe(0);
  const task = await waitForTask(service.api, id);
  expect(task).toMatchObject({ status: 'cancelled', result: null });
});

test('GET /patterns shows the new built-ins and the declared ones with their steps', async () => {
  const { body } = await requestJson<{ patterns: Array<{ name: string; builtIn: boolean; description: string; whenToUse: string; steps: unknown[] }> }>(
    `${service.api}/patterns`,
  );
  for (const name of ['moa', 'moa-deep', 'self-moa', 'self-consistent', 'critic']) {
    expect(body.patterns.find((pattern) => pattern.name === name)).toMatchObject({
      builtIn: true,
      description: expect.any(String),
      whenToUse: expect.any(String),
    });
  }
  expect(body.patterns.find((pattern) => pattern.name === 'panel')).toMatchObject({
    builtIn: false,
    steps: [{ aggregate: expect.objectContaining({ aggregator: 'primary', minReferences: 2 }) }, expect.anything()],
  });
});
