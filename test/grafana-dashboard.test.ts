/**
 * The Grafana dashboard queries only metrics the code registers (a renamed metric would leave a
 * panel silently empty), and every metric of the contract has a panel.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ApiMetrics } from '../apps/api/src/metrics/api-metrics';
import { QueueStatsCache } from '../apps/api/src/metrics/queue-stats';
import { WorkerMetrics } from '../apps/worker/src/metrics';

interface Panel {
  type: string;
  title: string;
  targets?: Array<{ expr: string }>;
}

const dashboard = JSON.parse(readFileSync(path.join(__dirname, '../k8s/grafana/mageagent-dashboard.json'), 'utf8')) as {
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown }> };
};

/** Every series name a registry exposes: histograms as their _bucket, _count and _sum series. */
async function seriesNames(): Promise<Set<string>> {
  const api = new ApiMetrics({ queueStats: new QueueStatsCache({ getJobCounts: async () => ({}) }, { ttlMs: 0, timeoutMs: 100 }), openStreams: () => 0 });
  const worker = new WorkerMetrics();
  const names = new Set<string>();
  for (const registry of [api.registry, worker.registry]) {
    for (const metric of await registry.getMetricsAsJSON()) {
      names.add(metric.name);
      if (String(metric.type) === 'histogram') for (const suffix of ['_bucket', '_count', '_sum']) names.add(`${metric.name}${suffix}`);
    }
  }
  return names;
}

const expressions = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr })));

test('the dashboard is a recent schema with a Prometheus datasource variable used by every query', () => {
  expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
  expect(dashboard.templating.list).toContainEqual(expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' }));
  expect(expressions.length).toBeGreaterThan(10);
  for (const panel of dashboard.panels.filter((panel) => panel.type !== 'row')) {
    expect([panel.title, (panel as { datasource?: { uid?: string } }).datasource?.uid]).toEqual([panel.title, '${datasource}']);
  }
});

test('every metric the dashboard queries is one the api or the worker registers', async () => {
  const registered = await seriesNames();
  const queried = new Set(expressions.flatMap(({ expr }) => [...expr.matchAll(/\b(?:mageagent|process|nodejs)_[a-z0-9_]+/g)].map((match) => match[0])));
  expect(queried.size).toBeGreaterThan(0);
  expect([...queried].filter((name) => !registered.has(name))).toEqual([]);
});

test('every metric of the contract is registered and has a panel', async () => {
  const contract = [
    'mageagent_http_request_duration_seconds',
    'mageagent_tasks_created_total',
    'mageagent_tasks_finished_total',
    'mageagent_task_duration_seconds',
    'mageagent_task_queue_wait_seconds',
    'mageagent_model_call_duration_seconds',
    'mageagent_model_tokens_total',
    'mageagent_model_call_errors_total',
    'mageagent_host_lease_wait_seconds',
    'mageagent_host_busy_seconds_total',
    'mageagent_sse_streams_open',
    'mageagent_sockets_open',
    'mageagent_queue_jobs',
    'mageagent_queue_backlog',
    'mageagent_redis_up',
  ];
  const registered = await seriesNames();
  const all = expressions.map(({ expr }) => expr).join('\n');
  for (const name of contract) {
    expect([name, registered.has(name)]).toEqual([name, true]);
    expect([name, new RegExp(`\\b${name}(_bucket|_count|_sum)?\\b`).test(all)]).toEqual([name, true]);
  }
  expect(all).toContain('rate(mageagent_host_busy_seconds_total');
});
