import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Registry } from 'prom-client';

export interface HealthServerOptions {
  port: number;
  host: string;
  registry: Registry;
  /** Whether Redis answers (readiness). */
  redisReady: () => Promise<boolean>;
  /** Whether the BullMQ worker is taking jobs. */
  workerRunning: () => boolean;
  /** True once SIGTERM started the drain: not ready, so no new traffic is expected of it. */
  draining: () => boolean;
}

export interface HealthServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/**
 * The worker's probe and scrape port: a bare node:http server (a worker has no other HTTP, and
 * express would only add weight). No authentication: it says nothing about tasks, and it listens
 * on loopback unless HEALTH_HOST says otherwise (in a cluster, a NetworkPolicy guards it).
 *
 * - `/healthz`: the process is alive and its event loop turns (answering at all proves it; the
 *   body reports the recent event-loop delay for humans).
 * - `/readyz`: 200 when Redis answers and the BullMQ worker runs; 503 while draining or otherwise.
 * - `/metrics`: the worker's Prometheus registry.
 */
export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  const json = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return json(res, 405, { error: { code: 'VALIDATION_FAILED', message: 'only GET and HEAD are served here' } });
    switch (path) {
      case '/healthz': {
        const eventLoopDelayMs = Math.round(loopDelay.max / 1e6);
        loopDelay.reset();
        return json(res, 200, { status: 'ok', eventLoopDelayMs });
      }
      case '/readyz': {
        const draining = options.draining();
        const worker = options.workerRunning();
        // Skipped while draining: a stopping worker is not ready whatever Redis says.
        const redis = draining ? false : await options.redisReady();
        const ready = !draining && worker && redis;
        return json(res, ready ? 200 : 503, { status: ready ? 'ready' : draining ? 'draining' : 'unavailable', checks: { redis, worker, draining } });
      }
      case '/metrics': {
        const body = await options.registry.metrics();
        res.writeHead(200, { 'content-type': options.registry.contentType });
        res.end(body);
        return;
      }
      default:
        return json(res, 404, { error: { code: 'NOT_FOUND', message: 'no such path; try /healthz, /readyz or /metrics' } });
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) json(res, 500, { error: { code: 'INTERNAL', message: String(error) } });
      else res.end();
    });
  });
  // Probes are short; a client that sends nothing must not hold a socket for Node's 5-minute default.
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
        loopDelay.disable();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
