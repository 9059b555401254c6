import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { Server as SocketServer } from 'socket.io';
import { createLogger, onShutdown } from '@mageagent/core';
import { DEFAULT_MODELS_CONFIG_PATH, HostStatsReader, loadModelsConfig } from '@mageagent/models';
import { loadPatternRegistry } from '@mageagent/patterns';
import { CancelChannel, createRedis, redisReady, TaskEventBus, TaskIntake, TaskQueue, TaskStore } from '@mageagent/tasks';
import { createApp } from './app';
import { loadApiEnv } from './env';
import { endChatCalls } from './openai/router';
import type { ApiServices } from './services';
import { attachSocketHandlers } from './socket';
import { openStreams } from './sse';

/** How long start-up waits for Redis before serving anyway (answering 503 until Redis is there). */
const REDIS_STARTUP_WAIT_MS = 5_000;

async function main(): Promise<void> {
  const env = loadApiEnv();
  const logger = createLogger({ service: 'api', level: env.LOG_LEVEL, redact: env.LOG_REDACT });

  // Two connections per process, whatever the number of clients: commands (auto-pipelined, shared
  // with BullMQ's queue so new tasks' records always precede their jobs, failing fast while Redis
  // is unreachable) and the one subscriber.
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
    },
    lifecycle: { draining: false },
  };

  if (!(await redisReady(redis, REDIS_STARTUP_WAIT_MS))) {
    logger.warn('redis is not reachable yet; serving anyway: task routes answer 503 until it is', { waitedMs: REDIS_STARTUP_WAIT_MS });
  }

  const server = createServer(createApp(services));
  answerMalformedRequests(server);
  // Long-lived SSE responses must not be cut by Node's request timeout.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;
  const io = new SocketServer(server, { cors: { origin: true }, serveClient: false });
  attachSocketHandlers(io, services);

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

/**
 * Requests Node's HTTP parser refuses before express sees them (headers or URL too large, bad
 * framing) get the documented error shape instead of Node's bare status line.
 */
function answerMalformedRequests(server: Server): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable || error.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
    const [status, reason] = tooLarge ? [431, 'Request Header Fields Too Large'] : [400, 'Bad Request'];
    const body = JSON.stringify({
      error: tooLarge
        ? { code: 'VALIDATION_FAILED', message: 'request headers (or URL) are larger than the server accepts' }
        : { code: 'VALIDATION_FAILED', message: 'malformed HTTP request' },
    });
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
}

main().catch((error: unknown) => {
  console.error(`api: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
