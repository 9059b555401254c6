import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger } from '@mageagent/core';
import { redisReady } from '@mageagent/tasks';
import { loadApiEnv } from './env';
import { createApiServer } from './server';
import { createApiServices, type ApiServices } from './services';

/** Test support: the api in this process, on a free port, over real Redis. */
export interface InProcessApi {
  url: string;
  services: ApiServices;
  close(): Promise<void>;
}

/**
 * Starts the api as main.ts does, with `env` over the defaults (Redis at `redisUrl`, keys under
 * `prefix`, SSE pings every 200 ms) and `logger` (errors only, to the console, unless given).
 */
export async function startApi(redisUrl: string, prefix: string, options: { env?: NodeJS.ProcessEnv; logger?: Logger } = {}): Promise<InProcessApi> {
  const env = loadApiEnv({ REDIS_URL: redisUrl, REDIS_PREFIX: prefix, LOG_LEVEL: 'error', SSE_PING_MS: '200', ...options.env });
  const { services, subscriber } = createApiServices(env, options.logger ?? createLogger({ service: 'api-test', level: 'error' }));
  await redisReady(services.redis, 5000);
  const { server, io } = createApiServer(services);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    services,
    async close() {
      io.close();
      server.closeAllConnections();
      await new Promise((resolve) => (server as Server).close(resolve));
      await services.queue.close();
      services.redis.disconnect();
      subscriber.disconnect();
    },
  };
}
