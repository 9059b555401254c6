import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

const ROOT = path.resolve(__dirname, '../../..');
export const ENTRIES = {
  'model-sim': path.join(ROOT, 'apps/model-sim/src/main.ts'),
  api: path.join(ROOT, 'apps/api/src/main.ts'),
  worker: path.join(ROOT, 'apps/worker/src/main.ts'),
} as const;
export type ServiceKind = keyof typeof ENTRIES;

interface ReadyMessage {
  type: 'ready';
  service: string;
  port?: number;
}

export interface ServiceProcess {
  name: string;
  kind: ServiceKind;
  child: ChildProcess;
  /** The port the service reported when ready (api, model-sim). */
  port?: number;
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string>;
}

export type LineSink = (name: string, line: string) => void;

export const printPrefixed: LineSink = (name, line) => process.stdout.write(`[${name}] ${line}\n`);

/**
 * Starts one service as a child process running its TypeScript entry through tsx, with
 * its output prefixed, and resolves once it reports `ready` over IPC.
 */
export async function startService(
  kind: ServiceKind,
  name: string,
  env: NodeJS.ProcessEnv,
  sink: LineSink,
  readyTimeoutMs = 30_000,
): Promise<ServiceProcess> {
  // NODE_ARGS: extra node flags for every service (e.g. --max-old-space-size=512, --cpu-prof).
  const nodeArgs = (env.NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', ENTRIES[kind]], {
    env,
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    // Own process group: a terminal's Ctrl-C reaches only the launcher, which stops the
    // services in order; a child whose launcher dies sees its IPC channel close and stops.
    detached: true,
  });
  const recent: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    readline.createInterface({ input: stream }).on('line', (line) => {
      recent.push(line);
      if (recent.length > 20) recent.shift();
      sink(name, line);
    });
  }
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  const ready = await new Promise<ReadyMessage>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not become ready within ${readyTimeoutMs} ms`)), readyTimeoutMs);
    child.on('message', (message: ReadyMessage) => {
      if (message?.type !== 'ready') return;
      clearTimeout(timer);
      resolve(message);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before it was ready:\n${recent.join('\n')}`));
    });
  });
  return { name, kind, child, port: ready.port, exited };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function stopService(service: ServiceProcess, graceMs = 15_000): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  const timer = setTimeout(() => service.child.kill('SIGKILL'), graceMs);
  await service.exited;
  clearTimeout(timer);
}

export interface StackOptions {
  redisUrl: string;
  /** Redis key prefix (BullMQ's too). */
  prefix?: string;
  apiPort?: number;
  /** Port of the simulator; ignored when modelsConfig is set. */
  simPort?: number;
  /** A model config for real servers; when unset the simulator is started and used. */
  modelsConfig?: string;
  /**
   * With the simulator: the model config it serves and every service uses (default
   * config/models.sim.yaml). Its endpoints reach the simulator through `${SIM_PORT}`, and may
   * use `/hosts/<name>/v1` so one simulator stands for several GPU hosts.
   */
  simulatedModelsConfig?: string;
  workers: number;
  workerConcurrency: number;
  /** Extra environment for every child. */
  env?: NodeJS.ProcessEnv;
  sink?: LineSink;
}

/** A running service: simulator (unless real models are configured), api and workers. */
export class Stack {
  readonly workers: ServiceProcess[] = [];
  sim?: ServiceProcess;
  api!: ServiceProcess;
  private childEnv: NodeJS.ProcessEnv = {};
  private workersStarted = 0;

  constructor(readonly options: StackOptions) {}

  get apiUrl(): string {
    return `http://127.0.0.1:${this.api.port}`;
  }

  get simUrl(): string | undefined {
    return this.sim ? `http://127.0.0.1:${this.sim.port}` : undefined;
  }

  async start(): Promise<this> {
    const sink = this.options.sink ?? printPrefixed;
    this.childEnv = {
      ...process.env,
      ...this.options.env,
      REDIS_URL: this.options.redisUrl,
      ...(this.options.prefix ? { REDIS_PREFIX: this.options.prefix } : {}),
    };
    try {
      if (this.options.modelsConfig) {
        this.childEnv.MODELS_CONFIG = this.options.modelsConfig;
      } else {
        if (this.options.simulatedModelsConfig) this.childEnv.MODELS_CONFIG = this.options.simulatedModelsConfig;
        this.sim = await startService('model-sim', 'sim', { ...this.childEnv, SIM_PORT: String(this.options.simPort ?? 3458) }, sink);
        this.childEnv.SIM_PORT = String(this.sim.port);
      }
      const [api] = await Promise.all([
        startService('api', 'api', { ...this.childEnv, PORT: String(this.options.apiPort ?? 3457) }, sink),
        ...Array.from({ length: this.options.workers }, () => this.addWorker()),
      ]);
      this.api = api;
      return this;
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Starts one more worker process. */
  async addWorker(): Promise<ServiceProcess> {
    const name = `worker-${++this.workersStarted}`;
    const env = { ...this.childEnv, WORKER_CONCURRENCY: String(this.options.workerConcurrency) };
    const worker = await startService('worker', name, env, this.options.sink ?? printPrefixed);
    this.workers.push(worker);
    return worker;
  }

  /** Stops the api first (no new work), then workers (finish or hand back), then the simulator. */
  async stop(): Promise<void> {
    const stopAll = (services: Array<ServiceProcess | undefined>) =>
      Promise.all(services.filter((service): service is ServiceProcess => service !== undefined).map((service) => stopService(service)));
    await stopAll([this.api]);
    await stopAll(this.workers);
    await stopAll([this.sim]);
  }
}
