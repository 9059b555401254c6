/**
 * Metrics, queue stats and the queue dashboard through real processes (simulator, api, one
 * worker) with API keys: what each endpoint serves to an admin key, refuses to a tasks-only key
 * and to no key; the contract's metrics present with their labels and plausible values after a
 * task ran; the unauthenticated METRICS_PORT listener on loopback; the worker's health server,
 * whose /readyz turns 503 while the worker drains.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import path from 'node:path';
import { generateApiKey, sha256Hex } from '@mageagent/core';
import { eventually, requestJson } from './support/http';
import { startTestStack, type TestStack } from './support/stack';

const dir = mkdtempSync(path.join(tmpdir(), 'mageagent-metrics-keys-'));
const keysFile = path.join(dir, 'api-keys.yaml');
const adminKey = generateApiKey();
const tasksKey = generateApiKey();
let service: TestStack;
let metricsPort: number;
let healthPort: number;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

beforeAll(async () => {
  writeFileSync(
    keysFile,
    [
      'keys:',
      `  - { id: ops, sha256: ${sha256Hex(adminKey)}, tenant: acme, scopes: [admin] }`,
      `  - { id: ci, sha256: ${sha256Hex(tasksKey)}, tenant: acme, scopes: [tasks] }`,
      '',
    ].join('\n'),
  );
  metricsPort = await freePort();
  healthPort = await freePort();
  service = await startTestStack({
    workers: 1,
    workerConcurrency: 2,
    env: { API_KEYS_FILE: keysFile, METRICS_PORT: String(metricsPort), HEALTH_PORT: String(healthPort), SHUTDOWN_GRACE_MS: '15000' },
  });
}, 60_000);

afterAll(async () => {
  await service?.stop();
  rmSync(dir, { recursive: true, force: true });
}, 40_000);

const auth = (key: string) => ({ authorization: `Bearer ${key}` });
const health = (pathname: string) => `http://127.0.0.1:${healthPort}${pathname}`;
const metricsListener = (pathname: string) => `http://127.0.0.1:${metricsPort}${pathname}`;

/** One sample of a Prometheus text exposition: the value of `name` whose labels include `labels`. */
function samples(text: string, name: string, labels: Record<string, string> = {}): number[] {
  const values: number[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((pair) => [pair[1], pair[2]]));
    if (Object.entries(labels).every(([key, value]) => have[key] === value)) values.push(Number(match[3]));
  }
  return values;
}
const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);

