import type { Cluster, Redis } from 'ioredis';
import { ValidationError, type Logger, type QuotaLimits } from '@mageagent/core';
import { DEFAULT_MODELS_CONFIG_PATH, HostStatsReader, loadModelsConfig } from '@mageagent/models';
import { loadPatternRegistry, type PatternRegistry } from '@mageagent/patterns';
import { CancelChannel, createRedis, describeTopology, redisTopologyOf, TaskEventBus, TaskIntake, TaskQueue, TaskStore } from '@mageagent/tasks';
import { precheckWebhookTarget, WEBHOOK_QUEUE_NAME } from '@mageagent/webhooks';
import { Queue } from 'bullmq';
import { Authenticator, type KeyDirectory } from './auth/authenticator';
import type { ApiEnv } from './env';
import { IdempotencyKeys } from './idempotency';
import { ApiMetrics } from './metrics/api-metrics';
import { QueueStatsCache } from './metrics/queue-stats';
import { RATE_LIMIT_COMMAND, RequestRateLimits } from './quotas/request-rate';
import { openStreams } from './sse';
import { TaskService } from './task-service';

/**
 * What the HTTP and socket handlers need; built once per process by createApiServices. Tasks are
 * reached only through `tasks` (the task service, which takes the caller's principal): handlers
 * have no store to read around it.
 */
export interface ApiServices {
  tasks: TaskService;
  auth: Authenticator;
  rateLimits: RequestRateLimits;
  patterns: PatternRegistry;
  defaultPattern: string;
  /** Live state of the GPU hosts of the model config, for GET /hosts. */
  hosts: HostStatsReader;
  /** The commands connection, for readiness probes. */
  redis: Redis | Cluster;
  logger: Logger;
  config: {
    bodyLimitBytes: number;
    /** Longest a client may take to send a whole request (REQUEST_TIMEOUT_MS). */
    requestTimeoutMs: number;
    ssePingMs: number;
    socketMaxSubscriptions: number;
    chatKeepAliveMs: number;
    /** Browser origins allowed for CORS and Socket.io handshakes; empty: none. */
    corsOrigins: string[];
    hstsMaxAgeSeconds: number;
    accessLog: boolean;
  };
  /** Set once the api is shutting down: requests still arriving on open connections are turned away. */
  lifecycle: { draining: boolean };
  /** The process's Prometheus registry and the task queue's cached job counts. */
  metrics: ApiMetrics;
  queueStats: QueueStatsCache;
  /** The BullMQ queues the dashboard shows (tasks, webhooks), read-only. */
  dashboardQueues: Queue[];
}

/** What createApiServices built: the services handlers get, and what only the process (and tests) hold. */
export interface ApiResources {
  services: ApiServices;
  queue: TaskQueue;
  subscriber: Redis | Cluster;
  store: TaskStore;
  bus: TaskEventBus;
  intake: TaskIntake;
}

/**
 * What a webhook target must pass when its task is created: a URL whose literal address is allowed
 * (the workers check the resolved addresses again before every delivery), for a tenant whose
 * deliveries can be signed.
 */
function webhookCheck(env: ApiEnv, keys: KeyDirectory | undefined): (url: string, tenant: string) => void {
  return (url, tenant) => {
    const precheck = precheckWebhookTarget(url, { allowPrivate: env.WEBHOOK_ALLOW_PRIVATE });
    if (!precheck.allowed) throw new ValidationError('webhook target refused', [{ path: 'webhook.url', message: precheck.reason }]);
    if (env.WEBHOOK_SECRET === undefined && keys?.webhookSecretOf?.(tenant) === undefined) {
      throw new ValidationError('webhooks are not enabled on this server (no WEBHOOK_SECRET and no secret for your tenant)', [
        { path: 'webhook', message: 'not enabled' },
      ]);
    }
  };
}

/** The quotas of a key that sets none of its own, from the environment. */
export function defaultLimits(env: ApiEnv): QuotaLimits {
  return {
    requestsPerMinute: env.QUOTA_REQUESTS_PER_MINUTE,
    maxActiveTasks: env.QUOTA_MAX_ACTIVE_TASKS,
    maxPromptBytes: env.QUOTA_MAX_PROMPT_BYTES,
  };
}

/**
 * The api's services over two Redis connections, whatever the number of clients: commands
 * (auto-pipelined, shared with BullMQ's queue so new tasks' records always precede their jobs,
 * failing fast while Redis is unreachable) and the one subscriber. `keys` undefined: open mode.
 */
