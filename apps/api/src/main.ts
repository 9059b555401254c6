import type { AddressInfo } from 'node:net';
import { createLogger, logOptionsOf, onShutdown } from '@mageagent/core';
import { redisReady } from '@mageagent/tasks';
import { loadApiEnv } from './env';
import { endChatCalls } from './openai/router';
import { createApiServer } from './server';
import { createApiServices } from './services';
import { openStreams } from './sse';

/** How long start-up waits for Redis before serving anyway (answering 503 until Redis is there). */
const REDIS_STARTUP_WAIT_MS = 5_000;

async function main(): Promise<void> {
  const env = loadApiEnv();
  const logger = createLogger({ service: 'api', ...logOptionsOf(env) });

  const { services, subscriber } = createApiServices(env, logger);
  const { redis } = services;

  if (!(await redisReady(redis, REDIS_STARTUP_WAIT_MS))) {
    logger.warn('redis is not reachable yet; serving anyway: task routes answer 503 until it is', { waitedMs: REDIS_STARTUP_WAIT_MS });
  }

  const { server, io } = createApiServer(services);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(env.PORT, env.HOST, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  logger.info('api listening', { port });
  process.send?.({ type: 'ready', service: 'api', port });

  let closed: Promise<void> = Promise.resolve();
  onShutdown(
    logger,
    [
      {
        name: 'stop accepting connections',
        run: async () => {
          services.lifecycle.draining = true;
          closed = new Promise<void>((resolve) => server.close(() => resolve()));
          server.closeIdleConnections();
        },
      },
      {
        name: 'tell streams to reconnect',
        run: async () => {
          for (const stream of [...openStreams]) stream.endWithReconnect('the server is shutting down');
          endChatCalls();
          // Sockets hear why, then lose their transport (not a server-side disconnect, which
          // would tell socket.io clients not to reconnect): they reconnect to another api.
          io.emit('server-shutdown', { reason: 'the server is shutting down', reconnect: true });
          io.engine.close();
        },
      },
      {
        name: 'let requests in flight finish',
        run: async () => {
          // Keep-alive connections turn idle as their last request finishes; close them as they do.
          const sweep = setInterval(() => server.closeIdleConnections(), 100);
          await closed;
          clearInterval(sweep);
        },
      },
      { name: 'close queue', run: () => services.queue.close() },
      { name: 'close redis', run: async () => void (await Promise.allSettled([redis.quit(), subscriber.quit()])) },
    ],
    { deadlineMs: env.SHUTDOWN_GRACE_MS },
  );
}

main().catch((error: unknown) => {
  console.error(`api: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