async function runTask(prompt: string): Promise<string> {
  const created = await requestJson<{ id: string }>(`${service.api}/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth(tasksKey) },
    body: JSON.stringify({ prompt, pattern: 'primary' }),
  });
  expect(created.status).toBe(202);
  return created.body.id;
}

async function waitForStatus(taskId: string, statuses: string[]): Promise<void> {
  await eventually(
    async () => {
      const { body } = await requestJson<{ status: string }>(`${service.api}/tasks/${taskId}`, { headers: auth(tasksKey) });
      return statuses.includes(body.status) ? true : undefined;
    },
    20_000,
    `task ${taskId} to be ${statuses.join('/')}`,
  );
}

test('/metrics, /queue/stats and /admin/queues: 401 without a key, 403 for a tasks-only key, served to the admin key', async () => {
  for (const pathname of ['/metrics', '/queue/stats', '/admin/queues', '/admin/queues/api/queues']) {
    const anonymous = await requestJson<{ error: { code: string } }>(`${service.api}${pathname}`);
    expect([pathname, anonymous.status, anonymous.body.error?.code]).toEqual([pathname, 401, 'UNAUTHORIZED']);
    const tasksOnly = await requestJson<{ error: { code: string } }>(`${service.api}${pathname}`, { headers: auth(tasksKey) });
    expect([pathname, tasksOnly.status, tasksOnly.body.error?.code]).toEqual([pathname, 403, 'FORBIDDEN']);
  }
  const metrics = await fetch(`${service.api}/metrics`, { headers: auth(adminKey) });
  expect(metrics.status).toBe(200);
  expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
  expect(await metrics.text()).toContain('# TYPE mageagent_http_request_duration_seconds histogram');

  const stats = await requestJson(`${service.api}/queue/stats`, { headers: auth(adminKey) });
  expect(stats.status).toBe(200);
  expect(Object.keys(stats.body as object).sort()).toEqual(['active', 'backlog', 'completed', 'delayed', 'failed', 'prioritized', 'waiting']);

  // The board: its page (under its own CSP, which lets its scripts run), its assets and its API.
  const board = await fetch(`${service.api}/admin/queues`, { headers: auth(adminKey) });
  expect(board.status).toBe(200);
  const html = await board.text();
  expect(html).toContain('<title>MageAgent queues</title>');
  expect(board.headers.get('content-security-policy')).toContain("script-src 'self'");
  const script = /src="(static\/js\/main[^"]+)"/.exec(html)?.[1];
  expect(script).toBeDefined();
  expect((await fetch(`${service.api}/admin/queues/${script}`, { headers: auth(adminKey) })).status).toBe(200);
  const queues = await requestJson<{ queues: Array<{ name: string; readOnlyMode: boolean }> }>(`${service.api}/admin/queues/api/queues`, {
    headers: auth(adminKey),
  });
  expect(queues.body.queues.map((queue) => [queue.name, queue.readOnlyMode])).toEqual(
    expect.arrayContaining([
      ['tasks', true],
      ['webhooks', true],
    ]),
  );
  // A browser presents the key by HTTP Basic (the password); a 401 there asks for it.
  const basic = `Basic ${Buffer.from(`ops:${adminKey}`).toString('base64')}`;
  expect((await fetch(`${service.api}/admin/queues`, { headers: { authorization: basic } })).status).toBe(200);
  const prompt = await fetch(`${service.api}/admin/queues`);
  expect(prompt.headers.get('www-authenticate')).toMatch(/^Basic /);
  // Read-only: the board's actions are refused.
  expect((await fetch(`${service.api}/admin/queues/api/queues/tasks/pause`, { method: 'PUT', headers: auth(adminKey) })).status).toBe(405);
});

test('after a task ran, every contract metric is there with its labels and plausible values', async () => {
  const taskId = await runTask('say something about metrics');
  await waitForStatus(taskId, ['completed']);

  const api = await eventually(
    async () => {
      const text = await (await fetch(`${service.api}/metrics`, { headers: auth(adminKey) })).text();
      // Wait out the queue counts' cache until the finished job shows.
      return sum(samples(text, 'mageagent_queue_jobs', { state: 'completed' })) >= 1 && sum(samples(text, 'mageagent_queue_backlog')) === 0 ? text : undefined;
    },
    10_000,
    'the queue gauges to show the finished task',
  );
  expect(sum(samples(api, 'mageagent_tasks_created_total', { pattern: 'primary' }))).toBeGreaterThanOrEqual(1);
  expect(sum(samples(api, 'mageagent_http_request_duration_seconds_count', { method: 'POST', route: '/tasks', status: '202' }))).toBeGreaterThanOrEqual(1);
  expect(sum(samples(api, 'mageagent_http_request_duration_seconds_count', { method: 'GET', route: '/tasks/:id', status: '200' }))).toBeGreaterThanOrEqual(1);
  // Raw URLs never become labels.
  expect(api).not.toContain(taskId);
  for (const state of ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'])
    expect(samples(api, 'mageagent_queue_jobs', { state })).toHaveLength(1);
  expect(samples(api, 'mageagent_queue_backlog')).toEqual([0]);
  expect(samples(api, 'mageagent_redis_up')).toEqual([1]);
  expect(samples(api, 'mageagent_sse_streams_open')).toEqual([0]);
  expect(samples(api, 'mageagent_sockets_open')).toEqual([0]);
  expect(samples(api, 'process_cpu_seconds_total')).toHaveLength(1);

  const worker = await (await fetch(health('/metrics'))).text();
  expect(sum(samples(worker, 'mageagent_tasks_finished_total', { pattern: 'primary', status: 'completed' }))).toBeGreaterThanOrEqual(1);
  expect(sum(samples(worker, 'mageagent_task_duration_seconds_count', { pattern: 'primary' }))).toBeGreaterThanOrEqual(1);
  expect(sum(samples(worker, 'mageagent_task_duration_seconds_sum', { pattern: 'primary' }))).toBeGreaterThan(0);
  expect(sum(samples(worker, 'mageagent_task_queue_wait_seconds_count', { pattern: 'primary' }))).toBeGreaterThanOrEqual(1);
  const call = { role: 'primary', host: 'sim-mac', outcome: 'ok' };
  expect(sum(samples(worker, 'mageagent_model_call_duration_seconds_count', call))).toBeGreaterThan(0);
  expect(sum(samples(worker, 'mageagent_model_call_duration_seconds_sum', call))).toBeGreaterThan(0);
  expect(sum(samples(worker, 'mageagent_model_tokens_total', { role: 'primary', host: 'sim-mac', type: 'prompt' }))).toBeGreaterThan(0);
  expect(sum(samples(worker, 'mageagent_model_tokens_total', { role: 'primary', host: 'sim-mac', type: 'completion' }))).toBeGreaterThan(0);
  expect(sum(samples(worker, 'mageagent_host_lease_wait_seconds_count', { host: 'sim-mac' }))).toBeGreaterThan(0);
  expect(sum(samples(worker, 'mageagent_host_busy_seconds_total', { host: 'sim-mac' }))).toBeGreaterThan(0);
  expect(worker).toContain('# TYPE mageagent_model_call_errors_total counter');
  expect(samples(worker, 'mageagent_redis_up')).toEqual([1]);

  // /queue/stats agrees, and finished jobs are retained (bounded) for the dashboard.
  const stats = await requestJson<Record<string, number>>(`${service.api}/queue/stats`, { headers: auth(adminKey) });
  expect(stats.body.backlog).toBe(0);
  expect(stats.body.completed).toBeGreaterThanOrEqual(1);
});

test('an open SSE stream is counted while it is open', async () => {
  const taskId = await runTask('stream this slowly [[sim: tokens=20; tps=10]]');
  const controller = new AbortController();
  const stream = await fetch(`${service.api}/tasks/${taskId}/stream`, { headers: auth(tasksKey), signal: controller.signal });
  expect(stream.status).toBe(200);
  try {
    await eventually(
      async () => {
        const text = await (await fetch(`${service.api}/metrics`, { headers: auth(adminKey) })).text();
        return samples(text, 'mageagent_sse_streams_open')[0] === 1 ? true : undefined;
      },
      5_000,
      'the stream to be counted',
    );
  } finally {
    controller.abort();
  }
  await waitForStatus(taskId, ['completed']);
});

test('the METRICS_PORT listener serves /metrics and /queue/stats without a key, nothing else, on loopback only', async () => {
  const metrics = await fetch(metricsListener('/metrics'));
  expect(metrics.status).toBe(200);
  expect(await metrics.text()).toMatch(/^mageagent_queue_backlog \d+$/m);
  const stats = await requestJson<Record<string, number>>(metricsListener('/queue/stats'));
  expect(stats.status).toBe(200);
  expect(typeof stats.body.backlog).toBe('number');
  const other = await requestJson<{ error: { code: string } }>(metricsListener('/tasks'));
  expect([other.status, other.body.error.code]).toEqual([404, 'NOT_FOUND']);
  expect((await fetch(metricsListener('/metrics'), { method: 'POST' })).status).toBe(405);

  // Not reachable on this machine's other addresses: it listens on 127.0.0.1 by default.
  const external = Object.values(networkInterfaces())
    .flat()
    .find((address) => address !== undefined && address.family === 'IPv4' && !address.internal);
  if (external !== undefined) {
    await expect(fetch(`http://${external.address}:${metricsPort}/metrics`)).rejects.toThrow();
    await expect(fetch(`http://${external.address}:${healthPort}/healthz`)).rejects.toThrow();
  }
});

