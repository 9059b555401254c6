import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RequestHandler } from 'express';
import { ServiceUnavailableError, toErrorBody } from '@mageagent/core';
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

export interface MetricsListener {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/**
 * The optional METRICS_PORT listener: `/metrics` and `/queue/stats` without credentials, for
 * scrapers and autoscalers inside the cluster (which hold no API key). It serves nothing else, and
 * listens on loopback unless METRICS_HOST says otherwise (in Kubernetes a NetworkPolicy admits
 * only the scrapers). A bare node:http server: no express, no routes to forget to guard.
 */
export async function startMetricsListener(options: {
  port: number;
  host: string;
  metrics: ApiMetrics;
  queueStats: QueueStatsCache;
}): Promise<MetricsListener> {
  const { metrics, queueStats } = options;
  const send = (res: ServerResponse, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', ...headers });
    res.end(body);
  };
  const json = 'application/json; charset=utf-8';
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, json, JSON.stringify({ error: { code: 'VALIDATION_FAILED', message: 'only GET and HEAD are served here' } }), {
        allow: 'GET, HEAD',
      });
    }
    if (path === '/metrics') return send(res, 200, metrics.registry.contentType, await metrics.registry.metrics());
    if (path === '/queue/stats') {
      try {
        return send(res, 200, json, JSON.stringify(await queueStatsOrUnavailable(queueStats)));
      } catch (error) {
        const unavailable = error as ServiceUnavailableError;
        return send(res, 503, json, JSON.stringify({ error: toErrorBody(unavailable) }), { 'retry-after': String(unavailable.retryAfterSeconds) });
      }
    }
    return send(res, 404, json, JSON.stringify({ error: { code: 'NOT_FOUND', message: 'this port serves /metrics and /queue/stats only' } }));
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent) res.end();
      else send(res, 500, json, JSON.stringify({ error: { code: 'INTERNAL', message: 'could not collect metrics' } }));
      void error;
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
