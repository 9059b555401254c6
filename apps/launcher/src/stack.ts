import { printPrefixed, startService, stopService, type LineSink, type ServiceKind, type ServiceProcess } from './service-process';
import { supervisorFor, type SupervisionOptions, type Supervisor } from './supervisor';

// Tests and the benchmark import the process helpers from here.
export { COMPILED_ENTRIES, ENTRIES, PRODUCTION_NODE_OPTIONS, printPrefixed, serviceCommand, serviceEnv, startService, stopService } from './service-process';
export type { LineSink, ServiceKind, ServiceProcess } from './service-process';

export interface StackOptions {
  /**
   * REDIS_URL of every child; undefined: none (not even the launcher's own), for Sentinel or
   * Cluster mode, whose variables come in `env`.
   */
  redisUrl: string | undefined;
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
  /**
   * Start a service that ends on its own again, under the same name, environment and port,
   * with backoff; a crash loop stops the whole stack. Off by default: tests that kill a worker
   * on purpose expect it to stay dead.
   */
  supervise?: SupervisionOptions;
}

/** The environment variable that holds a service's port, so a restart binds the port the first start got. */
const PORT_VARIABLE: Partial<Record<ServiceKind, string>> = { api: 'PORT', 'model-sim': 'SIM_PORT' };

/**
 * Workers of one stack share an environment but not a port: with HEALTH_PORT=9464, worker-1's
 * health server gets 9464, worker-2's 9465, and so on (a restarted worker keeps its own); 0 (any
 * free port) and unset are passed on as they are.
 */
export function healthPortOf(base: string | undefined, index: number): { HEALTH_PORT?: string } {
  const port = Number(base);
  if (base === undefined || base === '' || !Number.isInteger(port) || port <= 0) return {};
  return { HEALTH_PORT: String(port + index - 1) };
}

/** A running service: simulator (unless real models are configured), api and workers. */
export class Stack {
  /** The current process of each worker; a restarted worker takes its predecessor's place. */
  readonly workers: ServiceProcess[] = [];
  /** The simulator's current process. */
  sim?: ServiceProcess;
  /** The api's current process. */
  api!: ServiceProcess;
  private childEnv: NodeJS.ProcessEnv = {};
  private workersStarted = 0;
  /** Aborted by stop(): a service still starting is killed, so none outlives the stack. */
  private readonly lifetime = new AbortController();
  private readonly startsUnderWay = new Set<Promise<unknown>>();
  private readonly supervisor?: Supervisor;
  private stopped?: Promise<void>;

  constructor(readonly options: StackOptions) {
    this.supervisor = supervisorFor(options.supervise, () => this.stop());
  }

  get apiUrl(): string {
    return `http://127.0.0.1:${this.api.port}`;
  }

  get simUrl(): string | undefined {
    return this.sim ? `http://127.0.0.1:${this.sim.port}` : undefined;
  }

  async start(): Promise<this> {
    this.childEnv = {
      ...process.env,
      ...this.options.env,
      REDIS_URL: this.options.redisUrl,
      ...(this.options.prefix ? { REDIS_PREFIX: this.options.prefix } : {}),
    };
    if (this.options.redisUrl === undefined) delete this.childEnv.REDIS_URL;
    try {
      if (this.options.modelsConfig) {
        this.childEnv.MODELS_CONFIG = this.options.modelsConfig;
      } else {
        if (this.options.simulatedModelsConfig) this.childEnv.MODELS_CONFIG = this.options.simulatedModelsConfig;
        const simEnv = { ...this.childEnv, SIM_PORT: String(this.options.simPort ?? 3458) };
        this.sim = await this.launch('model-sim', 'sim', simEnv, (next) => (this.sim = next));
        this.childEnv.SIM_PORT = String(this.sim.port);
      }
      const apiEnv = { ...this.childEnv, PORT: String(this.options.apiPort ?? 3457) };
      const [api] = await Promise.all([
        this.launch('api', 'api', apiEnv, (next) => (this.api = next)),
        ...Array.from({ length: this.options.workers }, () => this.addWorker()),
      ]);
      this.api = api;
      return this;
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Starts one more worker process. When supervised, `workers` holds its current process, not necessarily this one. */
  async addWorker(): Promise<ServiceProcess> {
    const index = ++this.workersStarted;
    const name = `worker-${index}`;
    const env = { ...this.childEnv, WORKER_CONCURRENCY: String(this.options.workerConcurrency), ...healthPortOf(this.childEnv.HEALTH_PORT, index) };
    const worker = await this.launch('worker', name, env, (next) => {
      const index = this.workers.findIndex((current) => current.name === next.name);
      if (index >= 0) this.workers[index] = next;
      else this.workers.push(next);
    });
    this.workers.push(worker);
    return worker;
  }

  /**
   * Stops the api first (no new work), then workers (finish or hand back), then the simulator.
   * Nothing is restarted from then on, and a pending restart is cancelled. Calling it again
   * answers the same promise.
   */
  stop(): Promise<void> {
    this.stopped ??= this.stopServices();
    return this.stopped;
  }

  private async stopServices(): Promise<void> {
    this.lifetime.abort();
    await this.supervisor?.stop();
    await Promise.allSettled([...this.startsUnderWay]);
    const stopAll = (services: Array<ServiceProcess | undefined>) =>
      Promise.all(services.filter((service): service is ServiceProcess => service !== undefined).map((service) => stopService(service)));
    await stopAll([this.api]);
    await stopAll(this.workers);
    await stopAll([this.sim]);
  }

  /**
   * Starts a service; when supervised, it is started again whenever it ends on its own, with the
   * same name and environment, and on the port its first start got (even when asked for port 0).
   */
  private async launch(kind: ServiceKind, name: string, env: NodeJS.ProcessEnv, adopt: (next: ServiceProcess) => void): Promise<ServiceProcess> {
    const start = (startEnv: NodeJS.ProcessEnv) => {
      const starting = startService(kind, name, startEnv, this.options.sink ?? printPrefixed, { signal: this.lifetime.signal });
      this.startsUnderWay.add(starting);
      void starting.then(
        () => this.startsUnderWay.delete(starting),
        () => this.startsUnderWay.delete(starting),
      );
      return starting;
    };
    const service = await start(env);
    const portVariable = PORT_VARIABLE[kind];
    const restartEnv = portVariable && service.port !== undefined ? { ...env, [portVariable]: String(service.port) } : env;
    this.supervisor?.watch(service, () => start(restartEnv), adopt);
    return service;
  }
}
