/**
 * Faults of the model servers: one that answers 500 (for a while, or for good), refuses
 * connections, hangs past its timeout, drops the connection mid-stream, or sends malformed
 * chunks. Each task ends in the terminal state that tells the truth, within its retries' time,
 * with its followers seeing every event once; tasks running beside it are untouched.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { TaskRecord } from '@mageagent/core';
import { compareWithLog, ExchangeLog, followSse, ms, printTable, settle, startFaultStack, type FaultStack } from './harness';

let fault: FaultStack;

beforeAll(async () => {
  fault = await startFaultStack({
    workers: 2,
    workerConcurrency: 4,
    env: { PATTERNS_CONFIG: path.join(__dirname, 'patterns.faults.yaml'), MODEL_RETRIES: '2', MODEL_RETRY_BASE_MS: '50' },
  });
}, 60_000);

afterAll(async () => {
  await fault?.stop();
}, 60_000);

interface Case {
  name: string;
  pattern: string;
  /** Directives for the model call; a nonce keeps each case's `fail-times` count its own. */
  directives: string;
  expect: { status: TaskRecord['status']; code?: string; attempts?: number };
}

const cases: Case[] = [
  { name: 'answers 500 twice, then recovers', pattern: 'primary', directives: 'error=500; fail-times=2', expect: { status: 'completed', attempts: 3 } },
  { name: 'answers 500 every time', pattern: 'primary', directives: 'error=500', expect: { status: 'failed', code: 'MODEL_UNAVAILABLE', attempts: 3 } },
  {
    name: 'answers 429 with Retry-After: 1, once',
    pattern: 'primary',
    directives: 'error=429; retry-after=1; fail-times=1',
    expect: { status: 'completed', attempts: 2 },
  },
  { name: 'refuses connections', pattern: 'offline-direct', directives: '', expect: { status: 'failed', code: 'MODEL_UNAVAILABLE' } },
  { name: 'hangs past its first-token timeout, once', pattern: 'validator', directives: 'hang; fail-times=1', expect: { status: 'completed', attempts: 2 } },
  {
    name: 'hangs past its first-token timeout every time',
    pattern: 'validator',
    directives: 'hang',
    expect: { status: 'failed', code: 'MODEL_TIMEOUT', attempts: 3 },
  },
  {
    name: 'drops the connection mid-stream, once',
    pattern: 'primary',
    directives: 'tokens=20; disconnect-after=5; fail-times=1',
    expect: { status: 'completed', attempts: 2 },
  },
  {
    name: 'sends a malformed chunk mid-stream',
    pattern: 'primary',
    directives: 'tokens=20; malformed-after=3',
    expect: { status: 'failed', code: 'MODEL_ERROR', attempts: 1 },
  },
];

test('every model-server fault ends its task truthfully, and tasks beside it are untouched', async () => {
  const log = new ExchangeLog();
  const submit = async (pattern: string, prompt: string) => {
    const exchange = await log.post(fault.api, '/tasks', { pattern, prompt });
    expect(exchange.status).toBe(202);
    return (exchange.body as { id: string }).id;
  };
  const started = Date.now();
  const faulty = await Promise.all(cases.map((testCase) => submit(testCase.pattern, `model fault ${randomUUID()} [[sim: ${testCase.directives}]]`)));
  const bystanders = await Promise.all(Array.from({ length: 12 }, (_, index) => submit('primary', `bystander ${index} [[sim: tokens=12]]`)));
  const follows = [...faulty, ...bystanders].map((id) => followSse(fault.api, id, 60_000).done);
  const finished = await settle(fault.api, [...faulty, ...bystanders], 60_000);
  const records = await Promise.all(follows);
  const comparisons = await Promise.all(records.map((record) => compareWithLog(fault.api, record)));

  const outcome = (id: string) => finished.get(id);
  const attemptsOf = (task: TaskRecord | undefined) => {
    const starts = task?.result?.steps.map((step) => step.attempt) ?? [];
    return starts.length > 0 ? Math.max(...starts) : undefined;
  };
  const rows = cases.map((testCase, index) => {
    const task = outcome(faulty[index]!);
    const took = task?.completedAt ? Date.parse(task.completedAt) - Date.parse(task.createdAt) : Number.NaN;
    return {
      metric: `model server ${testCase.name}`,
      value: `${task?.status ?? 'not finished'}${task?.error ? ` ${task.error.code}` : ''}, ${ms(took)}`,
      target: `${testCase.expect.status}${testCase.expect.code ? ` ${testCase.expect.code}` : ''}`,
    };
  });
  const bystandersDone = bystanders.filter((id) => outcome(id)?.status === 'completed').length;
  printTable('Model server faults (each task beside 12 healthy ones)', [
    ...rows,
    { metric: 'healthy tasks completed beside them', value: `${bystandersDone} of ${bystanders.length}`, target: 'all' },
    {
      metric: 'SSE clients: events lost / duplicated',
      value: `${comparisons.reduce((n, c) => n + c.lost, 0)} / ${comparisons.reduce((n, c) => n + c.duplicated, 0)}`,
      target: '0 / 0',
    },
    { metric: '5xx answers to requests', value: log.serverErrors.length, target: '0' },
    { metric: 'all settled after', value: ms(Date.now() - started) },
  ]);

  cases.forEach((testCase, index) => {
    const task = outcome(faulty[index]!);
    expect({ case: testCase.name, status: task?.status, code: task?.error?.code }).toEqual({
      case: testCase.name,
      status: testCase.expect.status,
      code: testCase.expect.code,
    });
  });
  for (const [index, testCase] of cases.entries()) {
    if (testCase.expect.attempts === undefined || testCase.expect.status !== 'completed') continue;
    expect({ case: testCase.name, attempts: attemptsOf(outcome(faulty[index]!)) }).toEqual({ case: testCase.name, attempts: testCase.expect.attempts });
  }
  // A failed task's error names what happened, and the retries said so in warnings.
  const failedAfterRetries = await fetch(`${fault.api}/tasks/${faulty[1]}/events`).then(
    (response) => response.json() as Promise<{ events: Array<{ type: string }> }>,
  );
  expect(failedAfterRetries.events.filter((event) => event.type === 'warning')).toHaveLength(2);
  expect(bystandersDone).toBe(bystanders.length);
  for (const comparison of comparisons) expect(comparison).toEqual({ lost: 0, duplicated: 0, logGaps: 0 });
  expect(records.every((record) => record.terminal)).toBe(true);
  expect(log.serverErrors).toEqual([]);
}, 120_000);
