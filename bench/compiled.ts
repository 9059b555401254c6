/**
 * The compiled-processes table: how fast each service is ready, and how much memory the api and a
 * worker hold after 200 tasks, running its bundle (`npm run build`, as the image does) beside
 * running its TypeScript through tsx (as `npm start` does in development). Run alone with
 * BENCH_ONLY=compiled; builds first.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { PRODUCTION_NODE_OPTIONS, ROOT, serviceCommand, serviceEnv, type ServiceKind } from '../apps/launcher/src/service-process';
import { Stack } from '../apps/launcher/src/stack';
import type { Row } from './table';

const execFileAsync = promisify(execFile);
type Mode = 'compiled' | 'tsx';
const MODES: Mode[] = ['compiled', 'tsx'];
/** Starts of each service in each mode; the median is reported. */
const STARTS = Number(process.env.BENCH_STARTS ?? 5);
const RSS_TASKS = Number(process.env.BENCH_RSS_TASKS ?? 200);
const READY_TARGET_MS = 1500;
const WORKER_RSS_TARGET = 100 * 1048576;
const API_RSS_TARGET = 110 * 1048576;
const PROMPT = 'Explain BullMQ in two sentences [[sim: ttft=0; tps=0; tokens=20]]';

export interface CompiledBenchOptions {
  redisUrl: string;
  prefix: () => string;
  log: (line: string) => void;
}

const MB = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MB`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function rssOf(pid: number): Promise<number> {
  const { stdout } = await execFileAsync('ps', ['-o', 'rss=', '-p', String(pid)]);
  return Number(stdout.trim()) * 1024;
}

/** The node arguments of a service in a mode: exactly what the launcher (and, compiled, the image) runs. */
const argvOf = (kind: ServiceKind, mode: Mode) => serviceCommand(kind, { MAGEAGENT_COMPILED: mode === 'compiled' ? '1' : '0' });

/**
 * Milliseconds from spawning the service to it being ready: the api answering /readyz 200 (Redis
 * reachable), the simulator answering GET /v1/models, the worker logging `worker ready` (its BullMQ
 * worker connected). tsx gets an empty cache directory each time, as in a fresh container.
 */
async function readyIn(kind: ServiceKind, mode: Mode, env: NodeJS.ProcessEnv): Promise<number> {
  const port = await freePort();
  const cache = mkdtempSync(path.join(tmpdir(), 'bench-tsx-cache-'));
  const started = performance.now();
  const child = spawn(process.execPath, argvOf(kind, mode), {
    cwd: ROOT,
    // Compiled: with the image's NODE_OPTIONS, as the launcher gives them.
    env: serviceEnv({
      ...env,
      MAGEAGENT_COMPILED: mode === 'compiled' ? '1' : '0',
      PORT: String(port),
      SIM_PORT: kind === 'model-sim' ? String(port) : env.SIM_PORT,
      LOG_LEVEL: 'info',
      TMPDIR: cache,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  let logged = false;
  readline.createInterface({ input: child.stdout! }).on('line', (line) => (logged ||= line.includes('"message":"worker ready"')));
  child.stderr!.resume();
  try {
    const url = kind === 'api' ? `http://127.0.0.1:${port}/readyz` : `http://127.0.0.1:${port}/v1/models`;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${kind} (${mode}) exited ${child.exitCode} before it was ready`);
      if (
        kind === 'worker'
          ? logged
          : (await fetch(url).then(
              (response) => response.status,
              () => 0,
            )) === 200
      )
        return performance.now() - started;
      if (performance.now() - started > 30_000) throw new Error(`${kind} (${mode}) not ready in 30 s`);
      await sleep(kind === 'worker' ? 2 : 5);
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
    rmSync(cache, { recursive: true, force: true });
  }
}

/** RSS of the api and of each worker after RSS_TASKS tasks through a stack (2 workers × 4), 8 clients at once, each following its task over SSE. */
async function rssAfterTasks(mode: Mode, options: CompiledBenchOptions, defaultV8 = false): Promise<{ api: number; workers: number[] }> {
  const stack = new Stack({
    redisUrl: options.redisUrl,
    prefix: options.prefix(),
    apiPort: 0,
    simPort: 0,
    workers: 2,
    workerConcurrency: 4,
    // defaultV8: compiled, but without the image's NODE_OPTIONS (an empty NODE_OPTIONS is left alone).
    env: { LOG_LEVEL: 'warn', SIM_SPEEDUP: '1000', MAGEAGENT_COMPILED: mode === 'compiled' ? '1' : '0', ...(defaultV8 ? { NODE_OPTIONS: '' } : {}) },
    sink: () => undefined,
  });
  await stack.start();
  try {
    let started = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (started < RSS_TASKS) {
          started += 1;
          const response = await fetch(`${stack.apiUrl}/tasks`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ prompt: PROMPT, pattern: 'primary' }),
          });
          const { id } = (await response.json()) as { id: string };
          const text = await (await fetch(`${stack.apiUrl}/tasks/${id}/stream`)).text();
          if (!text.includes('"status":"completed"')) throw new Error(`task ${id} did not complete (${mode})`);
        }
      }),
    );
    // Let the last responses and deliveries settle, as a service between bursts would.
    await sleep(1000);
    return { api: await rssOf(stack.api.child.pid!), workers: await Promise.all(stack.workers.map((worker) => rssOf(worker.child.pid!))) };
  } finally {
    await stack.stop();
  }
}

