import type { RequestHandler } from 'express';
import { type ProbeServer, sendNoStore, ServiceUnavailableError, startProbeServer, toErrorBody } from '@mageagent/core';
import type { ApiMetrics } from './api-metrics';
import type { QueueStats, QueueStatsCache } from './queue-stats';

/** Seconds a client should wait before asking for queue stats again after a failed count. */
const RETRY_AFTER_SECONDS = 2;

async function queueStatsOrUnavailable(queueStats: QueueStatsCache): Promise<QueueStats> {
  try {
    return await queueStats.get();
  } catch {
    throw new ServiceUnavailableError('queue counts are unavailable (Redis unreachable or slow); retry later', RETRY_AFTER_SECONDS);
  }
}

/** `GET /metrics` on the api port (behind the admin scope). */
export function metricsRoute(metrics: ApiMetrics): RequestHandler {
  return async (_req, res) => {
    const body = await metrics.registry.metrics();
    res.setHeader('content-type', metrics.registry.contentType);
    res.setHeader('cache-control', 'no-store');
    res.send(body);
  };
}

/** `GET /queue/stats` on the api port (behind the admin scope): 503 UNAVAILABLE when Redis cannot count. */
export function queueStatsRoute(queueStats: QueueStatsCache): RequestHandler {
  return async (_req, res) => {
    res.setHeader('cache-control', 'no-store');
    res.json(await queueStatsOrUnavailable(queueStats));
  };
}

/** The METRICS_PORT listener (see startMetricsListener). */
export type MetricsListener = ProbeServer;

/**
 * The optional METRICS_PORT listener: `/metrics` and `/queue/stats` without credentials, for
 * scrapers and autoscalers inside the cluster (which hold no API key). It serves nothing else, and
 * listens on loopback unless METRICS_HOST says otherwise (in Kubernetes a NetworkPolicy admits
 * only the scrapers).
 */
export function startMetricsListener(options: { port: number; host: string; metrics: ApiMetrics; queueStats: QueueStatsCache }): Promise<MetricsListener> {
  const { metrics, queueStats } = options;
  const json = 'application/json; charset=utf-8';
  return startProbeServer({
    port: options.port,
    host: options.host,
    routes: {
      '/metrics': async (res) => sendNoStore(res, 200, metrics.registry.contentType, await metrics.registry.metrics()),
      '/queue/stats': async (res) => {
        try {
          sendNoStore(res, 200, json, JSON.stringify(await queueStatsOrUnavailable(queueStats)));
        } catch (error) {
          const unavailable = error as ServiceUnavailableError;
          sendNoStore(res, 503, json, JSON.stringify({ error: toErrorBody(unavailable) }), { 'retry-after': String(unavailable.retryAfterSeconds) });
        }
      },
    },
  });
}
