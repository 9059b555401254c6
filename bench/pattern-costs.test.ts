import type { StepRecord } from '@mageagent/core';
import { BUILT_IN_PATTERNS, needsTools, routeByKeywords, type RouteStepDeclaration } from '@mageagent/patterns';
import type { SimulatedCall } from '../apps/model-sim/src/simulator';
import { busyMsByHost, callsIn, costColumns, costRow, median, pathOf, PATTERN_PROMPTS, summarisePattern, type TaskSample } from './pattern-costs';

const call = (host: string, startedAt: number, endedAt: number): SimulatedCall => ({
  host,
  model: `${host}-model`,
  role: 'answer',
  temperature: null,
  variant: 0,
  startedAt,
  endedAt,
  aborted: false,
});

const step = (kind: StepRecord['kind'], verdict?: string): StepRecord => ({
  id: 's',
  name: kind ?? 'step',
  role: 'primary',
  model: 'm',
  host: 'h',
  attempt: 1,
  startedAt: '2026-01-01T00:00:00.000Z',
  durationMs: 1,
  usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 },
  ...(kind && { kind }),
  ...(verdict && { verdict }),
});

describe('median', () => {
  it('is the middle value, the mean of the two middle ones for an even count, NaN for none', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(median([])).toBeNaN();
  });

  it('does not reorder its input', () => {
    const values = [3, 1, 2];
    median(values);
    expect(values).toEqual([3, 1, 2]);
  });
});

describe('busyMsByHost', () => {
  it('adds up one host’s calls one after another', () => {
    expect(busyMsByHost([call('mac', 0, 100), call('mac', 150, 400)], { from: 0, to: 1000 })).toEqual({ mac: 350 });
  });

  it('counts overlapping calls on one host once, and keeps hosts apart', () => {
    const calls = [call('mac', 0, 100), call('mac', 50, 200), call('mac', 60, 70), call('linux', 0, 100), call('mac', 300, 310)];
    expect(busyMsByHost(calls, { from: 0, to: 1000 })).toEqual({ mac: 210, linux: 100 });
  });

  it('clips calls to the window and lists idle hosts at 0', () => {
    const calls = [call('mac', -50, 50), call('mac', 900, 1100), call('mac', 2000, 2100)];
    expect(busyMsByHost(calls, { from: 0, to: 1000 }, ['mac', 'idle'])).toEqual({ mac: 150, idle: 0 });
  });

  it('is unaffected by the order of the log', () => {
    const calls = [call('mac', 300, 400), call('mac', 0, 100), call('mac', 50, 150)];
    expect(busyMsByHost(calls, { from: 0, to: 1000 })).toEqual({ mac: 250 });
  });
});

describe('callsIn', () => {
  it('keeps the calls in flight at some moment of the window', () => {
    const calls = [call('mac', 0, 10), call('mac', 90, 110), call('mac', 120, 130), call('mac', 190, 210), call('mac', 300, 310)];
    expect(callsIn(calls, { from: 100, to: 200 }).map((each) => each.startedAt)).toEqual([90, 120, 190]);
  });
});

describe('pathOf', () => {
  it('folds repeats and shows verdicts', () => {
    expect(pathOf({ steps: [step('candidate'), step('candidate'), step('judge', 'A')] }, 'compete')).toBe('candidate ×2 → judge A');
  });

  it('names the pattern auto routed to', () => {
    expect(pathOf({ steps: [step('draft'), step('review', 'PASS')], pattern: 'validated' }, 'auto')).toBe('validated: draft → review PASS');
    expect(pathOf({ steps: [step('answer')], pattern: 'primary' }, 'primary')).toBe('answer');
  });
});

describe('summarisePattern and costRow', () => {
  const hosts = ['mac'];
  const completed = (wallMs: number, calls: number): TaskSample => ({
    status: 'completed',
    wallMs,
    busyMsByHost: { mac: wallMs - 10 },
    simulatorCalls: calls,
    result: { calls, promptTokens: 100, completionTokens: 50, path: 'answer' },
  });

  it('takes medians over completed tasks and lists the others', () => {
    const failed: TaskSample = { status: 'failed', wallMs: 5, busyMsByHost: { mac: 1 }, simulatorCalls: 1, error: 'MODEL_TIMEOUT: slow' };
    const summary = summarisePattern('primary', [completed(1000, 1), failed, completed(3000, 1), completed(2000, 1)], hosts);
    expect(summary).toMatchObject({ tasks: 4, completed: 3, calls: 1, wallMs: 2000, busyMsByHost: { mac: 1990 }, path: 'answer' });
    expect(summary.failures).toEqual([{ status: 'failed', error: 'MODEL_TIMEOUT: slow' }]);
    const row = costRow(summary, hosts, 20);
    expect(row).toHaveLength(costColumns(hosts, 20).length);
    expect(row).toEqual(['primary', '3/4', '1', '100', '50', '1.99', '2.00', '40.0', 'answer']);
  });

  it('reports a pattern with no completed task as failed, not a crash', () => {
    const timedOut: TaskSample = { status: 'timed out', wallMs: 1, busyMsByHost: {}, simulatorCalls: 0, error: 'no terminal status within 120 s; cancelled' };
    const summary = summarisePattern('critic', [timedOut, timedOut, { ...timedOut, status: 'failed' }], hosts);
    expect(costRow(summary, hosts, 20)).toEqual([
      'critic',
      '0/3',
      'failed',
      'failed',
      'failed',
      'failed',
      'failed',
      'failed',
      'none completed: timed out ×2, failed',
    ]);
  });
});

describe('PATTERN_PROMPTS', () => {
  it('names only built-ins (a new built-in runs with the default prompt until it gets its own)', () => {
    expect(Object.keys(PATTERN_PROMPTS).filter((pattern) => !(pattern in BUILT_IN_PATTERNS))).toEqual([]);
  });

  it('asks for tools only where the pattern is about tools', () => {
    const needing = Object.entries(PATTERN_PROMPTS)
      .filter(([, prompt]) => needsTools(prompt))
      .map(([pattern]) => pattern);
    expect(needing.sort()).toEqual(['hybrid', 'tools']);
  });

  it('sends auto down its coding route', () => {
    const route = BUILT_IN_PATTERNS.auto!.steps[0]! as { route: RouteStepDeclaration };
    expect(routeByKeywords(PATTERN_PROMPTS.auto!, route.route).route).toBe('coding');
  });
});