export async function compiledRows(options: CompiledBenchOptions): Promise<Row[]> {
  options.log('compiled: npm run build');
  const buildStarted = performance.now();
  execFileSync('npm', ['run', 'build', '--silent', '--', '--quiet'], { cwd: ROOT, stdio: 'inherit' });
  const buildMs = performance.now() - buildStarted;

  const env = { ...process.env, REDIS_URL: options.redisUrl, NODE_ENV: 'production' };
  // The worker's model hosts: a simulator for its health probes to reach while it starts.
  const simPort = await freePort();
  const sim = spawn(process.execPath, argvOf('model-sim', 'compiled'), {
    cwd: ROOT,
    env: { ...env, SIM_PORT: String(simPort), LOG_LEVEL: 'warn' },
    stdio: 'ignore',
  });
  const ready: Record<string, number[]> = {};
  try {
    while (
      (await fetch(`http://127.0.0.1:${simPort}/v1/models`).then(
        (response) => response.status,
        () => 0,
      )) !== 200
    )
      await sleep(20);
    for (let run = 0; run <= STARTS; run += 1) {
      for (const mode of MODES) {
        for (const kind of ['api', 'worker', 'model-sim'] as const) {
          options.log(`compiled: ${kind} (${mode}) start ${run}/${STARTS}${run === 0 ? ' (warm-up, not counted)' : ''}`);
          const ms = await readyIn(kind, mode, { ...env, REDIS_PREFIX: options.prefix(), SIM_PORT: String(simPort) });
          if (run > 0) (ready[`${kind} ${mode}`] ??= []).push(ms);
        }
      }
    }
  } finally {
    sim.kill('SIGTERM');
  }
  const rss: Partial<Record<Mode, { api: number; workers: number[] }>> = {};
  for (const mode of MODES) {
    options.log(`compiled: RSS after ${RSS_TASKS} tasks (${mode})`);
    rss[mode] = await rssAfterTasks(mode, options);
  }
  options.log(`compiled: RSS after ${RSS_TASKS} tasks (compiled, NODE_OPTIONS empty: V8's default semi-spaces)`);
  const defaultV8 = await rssAfterTasks('compiled', options, true);

  const readyRow = (kind: ServiceKind, what: string): Row => {
    const compiled = median(ready[`${kind} compiled`]!);
    const tsx = median(ready[`${kind} tsx`]!);
    return {
      metric: `${kind} ready in: spawn → ${what} (median of ${STARTS})`,
      value: `compiled ${Math.round(compiled)} ms; tsx ${Math.round(tsx)} ms`,
      target: `compiled < ${READY_TARGET_MS} ms`,
      ok: compiled < READY_TARGET_MS,
    };
  };
  const workerRss = (mode: Mode) => Math.max(...rss[mode]!.workers);
  const imageOptions = `NODE_OPTIONS=${PRODUCTION_NODE_OPTIONS}`;
  return [
    { metric: 'npm run build (esbuild, 5 bundles)', value: `${Math.round(buildMs)} ms`, target: 'reference' },
    readyRow('api', '/readyz 200'),
    readyRow('worker', '"worker ready" logged'),
    readyRow('model-sim', 'GET /v1/models 200'),
    {
      metric: `worker RSS after ${RSS_TASKS} tasks (2 workers × 4, the larger)`,
      value: `compiled ${MB(workerRss('compiled'))} (${imageOptions}), ${MB(Math.max(...defaultV8.workers))} (V8 defaults); tsx ${MB(workerRss('tsx'))}`,
      target: '< 100 MB compiled',
      ok: workerRss('compiled') < WORKER_RSS_TARGET,
    },
    {
      metric: `api RSS after ${RSS_TASKS} tasks`,
      value: `compiled ${MB(rss.compiled!.api)} (${imageOptions}), ${MB(defaultV8.api)} (V8 defaults); tsx ${MB(rss.tsx!.api)}`,
      target: '< 110 MB compiled',
      ok: rss.compiled!.api < API_RSS_TARGET,
    },
  ];
}
