import type { ServerResponse } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import { type ProbeServer, sendNoStore, startProbeServer } from '@mageagent/core';

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

export type HealthServer = ProbeServer;

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
export function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const loopDelay = monitorEventLoopDelay({ resolution: 20 });
  loopDelay.enable();
  const json = (res: ServerResponse, status: number, body: unknown): void => sendNoStore(res, status, 'application/json; charset=utf-8', JSON.stringify(body));
  return startProbeServer({
    port: options.port,
    host: options.host,
    onClose: () => loopDelay.disable(),
    routes: {
      '/healthz': (res) => {
        const eventLoopDelayMs = Math.round(loopDelay.max / 1e6);
        loopDelay.reset();
        json(res, 200, { status: 'ok', eventLoopDelayMs });
      },
      '/readyz': async (res) => {
        const draining = options.draining();
        const worker = options.workerRunning();
        // Skipped while draining: a stopping worker is not ready whatever Redis says.
        const redis = draining ? false : await options.redisReady();
        const ready = !draining && worker && redis;
        json(res, ready ? 200 : 503, { status: ready ? 'ready' : draining ? 'draining' : 'unavailable', checks: { redis, worker, draining } });
      },
      '/metrics': async (res) => sendNoStore(res, 200, options.registry.contentType, await options.registry.metrics()),
    },
  });
}
