/**
 * `npm run bench`: every figure measured side by side in one run on the same Redis,
 * printed as a markdown table. Needs Redis at REDIS_URL (default 127.0.0.1:6379).
 */
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Stack } from '../apps/launcher/src/stack';
import { callsOnHost, handoffGaps, type SimulatedCall, type SimulatorStats } from '../apps/model-sim/src/simulator';
import { generateApiKey, sha256Hex } from '@mageagent/core';
import { BULLMQ_PRIORITY, createRedis, deleteKeysWithPrefix, TASK_QUEUE_NAME } from '@mageagent/tasks';
import { compiledRows } from './compiled';
import { memoryRows } from './memory';
import { formatTable, type Row } from './table';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const DURATION_S = Number(process.env.BENCH_SECONDS ?? 3);
/**
 * Ceiling and api are measured in alternating rounds; medians are reported (a shared 2-core box is
 * noisy: single rounds of one run range from 0.4 to 0.9 of the ceiling, so 7 rounds, not 5).
 */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7);
const OVERHEAD_TASKS = Number(process.env.BENCH_OVERHEAD_TASKS ?? 200);
const SSE_CLIENTS = Number(process.env.BENCH_SSE_CLIENTS ?? 500);
const BODY = JSON.stringify({ prompt: 'Explain BullMQ in two sentences', pattern: 'primary' });
/** Tasks pushed through one host at zero latency, for calls/s and the handoff gap. */
const HOST_TASKS = Number(process.env.BENCH_HOST_TASKS ?? 400);
/** Tasks of the utilization run (the stack's models at HOST_SPEEDUP). */
const HOST_BACKLOG_TASKS = Number(process.env.BENCH_HOST_BACKLOG_TASKS ?? 24);
const HOST_SPEEDUP = Number(process.env.BENCH_HOST_SPEEDUP ?? 20);
/**
 * The spine's api log level: `warn` by default; `BENCH_LOG_LEVEL=info` measures POST /tasks with
 * its access log lines written (to a pipe the bench drains, as a supervisor's would be).
 */
const SPINE_LOG_LEVEL = process.env.BENCH_LOG_LEVEL ?? 'warn';
/** `BENCH_ONLY=spine`, `hosts`, `memory` or `compiled` runs only that table. */
const ONLY = process.env.BENCH_ONLY;
if (ONLY !== undefined && !['spine', 'hosts', 'memory', 'compiled'].includes(ONLY))
  throw new Error(`BENCH_ONLY must be spine, hosts, memory or compiled, not "${ONLY}"`);
const SIM_HOST = 'sim-mac';

const rows: Row[] = [];
const hostRows: Row[] = [];
const memory: Row[] = [];
const compiled: Row[] = [];
const log = (line: string) => process.stderr.write(`bench: ${line}\n`);
const quiet = () => undefined;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function load(url: string, extraHeaders: Record<string, string> = {}): Promise<autocannon.Result> {
  const headers = { 'content-type': 'application/json', ...extraHeaders };
  // Warm-up first: JIT, connection pools, Lua script cache.
  await autocannon({ url, connections: CONNECTIONS, duration: 1, method: 'POST', headers, body: BODY });
  const result = await autocannon({ url, connections: CONNECTIONS, duration: DURATION_S, method: 'POST', headers, body: BODY });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx answers, ${result.errors} errors`);
  return result;
}

async function startHttpCeiling(): Promise<{ url: string; stop: () => void }> {
  const child = fork(path.join(__dirname, 'http-ceiling.ts'), { execArgv: ['--import', 'tsx'], stdio: 'ignore' });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (message: { port: number }) => resolve(message.port));
    child.once('exit', (code) => reject(new Error(`http-ceiling exited ${code}`)));
  });
  return { url: `http://127.0.0.1:${port}/tasks`, stop: () => child.kill('SIGTERM') };
}

