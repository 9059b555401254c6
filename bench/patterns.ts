/**
 * `npm run bench:patterns`: what each built-in pattern costs, on the simulator at the stack's
 * speeds divided by SIM_SPEEDUP and with the stack's model-to-host layout (config/models.sim.yaml).
 * Per pattern, BENCH_PATTERN_TASKS tasks run one at a time (so wall time is not queueing) and the
 * medians of their model calls, tokens, GPU-busy seconds per host and wall time are printed as one
 * markdown table. Needs Redis at REDIS_URL (default 127.0.0.1:6379).
 *
 * GPU-busy time comes from the simulator's per-call log over the task's window, not from the
 * steps' `durationMs − waitMs`: the log is the host's own account (a call counts from the moment
 * the server took it to the moment it finished, without the client's lease and HTTP overhead), it
 * includes attempts that were retried and calls of tasks that failed (neither is in
 * `result.steps`), and it is per host by construction. Tasks run one at a time on a private
 * stack, so every call in the window is the task's.
 */
import { randomUUID } from 'node:crypto';
import { cpus } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { TaskEvent, TaskRecord } from '@mageagent/core';
import { DEFAULT_MODELS_CONFIG_PATH, loadModelsConfig } from '@mageagent/models';
import { deleteKeysWithPrefix } from '@mageagent/tasks';
import { Stack } from '../apps/launcher/src/stack';
import { modelsFromConfig } from '../apps/model-sim/src/simulator';
import { hostsOf, simStats } from '../test/support/hosts';
import { createTask, readSse, requestJson, waitForTask } from '../test/support/http';
import { busyMsByHost, callsIn, costColumns, costRow, pathOf, promptFor, summarisePattern, type PatternSummary, type TaskSample } from './pattern-costs';
import { formatGrid } from './table';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
/** The simulator divides every model's time to first token by this and multiplies its tokens/s by it. */
const SPEEDUP = positiveNumber('SIM_SPEEDUP', 20);
/** Tasks per pattern; medians are reported. */
const TASKS = positiveNumber('BENCH_PATTERN_TASKS', 5, { integer: true });
/** `BENCH_PATTERNS=moa,critic` runs only those (any pattern GET /patterns lists); default: every built-in. */
const ONLY = process.env.BENCH_PATTERNS?.split(',')
  .map((name) => name.trim())
  .filter(Boolean);
/** How long one task may take, in measured (sped-up) seconds, before it is cancelled and reported. */
const TASK_TIMEOUT_MS = positiveNumber('BENCH_PATTERN_TIMEOUT_S', 120) * 1000;
/** How long to wait, after a task ends, for the simulator to finish its calls (aborted ones end late). */
const SETTLE_TIMEOUT_MS = 10_000;

const log = (line: string) => process.stderr.write(`bench:patterns: ${line}\n`);
const quiet = () => undefined;
/** The stack's own layout and speeds, whatever MODELS_CONFIG the shell has. */
const MODELS_CONFIG = DEFAULT_MODELS_CONFIG_PATH;
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const isTerminalEvent = (event: TaskEvent) => event.type === 'status' && TERMINAL.has(event.status);

function positiveNumber(name: string, fallback: number, { integer = false } = {}): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new Error(`${name} must be a positive ${integer ? 'integer' : 'number'}, not "${raw}"`);
  }
  return value;
}

interface PatternListing {
  name: string;
  builtIn: boolean;
}

/** The patterns to measure: every built-in the api lists, or BENCH_PATTERNS, checked against the list. */
async function patternsToRun(api: string): Promise<string[]> {
  const { body } = await requestJson<{ patterns: PatternListing[] }>(`${api}/patterns`);
  if (ONLY === undefined) return body.patterns.filter((pattern) => pattern.builtIn).map((pattern) => pattern.name);
  const known = new Set(body.patterns.map((pattern) => pattern.name));
  const unknown = ONLY.filter((name) => !known.has(name));
  if (unknown.length > 0) throw new Error(`BENCH_PATTERNS names unknown patterns: ${unknown.join(', ')} (known: ${[...known].join(', ')})`);
  return ONLY;
}

