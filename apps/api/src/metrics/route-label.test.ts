import type { AddressInfo } from 'node:net';
import express, { type ErrorRequestHandler } from 'express';
import { ApiMetrics } from './api-metrics';
import { QueueStatsCache } from './queue-stats';
import { UNMATCHED_ROUTE } from './route-label';

/** A real express app and HTTP server with the metrics middleware, to read the labels it gives. */
async function serve() {
  const counter = { getJobCounts: async () => ({}) };
  const metrics = new ApiMetrics({ queueStats: new QueueStatsCache(counter, { ttlMs: 0, timeoutMs: 1000 }), openStreams: () => 0, defaultMetrics: false });
  const app = express();
  app.use(metrics.httpMiddleware(['/admin/queues']));
  app.get('/tasks/:id', (req, res) => void res.json({ id: req.params.id }));
  app.post('/tasks/:id/cancel', () => {
    throw Object.assign(new Error('refused'), { status: 409 });
  });
  const v1 = express.Router();
  v1.post('/chat/completions', (_req, res) => void res.status(201).json({}));
  app.use('/v1', v1);
  const board = express.Router();
  board.get('/api/queues', (_req, res) => void res.json({}));
  app.use('/admin/queues', board);
  app.use((_req, res) => void res.status(404).json({}));
  const onError: ErrorRequestHandler = (error, _req, res, _next) => void res.status((error as { status?: number }).status ?? 500).json({});
  app.use(onError);
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    metrics,
    base,
    close: () =>
      new Promise((resolve) => {
        server.close(resolve);
        server.closeAllConnections();
      }),
  };
}

async function countsByLabels(metrics: ApiMetrics): Promise<Map<string, number>> {
  const metric = await metrics.registry.getSingleMetric('mageagent_http_request_duration_seconds')!.get();
  const counts = new Map<string, number>();
  for (const value of metric.values) {
    if ((value as { metricName?: string }).metricName !== 'mageagent_http_request_duration_seconds_count') continue;
    counts.set(`${value.labels.method} ${value.labels.route} ${value.labels.status}`, value.value);
  }
  return counts;
}

test('requests are labelled by route pattern, mount and status, never by raw URL', async () => {
  const { metrics, base, close } = await serve();
  try {
    for (const id of ['a1', 'b2', 'c3']) await (await fetch(`${base}/tasks/${id}`)).text();
    await (await fetch(`${base}/tasks/x/cancel`, { method: 'POST' })).text();
    await (await fetch(`${base}/v1/chat/completions`, { method: 'POST' })).text();
    // Express matches whatever the case; a caller's spelling of a mount makes no series of its own.
    await (await fetch(`${base}/V1/chat/completions`, { method: 'POST' })).text();
    await (await fetch(`${base}/admin/queues/api/queues?activeQueue=tasks`)).text();
    await (await fetch(`${base}/ADMIN/Queues/api/queues`)).text();
    await (await fetch(`${base}/admin/queues/static/js/main.js`)).text();
    for (const junk of ['/nope', '/tasks', '/random/123/abc']) await (await fetch(`${base}${junk}`)).text();
    // 'close' fires after the client has the response; give the server a tick to record.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const counts = await countsByLabels(metrics);
    expect(Object.fromEntries(counts)).toEqual({
      'GET /tasks/:id 200': 3,
      'POST /tasks/:id/cancel 409': 1,
      'POST /v1/chat/completions 201': 2,
      'GET /admin/queues/* 200': 2,
      'GET /admin/queues/* 404': 1,
      [`GET ${UNMATCHED_ROUTE} 404`]: 3,
    });
  } finally {
    await close();
  }
});