interface LoadSummary {
  rps: number;
  p50: number;
  p99: number;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

function summarise(results: autocannon.Result[]): LoadSummary {
  return {
    rps: median(results.map((result) => result.requests.average)),
    p50: median(results.map((result) => result.latency.p50)),
    p99: median(results.map((result) => result.latency.p99)),
  };
}

/** Plain BullMQ: `queue.add` with the api's job options, CONNECTIONS adds in flight. */
async function queueCeiling(prefix: string): Promise<{ perSecond: number }> {
  const connection = createRedis(REDIS_URL, 'requests', { connectionName: 'bench-queue' });
  const queue = new Queue(TASK_QUEUE_NAME, { connection, prefix, streams: { events: { maxLen: 100 } } });
  const options = {
    priority: BULLMQ_PRIORITY.normal,
    attempts: 3,
    backoff: { type: 'exponential', delay: 1000 },
    removeOnComplete: true,
    removeOnFail: { age: 86400, count: 10000 },
  };
  const run = async (seconds: number) => {
    let added = 0;
    const deadline = Date.now() + seconds * 1000;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        while (Date.now() < deadline) {
          await queue.add('run', { taskId: randomUUID() }, { ...options, jobId: randomUUID() });
          added += 1;
        }
      }),
    );
    return added / seconds;
  };
  try {
    await run(1);
    return { perSecond: await run(DURATION_S) };
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

/**
 * TCP connections the api process holds open to Redis, read from /proc: its socket file
 * descriptors matched with the kernel's established connections to Redis's port. Counting by
 * process, not by CLIENT LIST's connection names, so other processes on the same Redis (another
 * stack, a test run) cannot change the figure.
 */
async function apiConnections(pid: number): Promise<number> {
  const { readdir, readlink, readFile } = await import('node:fs/promises');
  const redisPort = Number(new URL(REDIS_URL).port || 6379);
  const sockets = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode !== undefined) sockets.add(inode);
  }
  let count = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const lines = (await readFile(table, 'utf8').catch(() => '')).split('\n').slice(1);
    for (const line of lines) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const fields = line.trim().split(/\s+/);
      const [remote, state, inode] = [fields[2], fields[3], fields[9]];
      if (remote === undefined || inode === undefined) continue;
      const established = state === '01';
      if (established && Number.parseInt(remote.split(':')[1] ?? '', 16) === redisPort && sockets.has(inode)) count += 1;
    }
  }
  return count;
}

/** Opens an SSE stream and resolves once its headers arrived; returns a closer. */
async function openStream(url: string): Promise<() => void> {
  const controller = new AbortController();
  const response = await fetch(url, { signal: controller.signal });
  if (response.status !== 200) throw new Error(`stream answered ${response.status}`);
  void response.body?.pipeTo(new WritableStream()).catch(() => undefined);
  return () => controller.abort();
}

