/**
 * The pure part of `npm run bench:patterns` (bench/patterns.ts): the prompt each pattern is run
 * with, medians, a host's busy time from the simulator's call log, and one pattern's row. Apart
 * from the script so that tests import it without starting a stack.
 */
import type { TaskResult } from '@mageagent/core';
import type { SimulatedCall } from '../apps/model-sim/src/simulator';

const CODING = 'Implement a TypeScript function that merges overlapping intervals, sorted by start, with a short unit test.';
const OPEN_ENDED = 'Compare event sourcing with a CRUD data model for an order-management service: the trade-offs, and when to choose each.';

/**
 * A prompt per built-in that takes the pattern's usual path: code for the patterns that route or
 * review code, wording that needs tools (a path, "run the tests") for `hybrid` and `tools`, one
 * right answer for self-consistency, an open question for the mixtures. None of the others asks
 * for tools, so their cost is without an extraction call.
 */
export const PATTERN_PROMPTS: Readonly<Record<string, string>> = {
  // implement, function → the coding route → validated
  auto: CODING,
  hybrid: 'Explain how the retry logic in src/queue/retry.ts works, then run the tests with `npm test` to check it.',
  validated: CODING,
  compete: 'Implement an LRU cache class in TypeScript with O(1) get and put, and explain its invariants.',
  moa: OPEN_ENDED,
  'moa-deep': OPEN_ENDED,
  'self-moa': OPEN_ENDED,
  'self-consistent': 'A train leaves at 09:40 and arrives at 13:15 the same day. How many minutes does the journey take?',
  critic: 'Write a short release note for version 2.0 of a task queue that adds priorities and signed webhooks.',
  tools: 'Read src/queue/retry.ts and run `npm test`.',
  primary: 'Explain the CAP theorem in one paragraph, with an example.',
  validator: 'What is the capital of Australia?',
  competitor: 'Write a TypeScript function that checks whether a string is a palindrome, ignoring case and spaces.',
};

/** For a pattern added later and not listed above. */
export const DEFAULT_PATTERN_PROMPT = OPEN_ENDED;

export function promptFor(pattern: string): string {
  return PATTERN_PROMPTS[pattern] ?? DEFAULT_PATTERN_PROMPT;
}

/** The middle value, or the mean of the two middle ones for an even count; NaN for none. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Epoch milliseconds, `from` to `to`. */
export interface TimeWindow {
  from: number;
  to: number;
}

/**
 * Per host, the milliseconds of `window` during which at least one call was in flight there: the
 * union of the calls' intervals, clipped to the window. On a host with maxConcurrentGenerations 1
 * that is the sum of the calls' lengths; on a host that batches, two overlapping calls count once
 * (the GPU was busy, not twice as busy), as the simulator's own `busyMsByHost` counts. Aborted
 * calls count: the GPU worked on them. Every host of `hosts` is in the answer, 0 when idle.
 */
export function busyMsByHost(calls: readonly SimulatedCall[], window: TimeWindow, hosts: readonly string[] = []): Record<string, number> {
  const intervals = new Map<string, Array<[number, number]>>(hosts.map((host) => [host, []]));
  for (const call of calls) {
    const list = intervals.get(call.host) ?? [];
    intervals.set(call.host, list);
    const start = Math.max(call.startedAt, window.from);
    const end = Math.min(call.endedAt, window.to);
    if (end > start) list.push([start, end]);
  }
  const busy: Record<string, number> = {};
  for (const [host, list] of intervals) {
    list.sort((a, b) => a[0] - b[0]);
    // Merge overlapping intervals into runs; the runs' lengths add up to the busy time.
    let total = 0;
    let run: [number, number] | undefined;
    for (const [start, end] of list) {
      if (run === undefined || start > run[1]) {
        if (run !== undefined) total += run[1] - run[0];
        run = [start, end];
      } else {
        run[1] = Math.max(run[1], end);
      }
    }
    if (run !== undefined) total += run[1] - run[0];
    busy[host] = total;
  }
  return busy;
}

/** The calls of the log that were in flight at some moment of `window`. */
export function callsIn(calls: readonly SimulatedCall[], window: TimeWindow): SimulatedCall[] {
  return calls.filter((call) => call.startedAt <= window.to && call.endedAt >= window.from);
}

/**
 * What a task ran, step by step: each call's kind (or name) and verdict, repeats folded, e.g.
 * `candidate ×2 → judge A`; for `auto`, the pattern it routed to first (`validated: draft → review PASS`).
 */
export function pathOf(result: Pick<TaskResult, 'steps' | 'route' | 'pattern'>, pattern: string): string {
  const labels = result.steps.map((step) => [step.kind ?? step.name, step.verdict].filter(Boolean).join(' '));
  const folded: string[] = [];
  let previous: string | undefined;
  let count = 0;
  const flush = () => previous !== undefined && folded.push(count > 1 ? `${previous} ×${count}` : previous);
  for (const label of labels) {
    if (label === previous) {
      count += 1;
      continue;
    }
    flush();
    previous = label;
    count = 1;
  }
  flush();
  const steps = folded.join(' → ') || 'no model call';
  return result.pattern !== undefined && result.pattern !== pattern ? `${result.pattern}: ${steps}` : steps;
}

