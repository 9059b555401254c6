import path from 'node:path';
import type { TaskEvent } from '@mageagent/core';
import { createTask, readSse, requestJson, waitForTask } from './support/http';
import { startTestStack, type TestStack } from './support/stack';

let service: TestStack;

beforeAll(async () => {
  service = await startTestStack({ env: { PATTERNS_CONFIG: path.resolve(__dirname, '../config/patterns.example.yaml') } });
});
afterAll(async () => {
  await service?.stop();
});

async function eventsOf(taskId: string): Promise<TaskEvent[]> {
  const { body } = await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${taskId}/events`);
  return body.events;
}

/** Step names in start order, and what each step.completed said, from the event log. */
function stepTrail(events: TaskEvent[]): string[] {
  const names = new Map<string, string>();
  const trail: string[] = [];
  for (const event of events) {
    if (event.type === 'step.started') names.set(event.step.id, event.step.name);
    if (event.type === 'step.completed') trail.push(`${names.get(event.stepId)}${event.verdict ? `:${event.verdict}` : ''}`);
  }
  return trail;
}

test('validated with fail-once: draft, FAIL, revision, PASS, in events and result.steps', async () => {
  const id = await createTask(service.api, { prompt: 'Fix the bug in my parser [[sim: validator=fail-once]]', pattern: 'validated' });
  const task = await waitForTask(service.api, id);
  expect(task.status).toBe('completed');
  expect(task.result?.steps.map((step) => [step.name, step.role, step.verdict ?? null])).toEqual([
    ['draft', 'primary', null],
    ['review', 'validator', 'FAIL'],
    ['revise', 'primary', null],
    ['review', 'validator', 'PASS'],
  ]);
  expect(task.result).toMatchObject({ approved: true, pattern: 'validated' });
  const revision = task.result!.steps[2]!;
  const events = await eventsOf(id);
  expect(stepTrail(events)).toEqual(['draft', 'review:FAIL', 'revise', 'review:PASS']);
  // The final content is the revision's streamed text.
  const revisionText = events
    .filter((event) => event.type === 'delta' && event.stepId === revision.id)
    .map((event) => (event.type === 'delta' ? event.text : ''))
    .join('');
  expect(task.result!.content).toBe(revisionText);
  expect(events.map((event) => event.type).slice(-2)).toEqual(['result', 'status']);
});

test('compete: both solutions, then the judge; the judged winner is the answer', async () => {
  const id = await createTask(service.api, { prompt: 'Write a sort function [[sim: judge=B]]', pattern: 'compete' });
  const task = await waitForTask(service.api, id);
  expect(task.status).toBe('completed');
  const steps = task.result!.steps;
  expect(steps.map((step) => [step.kind, step.role])).toEqual(
    expect.arrayContaining([
      ['candidate', 'primary'],
      ['candidate', 'competitor'],
      ['judge', 'validator'],
    ]),
  );
  expect(steps.find((step) => step.kind === 'judge')).toMatchObject({ verdict: 'B' });
  expect(task.result!.model).toBe(steps.find((step) => step.role === 'competitor')!.model);
  const stream = await readSse(`${service.api}/tasks/${id}/stream`);
  expect(stream.frames.filter((frame) => frame.event === 'step.started')).toHaveLength(3);
});

test('auto routes by keywords and records the decision on the task', async () => {
  const coding = await waitForTask(service.api, await createTask(service.api, { prompt: 'Implement a function that adds two numbers' }));
  expect(coding).toMatchObject({ status: 'completed', pattern: 'auto', result: { pattern: 'validated', route: { route: 'coding', method: 'keywords' } } });
  const reasoning = await waitForTask(service.api, await createTask(service.api, { prompt: 'Explain how Redis persistence works', pattern: 'auto' }));
  expect(reasoning.result).toMatchObject({ pattern: 'hybrid', route: { route: 'reasoning' } });
  const events = await eventsOf(reasoning.id);
  expect(events.find((event) => event.type === 'route')).toMatchObject({ decision: { pattern: 'hybrid', method: 'keywords' } });
});

test("hybrid extracts tool calls the simulator's tools model proposes", async () => {
  const task = await waitForTask(service.api, await createTask(service.api, { prompt: 'Read the file src/app.ts and summarise it', pattern: 'hybrid' }));
  expect(task.status).toBe('completed');
  expect(task.result!.toolCalls).toEqual([{ id: 'call_1', tool: 'Read', arguments: { file_path: 'src/app.ts' } }]);
  const events = await eventsOf(task.id);
  expect(events.find((event) => event.type === 'tool_calls')).toMatchObject({ calls: task.result!.toolCalls });
});

test('a declared pattern runs its steps by name and is listed with them', async () => {
  const { body } = await requestJson(`${service.api}/patterns`);
  expect(body.patterns.find((pattern: { name: string }) => pattern.name === 'outline-first')).toMatchObject({ builtIn: false, steps: expect.any(Array) });
  const id = await createTask(service.api, { prompt: 'An essay about tea', pattern: 'outline-first' });
  const task = await waitForTask(service.api, id);
  expect(task.status).toBe('completed');
  expect(task.result!.steps.map((step) => `${step.name}/${step.role}`)).toEqual(['outline/validator', 'write/primary', 'validate-3/validator']);
  expect(stepTrail(await eventsOf(id))).toEqual(['outline', 'write', 'validate-3:PASS']);
});

test('a declared pattern that stops on FAIL returns the unapproved answer without tool calls', async () => {
  const task = await waitForTask(
    service.api,
    await createTask(service.api, { prompt: 'Delete the file a.txt [[sim: validator=fail]]', pattern: 'code-review' }),
  );
  expect(task.status).toBe('completed');
  expect(task.result).toMatchObject({ approved: false, toolCalls: [], warnings: [expect.stringContaining('stops here')] });
  expect(task.result!.steps.map((step) => step.kind)).toEqual(['draft', 'review']);
});
