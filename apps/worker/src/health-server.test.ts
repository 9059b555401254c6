import { WorkerMetrics } from './metrics';
import { startHealthServer } from './health-server';

test('/readyz says why it is not ready (Redis, worker, draining); /healthz and /metrics answer; close() stops it', async () => {
  const state = { redis: true, worker: true, draining: false };
  const metrics = new WorkerMetrics({ redisUp: () => state.redis, defaultMetrics: false });
  const server = await startHealthServer({
    port: 0,
    host: '127.0.0.1',
    registry: metrics.registry,
    redisReady: async () => state.redis,
    workerRunning: () => state.worker,
    draining: () => state.draining,
  });
  const url = (path: string) => `http://127.0.0.1:${server.port}${path}`;
  const readyz = async () => {
    const response = await fetch(url('/readyz'));
    return [response.status, ((await response.json()) as { status: string }).status];
  };
  try {
    expect(await readyz()).toEqual([200, 'ready']);
    state.redis = false;
    expect(await readyz()).toEqual([503, 'unavailable']);
    expect(await (await fetch(url('/metrics'))).text()).toContain('mageagent_redis_up 0');
    state.redis = true;
    state.worker = false;
    expect(await readyz()).toEqual([503, 'unavailable']);
    state.worker = true;
    state.draining = true;
    expect(await readyz()).toEqual([503, 'draining']);
    expect((await fetch(url('/healthz'))).status).toBe(200);
    expect((await fetch(url('/metrics'), { method: 'POST' })).status).toBe(405);
    expect((await fetch(url('/tasks'))).status).toBe(404);
  } finally {
    await server.close();
  }
  await expect(fetch(url('/healthz'))).rejects.toThrow();
});
