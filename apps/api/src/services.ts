import type { Redis } from 'ioredis';
import type { Logger } from '@mageagent/core';
import { DEFAULT_MODELS_CONFIG_PATH, HostStatsReader, loadModelsConfig } from '@mageagent/models';
import { loadPatternRegistry, type PatternRegistry } from '@mageagent/patterns';
import { CancelChannel, createRedis, TaskEventBus, TaskIntake, TaskQueue, TaskStore } from '@mageagent/tasks';
import type { ApiEnv } from './env';

/** What the HTTP and socket handlers need; built once per process by createApiServices. */
export interface ApiServices {
  redis: Redis;
  store: TaskStore;
  queue: TaskQueue;
  /** Writes new tasks (record and job), batched per event-loop turn. */
  intake: TaskIntake;
  bus: TaskEventBus;
  cancels: CancelChannel;
  patterns: PatternRegistry;
  /** Live state of the GPU hosts of the model config, for GET /hosts. */
  hosts: HostStatsReader;
  defaultPattern: string;
  logger: Logger;
  config: {
    bodyLimitBytes: number;
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
}

/**
 * The api's services over two Redis connections, whatever the number of clients: commands
 * (auto-pipelined, shared with BullMQ's queue so new tasks' records always precede their jobs,
 * failing fast while Redis is unreachable) and the one subscriber.
 */
export function createApiServices(env: ApiEnv, logger: Logger): { services: ApiServices; subscriber: Redis } {
  const redis = createRedis(env.REDIS_URL, 'requests', {
    connectionName: 'mageagent-api',
    logger,
    commandTimeoutMs: env.REDIS_COMMAND_TIMEOUT_MS,
  });
  const subscriber = createRedis(env.REDIS_URL, 'subscriber', { connectionName: 'mageagent-api-subscriber', logger });
  const store = new TaskStore(redis, env.REDIS_PREFIX, { retentionSeconds: env.TASK_RETENTION_SECONDS });
  const queue = new TaskQueue(redis, { prefix: env.REDIS_PREFIX, attempts: env.TASK_ATTEMPTS });
  // BullMQ reports connection errors as 'error' events; the connection's own watcher logs outages.
  queue.queue.on('error', () => undefined);
  const services: ApiServices = {
    redis,
    store,
    queue,
    intake: new TaskIntake(store, queue),
    bus: new TaskEventBus(subscriber, store.keys, logger),
    cancels: new CancelChannel(store.keys),
    patterns: loadPatternRegistry({ patternsConfig: env.PATTERNS_CONFIG, defaultPattern: env.DEFAULT_PATTERN }),
    defaultPattern: env.DEFAULT_PATTERN,
    hosts: new HostStatsReader(redis, env.REDIS_PREFIX, loadModelsConfig(env.MODELS_CONFIG ?? DEFAULT_MODELS_CONFIG_PATH)),
    logger,
    config: {
      bodyLimitBytes: env.BODY_LIMIT_BYTES,
      ssePingMs: env.SSE_PING_MS,
      socketMaxSubscriptions: env.SOCKET_MAX_SUBSCRIPTIONS,
      chatKeepAliveMs: env.OPENAI_KEEPALIVE_MS,
      corsOrigins: env.CORS_ORIGINS,
      hstsMaxAgeSeconds: env.HSTS_MAX_AGE_SECONDS,
      accessLog: env.ACCESS_LOG,
    },
    lifecycle: { draining: false },
  };
  return { services, subscriber };
}
