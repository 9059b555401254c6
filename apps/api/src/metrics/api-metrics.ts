import type { RequestHandler } from 'express';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { QUEUE_STATES, type QueueStatsCache } from './queue-stats';
import { routeLabel } from './route-label';

/** Most requests take milliseconds; long polls (`/v1` waiting for an answer) and SSE streams reach into minutes. */
const HTTP_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export interface ApiMetricsOptions {
  queueStats: QueueStatsCache;
  /** Open SSE task streams. */
  openStreams: () => number;
  /** Connected Socket.io sockets (set once the socket server exists). */
  openSockets?: () => number;
  defaultMetrics?: boolean;
}

/**
 * The api's one Prometheus registry: requests by route, tasks created, open streams and sockets,
 * and the task queue's job counts (read on scrape through a short cache), plus Node's default
 * process metrics under their standard names (process_*, nodejs_*), which the common Node
 * dashboards expect; the Prometheus job/instance labels tell processes apart.
 */
export class ApiMetrics {
  readonly registry = new Registry();
  openSockets: () => number;
  private readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
  private readonly tasksCreated: Counter<'pattern'>;
  private readonly tasksFinished: Counter<'pattern' | 'status'>;

  constructor(options: ApiMetricsOptions) {
    const registers = [this.registry];
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.openSockets = options.openSockets ?? (() => 0);
    this.httpDuration = new Histogram({
      name: 'mageagent_http_request_duration_seconds',
      help: 'HTTP requests by method, route pattern (never the raw URL; "unmatched" when no route matched) and status; SSE streams count when they end.',
      labelNames: ['method', 'route', 'status'],
      buckets: HTTP_SECONDS_BUCKETS,
      registers,
    });
    this.tasksCreated = new Counter({
      name: 'mageagent_tasks_created_total',
      help: 'Tasks accepted by this api (POST /tasks and the OpenAI facade; idempotent replays excluded), by pattern.',
      labelNames: ['pattern'],
      registers,
    });
    // The same series the workers export: the api counts the only end a worker never sees (a task
    // cancelled while queued), so sum(mageagent_tasks_finished_total) over every process is every end.
    this.tasksFinished = new Counter({
      name: 'mageagent_tasks_finished_total',
      help: 'Tasks that ended in this api (cancelled while still queued), by pattern and final status; workers count every other end.',
      labelNames: ['pattern', 'status'],
      registers,
    });
    const metrics = this;
    new Gauge({
      name: 'mageagent_sse_streams_open',
      help: 'SSE task streams open on this api.',
      registers,
      collect() {
        this.set(options.openStreams());
      },
    });
    new Gauge({
      name: 'mageagent_sockets_open',
      help: 'Socket.io sockets connected to this api.',
      registers,
      collect() {
        this.set(metrics.openSockets());
      },
    });
    // Queue gauges: counted on scrape (cached), and left out when the count fails, so a Redis
    // outage shows as missing queue data plus mageagent_redis_up 0, never as an empty queue.
    const { queueStats } = options;
    new Gauge({
      name: 'mageagent_queue_jobs',
      help: 'Jobs of the task queue by state (waiting, prioritized, active, delayed, completed, failed); completed and failed are the retained ones.',
      labelNames: ['state'],
      registers,
      async collect() {
        this.reset();
        const stats = await queueStats.get().catch(() => undefined);
        if (stats !== undefined) for (const state of QUEUE_STATES) this.set({ state }, stats[state]);
      },
    });
    new Gauge({
      name: 'mageagent_queue_backlog',
      help: 'Task jobs waiting or running (waiting + prioritized + active): what an autoscaler scales workers on.',
      registers,
      async collect() {
        const stats = await queueStats.get().catch(() => undefined);
        if (stats === undefined) this.remove();
        else this.set(stats.backlog);
      },
    });
    new Gauge({
      name: 'mageagent_redis_up',
      help: "1 when the api's last queue count reached Redis, 0 when it failed (the queue gauges are then left out).",
      registers,
      async collect() {
        // The same (shared, cached) count as the queue gauges: a scrape asks Redis at most once.
        await queueStats.get().catch(() => undefined);
        this.set(queueStats.redisUp ? 1 : 0);
      },
    });
  }

  /** Counts a task accepted. */
  taskCreated(pattern: string): void {
    this.tasksCreated.inc({ pattern });
  }

  /** Counts a task that ended in the api: cancelled while still queued (workers count every other end). */
  taskCancelledWhileQueued(pattern: string): void {
    this.tasksFinished.inc({ pattern, status: 'cancelled' });
  }

  /**
   * Times every request from its arrival to the end of its response (or the client leaving), and
   * labels it by route pattern when it ends. Installed first, so refusals (401, 413, 503) count too.
   */
  httpMiddleware(mounts: readonly string[] = []): RequestHandler {
    return (req, res, next) => {
      const end = this.httpDuration.startTimer();
      res.once('close', () => end({ method: req.method, route: routeLabel(req, mounts), status: String(res.statusCode) }));
      next();
    };
  }
}