/** Waits until no call is in flight on the simulator, so the log holds every call of the task. */
async function simulatorSettled(sim: string): Promise<void> {
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  while ((await simStats(sim)).inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

/**
 * One task, POST to terminal status, followed on SSE; whatever happens, a sample (never a throw).
 * A task not seen to end is cancelled before the next one starts.
 */
async function runTask(stack: Stack, pattern: string, prompt: string, hosts: readonly string[]): Promise<TaskSample> {
  const api = stack.apiUrl;
  const sim = stack.simUrl!;
  const from = Date.now();
  const started = performance.now();
  let terminalAt: number | undefined;
  let id: string | undefined;
  let status = 'error';
  let error: string | undefined;
  let task: TaskRecord | undefined;
  try {
    id = await createTask(api, { prompt, pattern });
    // Throws (an abort) when the timeout comes first; returns early if the server ends the stream.
    await readSse(
      `${api}/tasks/${id}/stream`,
      {},
      (events) => {
        if (terminalAt === undefined && events.some(isTerminalEvent)) terminalAt = performance.now();
        return terminalAt !== undefined;
      },
      TASK_TIMEOUT_MS,
    );
  } catch (caught) {
    error = caught instanceof Error ? caught.message : String(caught);
  }
  try {
    if (id !== undefined && terminalAt === undefined) {
      // Not followed to its end: cancel it, so that it holds no worker or host when the next task starts.
      status = performance.now() - started >= TASK_TIMEOUT_MS ? 'timed out' : 'lost';
      error = `no terminal status ${status === 'timed out' ? `within ${TASK_TIMEOUT_MS / 1000} s` : `on the stream (${error ?? 'closed by the server'})`}; cancelled`;
      await requestJson(`${api}/tasks/${id}/cancel`, { method: 'POST' });
      await waitForTask(api, id, SETTLE_TIMEOUT_MS);
    } else if (id !== undefined) {
      task = (await requestJson<TaskRecord>(`${api}/tasks/${id}`)).body;
      status = task.status;
      if (task.error) error = `${task.error.code}: ${task.error.message}`;
    }
  } catch (caught) {
    error = `${error ?? status}; then ${caught instanceof Error ? caught.message : String(caught)}`;
  }
  const wallMs = (terminalAt ?? performance.now()) - started;
  let calls: Awaited<ReturnType<typeof simStats>>['calls'] = [];
  try {
    await simulatorSettled(sim);
    calls = callsIn((await simStats(sim)).calls, { from, to: Date.now() });
  } catch (caught) {
    error ??= `simulator stats: ${caught instanceof Error ? caught.message : String(caught)}`;
  }
  const window = { from, to: Date.now() };
  const result = task?.status === 'completed' ? task.result : null;
  return {
    status,
    wallMs,
    busyMsByHost: busyMsByHost(calls, window, hosts),
    simulatorCalls: calls.length,
    ...(result && {
      result: {
        calls: result.steps.length,
        promptTokens: result.usage.promptTokens,
        completionTokens: result.usage.completionTokens,
        path: pathOf(result, pattern),
      },
    }),
    ...(error !== undefined && { error: id === undefined ? error : `${error} (task ${id})` }),
  };
}

/** Each model's simulated length and speed, from the models config, e.g. `primary 120 tokens at 8 tokens/s after 1500 ms`. */
function speeds(): string {
  return modelsFromConfig(loadModelsConfig(MODELS_CONFIG, { ...process.env, SIM_PORT: '0' }))
    .map((model) => `${model.roles.join('/')} ${model.defaultTokens} tokens at ${model.tokensPerSecond} tokens/s after ${model.ttftMs} ms`)
    .join(', ');
}

function notes(summaries: readonly PatternSummary[], patterns: readonly string[], layout: string): string {
  const lines = [
    '',
    `Hosts (${path.relative(process.cwd(), MODELS_CONFIG)}): ${layout}.`,
    `Measured with the simulator at SIM_SPEEDUP ${SPEEDUP}: it divides each model's time to first token by ${SPEEDUP} and multiplies its tokens per second by ${SPEEDUP}, so real seconds ≈ measured × ${SPEEDUP} (GPU-busy s as well as wall s; the orchestration's few ms per call are multiplied too, so real is slightly over-estimated).`,
    `Medians over each pattern's completed tasks (${TASKS} per pattern, one at a time). Model calls from result.steps, tokens from result.usage, wall s from before POST /tasks to the terminal status event on SSE, GPU-busy s from the simulator's per-call log over the task's window (time with a call in flight on the host).`,
    `Prose answers have the simulator's length for their model, at its speed (${speeds()}); verdicts, picks and tool calls are as long as their text. Real answers are often longer, and a real call costs its time to first token plus its length ÷ the model's tokens per second.`,
  ];
  for (const summary of summaries) {
    if (summary.calls !== undefined && summary.simulatorCalls !== undefined && summary.simulatorCalls !== summary.calls) {
      lines.push(
        `${summary.pattern}: the simulator served ${summary.simulatorCalls} calls per task (median) where result.steps records ${summary.calls} (retried or aborted attempts).`,
      );
    }
    for (const failure of summary.failures) lines.push(`${summary.pattern}: a task ended ${failure.status}${failure.error ? `: ${failure.error}` : ''}.`);
  }
  lines.push('', 'Prompts:', ...patterns.map((pattern) => `- ${pattern}: ${promptFor(pattern)}`));
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const prefix = `bench-patterns-${randomUUID().slice(0, 8)}`;
  const redis = new Redis(REDIS_URL);
  const stack = new Stack({
    redisUrl: REDIS_URL,
    prefix,
    apiPort: 0,
    simPort: 0,
    workers: 1,
    workerConcurrency: 1,
    simulatedModelsConfig: MODELS_CONFIG,
    env: { LOG_LEVEL: 'warn', SIM_SPEEDUP: String(SPEEDUP) },
    sink: quiet,
  });
  let output: string;
  try {
    log(`starting the stack (simulator at SIM_SPEEDUP ${SPEEDUP}, api, 1 worker; Redis prefix ${prefix})`);
    await stack.start();
    const hostReports = await hostsOf(stack.apiUrl);
    const hosts = hostReports.map((host) => host.name);
    const patterns = await patternsToRun(stack.apiUrl);

    // Warm-up, not measured: every pattern once with an instant model (JIT, connections, scripts).
    log(`warm-up: ${patterns.length} patterns once each with an instant model`);
    for (const pattern of patterns) await runTask(stack, pattern, `${promptFor(pattern)} [[sim: ttft=0; tps=0]]`, hosts);

    const summaries: PatternSummary[] = [];
    for (const pattern of patterns) {
      const samples: TaskSample[] = [];
      for (let index = 1; index <= TASKS; index += 1) {
        const sample = await runTask(stack, pattern, promptFor(pattern), hosts);
        samples.push(sample);
        log(`${pattern} ${index}/${TASKS}: ${sample.status}, ${(sample.wallMs / 1000).toFixed(2)} s${sample.error ? ` (${sample.error})` : ''}`);
      }
      summaries.push(summarisePattern(pattern, samples, hosts));
    }

    const layout = hostReports
      .map((host) => `${host.name} serves ${Object.keys(host.models).join(', ')} (maxConcurrentGenerations ${host.maxConcurrentGenerations})`)
      .join('; ');
    const title = `Pattern costs per task on the simulator at SIM_SPEEDUP ${SPEEDUP} (real ≈ measured × ${SPEEDUP}), medians of ${TASKS} task${TASKS === 1 ? '' : 's'} per pattern run one at a time`;
    output =
      formatGrid(
        title,
        costColumns(hosts, SPEEDUP),
        summaries.map((summary) => costRow(summary, hosts, SPEEDUP)),
      ) +
      notes(summaries, patterns, layout) +
      `\nnode ${process.version}, ${cpus().length} cores, Redis at ${REDIS_URL}\n`;
  } finally {
    await stack.stop();
    await deleteKeysWithPrefix(redis, prefix);
    await deleteKeysWithPrefix(redis, `mutex:${prefix}`);
    redis.disconnect();
  }
  process.stdout.write(output);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench:patterns failed: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