/** One task of the benchmark, as measured. */
export interface TaskSample {
  /** `completed`, `failed` or `cancelled`; `timed out` or `lost` when the benchmark did not see it end (it is then cancelled), `error` when it could not submit it. */
  status: string;
  /** From before the POST to the terminal status event. */
  wallMs: number;
  busyMsByHost: Record<string, number>;
  /** Calls the simulator served in the task's window (retried attempts included). */
  simulatorCalls: number;
  /** Completed tasks only. */
  result?: { calls: number; promptTokens: number; completionTokens: number; path: string };
  /** Why it did not complete: the task's error code and message, or the benchmark's. */
  error?: string;
}

/** Medians over a pattern's completed tasks; undefined figures when none completed. */
export interface PatternSummary {
  pattern: string;
  tasks: number;
  completed: number;
  calls?: number;
  simulatorCalls?: number;
  promptTokens?: number;
  completionTokens?: number;
  busyMsByHost: Record<string, number | undefined>;
  wallMs?: number;
  /** The path most completed tasks took (the first one seen on a tie). */
  path?: string;
  /** The tasks that did not complete: how each ended, and why. */
  failures: Array<{ status: string; error?: string }>;
}

export function summarisePattern(pattern: string, samples: readonly TaskSample[], hosts: readonly string[]): PatternSummary {
  const completed = samples.filter((sample) => sample.status === 'completed' && sample.result !== undefined);
  const of = (pick: (sample: TaskSample) => number) => (completed.length === 0 ? undefined : median(completed.map(pick)));
  const paths = new Map<string, number>();
  for (const sample of completed) paths.set(sample.result!.path, (paths.get(sample.result!.path) ?? 0) + 1);
  const path = [...paths].reduce<[string, number] | undefined>((best, entry) => (best === undefined || entry[1] > best[1] ? entry : best), undefined)?.[0];
  return {
    pattern,
    tasks: samples.length,
    completed: completed.length,
    calls: of((sample) => sample.result!.calls),
    simulatorCalls: of((sample) => sample.simulatorCalls),
    promptTokens: of((sample) => sample.result!.promptTokens),
    completionTokens: of((sample) => sample.result!.completionTokens),
    busyMsByHost: Object.fromEntries(hosts.map((host) => [host, of((sample) => sample.busyMsByHost[host] ?? 0)])),
    wallMs: of((sample) => sample.wallMs),
    ...(path !== undefined && { path }),
    failures: samples
      .filter((sample) => !completed.includes(sample))
      .map((sample) => ({ status: sample.status, ...(sample.error !== undefined && { error: sample.error }) })),
  };
}

/** The table's columns: one GPU-busy column per host, in the order given. */
export function costColumns(hosts: readonly string[], speedup: number): string[] {
  return [
    'pattern',
    'tasks completed',
    'model calls',
    'prompt tokens',
    'completion tokens',
    ...hosts.map((host) => `GPU-busy s (${host})`),
    'wall s',
    `≈ real wall s (× ${speedup})`,
    'what ran (most tasks)',
  ];
}

/**
 * A pattern's row under `costColumns`; `failed` in every figure when no task completed, and how
 * the tasks ended (`timed out ×3`) where the path would be.
 */
export function costRow(summary: PatternSummary, hosts: readonly string[], speedup: number): string[] {
  const figure = (value: number | undefined, digits: number) => (value === undefined ? 'failed' : value.toFixed(digits));
  const seconds = (ms: number | undefined, digits: number) => figure(ms === undefined ? undefined : ms / 1000, digits);
  return [
    summary.pattern,
    `${summary.completed}/${summary.tasks}`,
    figure(summary.calls, summary.calls !== undefined && Number.isInteger(summary.calls) ? 0 : 1),
    figure(summary.promptTokens, 0),
    figure(summary.completionTokens, 0),
    ...hosts.map((host) => seconds(summary.busyMsByHost[host], 2)),
    seconds(summary.wallMs, 2),
    seconds(summary.wallMs === undefined ? undefined : summary.wallMs * speedup, 1),
    summary.path ?? `none completed: ${endings(summary.failures)}`,
  ];
}

/** `failed ×2, timed out`: how many tasks ended each way, in order of first appearance. */
function endings(failures: PatternSummary['failures']): string {
  const counts = new Map<string, number>();
  for (const failure of failures) counts.set(failure.status, (counts.get(failure.status) ?? 0) + 1);
  return [...counts].map(([status, count]) => (count > 1 ? `${status} ×${count}` : status)).join(', ') || 'no task ran';
}