async function postTask(api: string, prompt: string, body: Record<string, unknown> = {}): Promise<string> {
  const response = await fetch(`${api}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, ...body }) });
  return ((await response.json()) as { id: string }).id;
}

/** POST, then follow SSE until the terminal status; ms from before the POST to that event. */
async function roundTrip(api: string, prompt: string): Promise<number> {
  const started = performance.now();
  const id = await postTask(api, prompt);
  const response = await fetch(`${api}/tasks/${id}/stream`);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    if (/event: status\ndata: [^\n]*"status":"(completed|failed|cancelled)"/.test(text)) break;
  }
  const elapsed = performance.now() - started;
  await reader.cancel();
  if (!text.includes('"status":"completed"')) throw new Error(`task ${id} did not complete`);
  return elapsed;
}

type StatsWithCalls = SimulatorStats & { calls: SimulatedCall[] };

async function simStats(sim: string): Promise<StatsWithCalls> {
  return (await (await fetch(`${sim}/sim/stats?calls=1`)).json()) as StatsWithCalls;
}

/**
 * Submits every task at once (a backlog far deeper than the 16 job slots), waits until the
 * simulator has answered `calls` calls and every task completed; returns the simulator's view.
 */
async function runBacklog(api: string, sim: string, tasks: Array<{ prompt: string; pattern: string }>): Promise<StatsWithCalls> {
  await fetch(`${sim}/sim/reset`, { method: 'POST' });
  const ids = await Promise.all(tasks.map(({ prompt, pattern }) => postTask(api, prompt, { pattern })));
  for (;;) {
    const stats = await simStats(sim);
    if (stats.requests >= tasks.length && stats.inFlight === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const stats = await simStats(sim);
  for (const id of ids) {
    for (let tries = 0; ; tries += 1) {
      const task = (await (await fetch(`${api}/tasks/${id}`)).json()) as { status: string };
      if (task.status === 'completed') break;
      if (task.status === 'failed' || task.status === 'cancelled' || tries > 100) throw new Error(`task ${id} ended ${task.status}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return stats;
}

/** One host, maxConcurrentGenerations 1, 4 workers × 4: throughput, handoff gap, bound, utilization. */
async function hostScheduling(prefix: () => string): Promise<void> {
  const startStack = (speedup: number) =>
    new Stack({
      redisUrl: REDIS_URL,
      prefix: prefix(),
      apiPort: 0,
      simPort: 0,
      workers: 4,
      workerConcurrency: 4,
      env: { LOG_LEVEL: 'warn', SIM_SPEEDUP: String(speedup) },
      sink: quiet,
    }).start();

  log(`host scheduling: ${HOST_TASKS} zero-latency tasks through one host, 4 workers x 4`);
  let stack = await startStack(1);
  let zeroLatency: StatsWithCalls;
  try {
    const prompt = 'Explain BullMQ in two sentences [[sim: ttft=0; tps=0; tokens=20]]';
    await runBacklog(
      stack.apiUrl,
      stack.simUrl!,
      Array.from({ length: 64 }, () => ({ prompt, pattern: 'primary' })),
    );
    zeroLatency = await runBacklog(
      stack.apiUrl,
      stack.simUrl!,
      Array.from({ length: HOST_TASKS }, () => ({ prompt, pattern: 'primary' })),
    );
  } finally {
    await stack.stop();
  }
  const calls = callsOnHost(zeroLatency.calls, SIM_HOST);
  const spanS = (calls[calls.length - 1]!.endedAt - calls[0]!.startedAt) / 1000;
  const gaps = handoffGaps(calls).sort((a, b) => a - b);

  log(`host scheduling: ${HOST_BACKLOG_TASKS} tasks on the stack's models at SIM_SPEEDUP ${HOST_SPEEDUP}`);
  stack = await startStack(HOST_SPEEDUP);
  let realistic: StatsWithCalls;
  try {
    const patterns = ['primary', 'competitor', 'validator'];
    const task = (index: number) => ({ prompt: `Explain topic ${index} in a paragraph`, pattern: patterns[index % patterns.length]! });
    await runBacklog(
      stack.apiUrl,
      stack.simUrl!,
      Array.from({ length: 6 }, (_, index) => task(index)),
    );
    realistic = await runBacklog(
      stack.apiUrl,
      stack.simUrl!,
      Array.from({ length: HOST_BACKLOG_TASKS }, (_, index) => task(index)),
    );
  } finally {
    await stack.stop();
  }
  const busyCalls = callsOnHost(realistic.calls, SIM_HOST);
  const windowMs = busyCalls[busyCalls.length - 1]!.endedAt - busyCalls[0]!.startedAt;
  const utilization = (realistic.busyMsByHost[SIM_HOST] ?? 0) / windowMs;
  const busyGaps = handoffGaps(busyCalls).sort((a, b) => a - b);
  const maxInFlight = Math.max(zeroLatency.maxInFlightByHost[SIM_HOST] ?? 0, realistic.maxInFlightByHost[SIM_HOST] ?? 0);

  hostRows.push(
    {
      metric: `Calls through one host (maxConcurrentGenerations 1), zero-latency model, 4 workers × 4, ${calls.length} calls`,
      value: `${Math.round(calls.length / spanS)} calls/s`,
      target: 'reference',
    },
    {
      metric: "Handoff gap under backlog: one call's end → the next call's start (zero-latency run)",
      value: `p50 ${percentile(gaps, 50)} ms, p99 ${percentile(gaps, 99)} ms`,
      target: 'p99 < 20 ms',
      ok: percentile(gaps, 99) < 20,
    },
    {
      metric: `Host utilization under backlog, the stack's models at SIM_SPEEDUP ${HOST_SPEEDUP} (${busyCalls.length} calls, ${(windowMs / 1000).toFixed(1)} s)`,
      value: `${(utilization * 100).toFixed(1)} % busy (gap p50 ${percentile(busyGaps, 50)} ms, p99 ${percentile(busyGaps, 99)} ms)`,
      target: '≥ 95 %',
      ok: utilization >= 0.95,
    },
    {
      metric: 'Most calls in flight on the host at once (simulator, both runs)',
      value: String(maxInFlight),
      target: '= maxConcurrentGenerations (1)',
      ok: maxInFlight === 1,
    },
  );
}

async function main(): Promise<void> {
  const redis = new Redis(REDIS_URL);
  const prefixes: string[] = [];
  const prefix = () => {
    const value = `bench-${randomUUID().slice(0, 8)}`;
    prefixes.push(value);
    return value;
  };
  try {
    if (ONLY === undefined || ONLY === 'spine') await spine(prefix);
    if (ONLY === undefined || ONLY === 'hosts') await hostScheduling(prefix);
    if (ONLY === undefined || ONLY === 'memory') memory.push(...(await memoryRows({ redisUrl: REDIS_URL, prefix: prefix(), log })));
    if (ONLY === undefined || ONLY === 'compiled') compiled.push(...(await compiledRows({ redisUrl: REDIS_URL, prefix, log })));
  } finally {
    for (const value of prefixes) {
      await deleteKeysWithPrefix(redis, value);
      await deleteKeysWithPrefix(redis, `mutex:${value}`);
    }
    redis.disconnect();
  }

  process.stdout.write(
    `${formatTable(`Spine (api LOG_LEVEL ${SPINE_LOG_LEVEL})`, rows)}${formatTable('Host scheduling', hostRows)}${formatTable('Memory', memory)}${formatTable('Compiled processes (npm run build) beside tsx', compiled)}\nnode ${process.version}, ${(await import('node:os')).cpus().length} cores, Redis at ${REDIS_URL}\n`,
  );
}

/** A keys file with one key (quotas from the environment), in a temporary directory. */
function benchKeysFile(): { file: string; key: string; remove: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-keys-'));
  const key = generateApiKey();
  const file = path.join(dir, 'api-keys.yaml');
  writeFileSync(file, `keys:\n  - id: bench\n    sha256: ${sha256Hex(key)}\n    tenant: bench\n    scopes: [tasks]\n`);
  return { file, key, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** An api with no workers (only the api and Redis are measured) and no bound on the backlog, plus `env`. */
function ingestStack(prefix: string, env: Record<string, string>): Stack {
  return new Stack({
    redisUrl: REDIS_URL,
    prefix,
    apiPort: 0,
    simPort: 0,
    workers: 0,
    workerConcurrency: 1,
    env: { LOG_LEVEL: SPINE_LOG_LEVEL, MAX_QUEUED_TASKS: '0', ...env },
    sink: quiet,
  });
}

/** The spine's table: ingest beside its ceilings, orchestration overhead, api connections. */
async function spine(prefix: () => string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    log('POST /tasks through the api (no workers, so only the api and Redis are measured)');
    // No bound on the backlog: with no workers, every task posted stays queued.
    const ingest = ingestStack(prefix(), {});
    await ingest.start();
    // The same with an API key and quotas on: authentication, a requests-per-minute check in Redis
    // and the active-task bound, set high enough to be counted on every request but never reached.
    const keys = benchKeysFile();
    const secured = ingestStack(prefix(), {
      API_KEYS_FILE: keys.file,
      QUOTA_REQUESTS_PER_MINUTE: '100000000',
      QUOTA_MAX_ACTIVE_TASKS: '100000000',
    });
    await secured.start();
    const httpCeiling = await startHttpCeiling();
    let api: LoadSummary;
    let securedApi: LoadSummary;
    let ceiling: LoadSummary;
    const ratios: number[] = [];
    const securedRatios: number[] = [];
    let connectionsAtOne: number;
    let connectionsAtMany: number;
    try {
      const ceilingRuns: autocannon.Result[] = [];
      const apiRuns: autocannon.Result[] = [];
      const securedRuns: autocannon.Result[] = [];
      for (let round = 1; round <= ROUNDS; round += 1) {
        log(`round ${round}/${ROUNDS}: HTTP ceiling, POST /tasks, POST /tasks with a key and quotas (${CONNECTIONS} connections, ${DURATION_S} s each)`);
        ceilingRuns.push(await load(httpCeiling.url));
        apiRuns.push(await load(`${ingest.apiUrl}/tasks`));
        securedRuns.push(await load(`${secured.apiUrl}/tasks`, { authorization: `Bearer ${keys.key}` }));
      }
      log('closing HTTP ceiling run');
      ceilingRuns.push(await load(httpCeiling.url));
      // Each run is compared with the ceiling where it ran: between the ceiling runs before and
      // after its round (the api a third of the way, the keyed api two thirds), since a shared
      // machine's speed drifts within seconds and the keyed run is 8 s from the round's first.
      for (let round = 0; round < ROUNDS; round += 1) {
        const [before, after] = [ceilingRuns[round]!.requests.average, ceilingRuns[round + 1]!.requests.average];
        ratios.push(apiRuns[round]!.requests.average / ((2 * before + after) / 3));
        securedRatios.push(securedRuns[round]!.requests.average / ((before + 2 * after) / 3));
      }
      ceiling = summarise(ceilingRuns);
      api = summarise(apiRuns);
      securedApi = summarise(securedRuns);
      log(`Redis connections held by the api with 1 and ${SSE_CLIENTS} SSE clients`);
      const ids = await Promise.all(Array.from({ length: SSE_CLIENTS }, () => postTask(ingest.apiUrl, 'held open')));
      const closers = [await openStream(`${ingest.apiUrl}/tasks/${ids[0]}/stream`)];
      connectionsAtOne = await apiConnections(ingest.api.child.pid!);
      closers.push(...(await Promise.all(ids.slice(1).map((id) => openStream(`${ingest.apiUrl}/tasks/${id}/stream`)))));
      connectionsAtMany = await apiConnections(ingest.api.child.pid!);
      for (const close of closers) close();
    } finally {
      httpCeiling.stop();
      await ingest.stop();
      await secured.stop();
      keys.remove();
    }

    log('plain BullMQ queue.add loop');
    const queue = await queueCeiling(prefix());

    log(`orchestration overhead: ${OVERHEAD_TASKS} tasks, zero-latency simulated model, 2 workers x 4`);
    const full = new Stack({
      redisUrl: REDIS_URL,
      prefix: prefix(),
      apiPort: 0,
      simPort: 0,
      workers: 2,
      workerConcurrency: 4,
      env: { LOG_LEVEL: SPINE_LOG_LEVEL },
      sink: quiet,
    });
    await full.start();
    const latencies: number[] = [];
    try {
      const prompt = 'Explain BullMQ in two sentences [[sim: ttft=0; tps=0; tokens=20]]';
      for (let index = 0; index < 20; index += 1) await roundTrip(full.apiUrl, prompt);
      for (let index = 0; index < OVERHEAD_TASKS; index += 1) latencies.push(await roundTrip(full.apiUrl, prompt));
    } finally {
      await full.stop();
    }
    latencies.sort((a, b) => a - b);

    const ratio = median(ratios);
    rows.push(
      {
        metric: `HTTP ceiling: express 5 parse + validate, no Redis (${CONNECTIONS} conns)`,
        value: `${Math.round(ceiling.rps)} req/s, p50 ${ceiling.p50} ms, p99 ${ceiling.p99} ms`,
        target: 'reference',
      },
      { metric: `Queue ceiling: plain BullMQ queue.add (${CONNECTIONS} in flight)`, value: `${Math.round(queue.perSecond)} adds/s`, target: 'reference' },
      {
        metric: `POST /tasks (${CONNECTIONS} conns)`,
        value: `${Math.round(api.rps)} req/s, p50 ${api.p50} ms, p99 ${api.p99} ms`,
        target: '≥ 0.6× HTTP ceiling',
      },
      {
        metric: `POST /tasks ÷ HTTP ceiling (median of ${ROUNDS} alternating rounds)`,
        value: `${ratio.toFixed(2)}× (rounds: ${ratios.map((value) => value.toFixed(2)).join(', ')})`,
        target: '≥ 0.60×',
        ok: ratio >= 0.6,
      },
      {
        metric: `POST /tasks with an API key and quotas (${CONNECTIONS} conns)`,
        value: `${Math.round(securedApi.rps)} req/s, p50 ${securedApi.p50} ms, p99 ${securedApi.p99} ms`,
        target: '≥ 0.6× HTTP ceiling',
      },
      {
        metric: `POST /tasks with an API key and quotas ÷ HTTP ceiling (median of ${ROUNDS} rounds)`,
        value: `${median(securedRatios).toFixed(2)}× (rounds: ${securedRatios.map((value) => value.toFixed(2)).join(', ')})`,
        target: '≥ 0.60×',
        ok: median(securedRatios) >= 0.6,
      },
      {
        metric: `Overhead: POST → terminal SSE event, zero-latency model (${OVERHEAD_TASKS} tasks)`,
        value: `p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms`,
        target: 'p99 < 50 ms',
        ok: percentile(latencies, 99) < 50,
      },
      { metric: 'api Redis connections, 1 SSE client', value: String(connectionsAtOne), target: `same at 1 and ${SSE_CLIENTS}` },
      {
        metric: `api Redis connections, ${SSE_CLIENTS} SSE clients`,
        value: String(connectionsAtMany),
        target: `same at 1 and ${SSE_CLIENTS}`,
        ok: connectionsAtMany === connectionsAtOne,
      },
    );
  } finally {
    redis.disconnect();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
