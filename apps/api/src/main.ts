import type { AddressInfo } from 'node:net';
import { ConfigError, createLogger, logOptionsOf, onShutdown, startTracing, type Logger } from '@mageagent/core';
import { redisReady } from '@mageagent/tasks';
import { ApiKeyRegistry } from './auth/api-keys';
import { keyDirectoryOf } from './auth/key-directory';
import { loadApiEnv, type ApiEnv } from './env';
import { startMetricsListener, type MetricsListener } from './metrics/endpoints';
import { endChatCalls } from './openai/router';
import { createApiServer } from './server';
import { createApiServices } from './services';
import { openStreams } from './sse';

/** How long start-up waits for Redis before serving anyway (answering 503 until Redis is there). */
const REDIS_STARTUP_WAIT_MS = 5_000;

async function main(): Promise<void> {
  const env = loadApiEnv();
  const logger = createLogger({ service: 'api', ...logOptionsOf(env) });
  // Before anything creates spans; loads the SDK only when OTEL_EXPORTER_OTLP_ENDPOINT is set.
  // Callers are not ours: a traceparent they send names the trace, but the sampler alone decides
  // whether it is recorded (an unauthenticated flood of sampled traceparents exports nothing more).
  const tracing = await startTracing('mageagent-api', logger, process.env, { untrustedRemoteParents: true });

  const registry = loadKeyRegistry(env, logger);
  const keys = registry && keyDirectoryOf(registry);
  const { services, queue, subscriber, intake } = createApiServices(env, logger, keys);
  const { redis } = services;

  if (!(await redisReady(redis, REDIS_STARTUP_WAIT_MS))) {
    logger.warn('redis is not reachable yet; serving anyway: task routes answer 503 until it is', { waitedMs: REDIS_STARTUP_WAIT_MS });
  } else {
    // BullMQ's scripts defined on the connection before the first request: a script defined while an
    // auto-pipeline is pending is missing from it (see RequestRateLimits). And new tasks' jobs are
    // then written with their records from the first batch on.
    let waited: NodeJS.Timeout | undefined;
    const wrote = await Promise.race([intake.jobsWithRecords(), new Promise<false>((resolve) => (waited = setTimeout(resolve, REDIS_STARTUP_WAIT_MS, false)))]);
    clearTimeout(waited);
    if (!wrote)
      logger.warn(
        'new tasks are written in two steps (records, then their BullMQ jobs): the queue was not ready in time, or this BullMQ version cannot take its jobs from the creation script',
      );
  }

  const { server, io } = createApiServer(services);
  // A revoked key (or one whose scopes or limits changed) is cut off at once, not at its next request.
  const stopWatchingKeys = registry?.watch();
  registry?.onChange(({ revoked, changed }) => {
    const keyIds = new Set([...revoked, ...changed]);
    if (keyIds.size === 0) return;
    for (const socket of io.of('/').sockets.values()) if (keyIds.has(socket.data.caller.principal.keyId)) socket.disconnect(true);
    for (const stream of [...openStreams]) if (keyIds.has(stream.keyId)) stream.endWithReconnect('the API key was revoked or changed');
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(env.PORT, env.HOST, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  logger.info('api listening', { host: env.HOST, port, mode: keys === undefined ? 'open' : 'keys' });
  let metricsListener: MetricsListener | undefined;
  if (env.METRICS_PORT !== undefined) {
    metricsListener = await startMetricsListener({
      port: env.METRICS_PORT,
      host: env.METRICS_HOST,
      metrics: services.metrics,
      queueStats: services.queueStats,
    });
    logger.info('metrics listening (no credentials: /metrics and /queue/stats only)', { host: env.METRICS_HOST, port: metricsListener.port });
  }
  process.send?.({ type: 'ready', service: 'api', port });

  let closed: Promise<void> = Promise.resolve();
  onShutdown(
    logger,
    [
      {
        name: 'stop accepting connections',
        run: async () => {
          stopWatchingKeys?.();
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
      // Scrapers may watch the drain; closed once requests are done, before the queue it counts.
      { name: 'close the metrics listener', run: async () => void (await metricsListener?.close()) },
      {
        name: 'close queue',
        run: async () =>
          void (await Promise.all([queue.close(), ...services.dashboardQueues.filter((shown) => shown !== queue.queue).map((shown) => shown.close())])),
      },
      { name: 'close redis', run: async () => void (await Promise.allSettled([redis.quit(), subscriber.quit()])) },
      // Last: the spans of the requests that finished during the drain go out too.
      { name: 'flush traces', run: () => tracing.shutdown() },
    ],
    { deadlineMs: env.SHUTDOWN_GRACE_MS },
  );
}

/**
 * The API keys of API_KEYS_FILE, or none (open mode). Open mode is refused on any interface but
 * loopback unless ALLOW_OPEN_MODE=true: without keys, anyone who reaches the port can drive the
 * GPU hosts and read every prompt and answer.
 */
function loadKeyRegistry(env: ApiEnv, logger: Logger): ApiKeyRegistry | undefined {
  if (env.API_KEYS_FILE === undefined) {
    if (!isLoopback(env.HOST) && !env.ALLOW_OPEN_MODE) {
      throw new ConfigError(
        `refusing to listen on ${env.HOST} in open mode (no API_KEYS_FILE): anyone who can reach it could use it. ` +
          'Configure API keys (npm run keys -- create --tenant <name>), listen on 127.0.0.1, or set ALLOW_OPEN_MODE=true',
      );
    }
    logger.warn('open mode: no API_KEYS_FILE, so every caller is the one tenant "default" with every scope', { host: env.HOST });
    return undefined;
  }
  // The registry logs what it loaded (and every reload).
  return ApiKeyRegistry.load(env.API_KEYS_FILE, logger);
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

main().catch((error: unknown) => {
  console.error(`api: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
