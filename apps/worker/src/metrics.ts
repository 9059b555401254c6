import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelObserver } from '@mageagent/models';

/**
 * Model calls and tasks last from a fraction of a second to many minutes (a long generation on a
 * busy Mac, a task queued behind others): buckets up to the 30-minute mark.
 */
export const LONG_SECONDS_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800];
/** Lease waits are near zero on an idle host and minutes on a busy one. */
const LEASE_WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800];

/** How a task ended in this worker (a hand-back on shutdown is not an end: another worker finishes it). */
export type TaskOutcome = 'completed' | 'failed' | 'cancelled';

/** What the task processor reports; the worker's Prometheus metrics implement it. */
export interface TaskObserver {
  /** A task's attempt started after waiting `waitMs` in the queue (only the first start: a restart has no queue wait of its own). */
  taskStarted(pattern: string, waitMs: number): void;
  /** A task this worker ran ended, `durationMs` after it started here. */
  taskFinished(pattern: string, status: TaskOutcome, durationMs: number): void;
}

/**
 * The worker's one Prometheus registry: tasks run here, model calls and GPU-host leases, plus
 * Node's default process metrics under their standard names (process_*, nodejs_*), which the
 * common Node dashboards expect; the Prometheus job/instance labels tell processes apart.
 */
export class WorkerMetrics implements TaskObserver {
  readonly registry = new Registry();
  private readonly tasksFinished: Counter<'pattern' | 'status'>;
  private readonly taskDuration: Histogram<'pattern'>;
  private readonly queueWait: Histogram<'pattern'>;
  private readonly modelCallDuration: Histogram<'role' | 'host' | 'outcome'>;
  private readonly modelTokens: Counter<'role' | 'host' | 'type'>;
  private readonly modelErrors: Counter<'role' | 'host' | 'code'>;
  private readonly leaseWait: Histogram<'host'>;
  private readonly hostBusy: Counter<'host'>;

  constructor(options: { redisUp?: () => boolean; defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.tasksFinished = new Counter({
      name: 'mageagent_tasks_finished_total',
      help: 'Tasks that ended in this worker, by pattern and final status (completed, failed, cancelled).',
      labelNames: ['pattern', 'status'],
      registers,
    });
    this.taskDuration = new Histogram({
      name: 'mageagent_task_duration_seconds',
      help: 'Time from a task starting in this worker to its terminal status.',
      labelNames: ['pattern'],
      buckets: LONG_SECONDS_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'mageagent_task_queue_wait_seconds',
      help: 'Time a task waited in the queue, from its creation to its first start.',
      labelNames: ['pattern'],
      buckets: LEASE_WAIT_BUCKETS,
      registers,
    });
    this.modelCallDuration = new Histogram({
      name: 'mageagent_model_call_duration_seconds',
      help: 'Duration of model calls (the HTTP call, after the host lease was granted), by role, host and outcome (ok, error, cancelled).',
      labelNames: ['role', 'host', 'outcome'],
      buckets: LONG_SECONDS_BUCKETS,
      registers,
    });
    this.modelTokens = new Counter({
      name: 'mageagent_model_tokens_total',
      help: "Tokens of successful model calls by type (prompt, completion): the server's usage, or estimated when it reports none.",
      labelNames: ['role', 'host', 'type'],
      registers,
    });
    this.modelErrors = new Counter({
      name: 'mageagent_model_call_errors_total',
      help: 'Failed model calls by error code (MODEL_TIMEOUT, MODEL_UNAVAILABLE, MODEL_ERROR, ...); each retry counts.',
      labelNames: ['role', 'host', 'code'],
      registers,
    });
    this.leaseWait = new Histogram({
      name: 'mageagent_host_lease_wait_seconds',
      help: "Time a model call waited for its GPU host's lease.",
      labelNames: ['host'],
      buckets: LEASE_WAIT_BUCKETS,
      registers,
    });
    this.hostBusy = new Counter({
      name: 'mageagent_host_busy_seconds_total',
      help: "Seconds this worker held leases on the host; sum(rate()) over workers is the host's busy fraction times its concurrency.",
      labelNames: ['host'],
      registers,
    });
    const redisUp = options.redisUp;
    new Gauge({
      name: 'mageagent_redis_up',
      help: "1 when this process's Redis commands connection is ready, 0 during an outage.",
      registers,
      collect() {
        // The connection's state, not a round trip: a scrape never waits on Redis.
        this.set(redisUp === undefined || redisUp() ? 1 : 0);
      },
    });
  }

  taskStarted(pattern: string, waitMs: number): void {
    this.queueWait.observe({ pattern }, Math.max(0, waitMs) / 1000);
  }

  taskFinished(pattern: string, status: TaskOutcome, durationMs: number): void {
    this.tasksFinished.inc({ pattern, status });
    this.taskDuration.observe({ pattern }, Math.max(0, durationMs) / 1000);
  }

  /** The hooks the scheduled models call (see scheduledModelFactory). */
  modelObserver(): ModelObserver {
    return {
      leaseGranted: (host, waitMs) => this.leaseWait.observe({ host }, waitMs / 1000),
      leaseReleased: (host, heldMs) => this.hostBusy.inc({ host }, heldMs / 1000),
      modelCall: ({ role, host, outcome, durationMs, usage, errorCode }) => {
        this.modelCallDuration.observe({ role, host, outcome }, durationMs / 1000);
        if (usage !== undefined) {
          this.modelTokens.inc({ role, host, type: 'prompt' }, usage.promptTokens);
          this.modelTokens.inc({ role, host, type: 'completion' }, usage.completionTokens);
        }
        if (outcome === 'error') this.modelErrors.inc({ role, host, code: errorCode ?? 'INTERNAL' });
      },
    };
  }
}
