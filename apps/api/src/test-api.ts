import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createLogger, type Principal, type QuotaLimits } from '@mageagent/core';
import { deleteKeysWithPrefix, redisReady } from '@mageagent/tasks';
import type { KeyDirectory } from './auth/authenticator';
import { loadApiEnv } from './env';
import { createApiServer } from './server';
import { createApiServices, type ApiResources } from './services';
import type { Caller } from './task-service';

export const TEST_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Test support: the api in this process (real Redis, real HTTP and Socket.io), on its own key prefix. */
export interface InProcessApi extends ApiResources {
  url: string;
  prefix: string;
  /** Stops it and deletes every key under its prefix. */
  close(): Promise<void>;
}

export interface InProcessApiOptions {
  redisUrl?: string;
  /** API keys: key → principal and (partial) limits. Unset: open mode. */
  keys?: Record<string, { principal: Principal; limits?: Partial<QuotaLimits> }>;
  /** Extra environment (SSE_PING_MS, MAX_QUEUED_TASKS, QUOTA_*, …). */
  env?: Record<string, string>;
}

/** A key directory over a fixed map, standing in for the keys file's. */
export function keyDirectoryOf(keys: NonNullable<InProcessApiOptions['keys']>): KeyDirectory {
  return {
    identify(presented: string, defaults: QuotaLimits): Caller | undefined {
      const entry = keys[presented];
      return entry === undefined ? undefined : { principal: entry.principal, limits: { ...defaults, ...entry.limits } };
    },
  };
}

export async function startInProcessApi(options: InProcessApiOptions = {}): Promise<InProcessApi> {
  const prefix = `test-api-${randomUUID().slice(0, 8)}`;
  const redisUrl = options.redisUrl ?? TEST_REDIS_URL;
  const env = loadApiEnv({ REDIS_URL: redisUrl, REDIS_PREFIX: prefix, LOG_LEVEL: 'error', SSE_PING_MS: '200', ...options.env });
  const resources = createApiServices(env, createLogger({ service: 'api-test', level: 'error' }), options.keys && keyDirectoryOf(options.keys));
  const { services, queue, subscriber } = resources;
  await redisReady(services.redis, 5000);
  const { server, io } = createApiServer(services);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    ...resources,
    prefix,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      io.close();
      server.closeAllConnections();
      await new Promise((resolve) => (server as Server).close(resolve));
      await queue.close();
      services.redis.disconnect();
      subscriber.disconnect();
      const admin = new Redis(TEST_REDIS_URL);
      await deleteKeysWithPrefix(admin, prefix);
      admin.disconnect();
    },
  };
}