export function createApiServices(env: ApiEnv, logger: Logger, keys?: KeyDirectory): ApiResources {
  // One node, Sentinel or Cluster: decided (and checked) once, and every connection follows it.
  const topology = redisTopologyOf(env);
  logger.info('redis', { redis: describeTopology(topology) });
  const redis = createRedis(topology, 'requests', {
    connectionName: 'mageagent-api',
    logger,
    commandTimeoutMs: env.REDIS_COMMAND_TIMEOUT_MS,
    unpipelined: [RATE_LIMIT_COMMAND],
  });
  const subscriber = createRedis(topology, 'subscriber', { connectionName: 'mageagent-api-subscriber', logger });
  const rateLimits = new RequestRateLimits(redis, env.REDIS_PREFIX);
  const store = new TaskStore(redis, env.REDIS_PREFIX, {
    retentionSeconds: env.TASK_RETENTION_SECONDS,
    maxQueuedTasks: env.MAX_QUEUED_TASKS,
    // New tasks' requests are counted in the script that writes them: one Redis call for both.
    requestCounter: rateLimits.counter,
  });
  const queue = new TaskQueue(redis, {
    prefix: env.REDIS_PREFIX,
    attempts: env.TASK_ATTEMPTS,
    retention: {
      completed: { count: env.JOB_RETENTION_COMPLETED_COUNT, ageSeconds: env.JOB_RETENTION_COMPLETED_AGE_SECONDS },
      failed: { count: env.JOB_RETENTION_FAILED_COUNT, ageSeconds: env.JOB_RETENTION_FAILED_AGE_SECONDS },
    },
  });
  // BullMQ reports connection errors as 'error' events; the connection's own watcher logs outages.
  queue.queue.on('error', () => undefined);
  // The workers' webhook deliveries, for the dashboard only (the api adds none): same connection, no extra socket.
  const webhookQueue = new Queue(WEBHOOK_QUEUE_NAME, { connection: redis, prefix: env.REDIS_PREFIX });
  webhookQueue.on('error', () => undefined);
  // Below the api's Redis command timeout plus a margin: a scrape during an outage answers within it.
  const queueStats = new QueueStatsCache(queue.queue, { ttlMs: env.QUEUE_STATS_CACHE_MS, timeoutMs: 1_000 });
  const metrics = new ApiMetrics({ queueStats, openStreams: () => openStreams.size });
  const patterns = loadPatternRegistry({ patternsConfig: env.PATTERNS_CONFIG, defaultPattern: env.DEFAULT_PATTERN });
  const bus = new TaskEventBus(subscriber, store.keys, logger);
  const intake = new TaskIntake(store, queue);
  const tasks = new TaskService({
    store,
    queue,
    intake,
    bus,
    cancels: new CancelChannel(store.keys),
    redis,
    idempotency: new IdempotencyKeys(redis, env.REDIS_PREFIX),
    patterns,
    defaultPattern: env.DEFAULT_PATTERN,
    checkWebhook: webhookCheck(env, keys),
    onCreated: (task) => metrics.taskCreated(task.pattern),
    onCancelledWhileQueued: (task) => metrics.taskCancelledWhileQueued(task.pattern),
  });
  const services: ApiServices = {
    tasks,
    auth: new Authenticator(keys, defaultLimits(env)),
    rateLimits,
    patterns,
    defaultPattern: env.DEFAULT_PATTERN,
    hosts: new HostStatsReader(redis, env.REDIS_PREFIX, loadModelsConfig(env.MODELS_CONFIG ?? DEFAULT_MODELS_CONFIG_PATH)),
    redis,
    logger,
    config: {
      bodyLimitBytes: env.BODY_LIMIT_BYTES,
      requestTimeoutMs: env.REQUEST_TIMEOUT_MS,
      ssePingMs: env.SSE_PING_MS,
      socketMaxSubscriptions: env.SOCKET_MAX_SUBSCRIPTIONS,
      chatKeepAliveMs: env.OPENAI_KEEPALIVE_MS,
      corsOrigins: env.CORS_ORIGINS,
      hstsMaxAgeSeconds: env.HSTS_MAX_AGE_SECONDS,
      accessLog: env.ACCESS_LOG,
    },
    lifecycle: { draining: false },
    metrics,
    queueStats,
    dashboardQueues: [queue.queue, webhookQueue],
  };
  return { services, queue, subscriber, store, bus, intake };
}