test('the worker health server: /healthz, /readyz 200 while running, 503 while draining, closed once stopped', async () => {
  const healthz = await requestJson<{ status: string; eventLoopDelayMs: number }>(health('/healthz'));
  expect(healthz.status).toBe(200);
  expect(healthz.body.status).toBe('ok');
  const ready = await requestJson<{ status: string; checks: Record<string, boolean> }>(health('/readyz'));
  expect([ready.status, ready.body.checks]).toEqual([200, { redis: true, worker: true, draining: false }]);
  expect((await requestJson(health('/nope'))).status).toBe(404);

  // A task running for a few seconds keeps the worker draining after SIGTERM.
  const taskId = await runTask('keep the worker busy [[sim: tokens=40; tps=10]]');
  await waitForStatus(taskId, ['processing']);
  const [worker] = service.stack.workers;
  worker!.child.kill('SIGTERM');
  const draining = await eventually(
    async () => {
      const answer = await requestJson<{ status: string }>(health('/readyz')).catch(() => undefined);
      return answer?.status === 503 ? answer : undefined;
    },
    5_000,
    '/readyz to answer 503',
  );
  expect(draining.body.status).toBe('draining');
  // Still alive while it drains.
  expect((await fetch(health('/healthz'))).status).toBe(200);
  await worker!.exited;
  await expect(fetch(health('/healthz'))).rejects.toThrow();
}, 40_000);
