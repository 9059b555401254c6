/**
 * Several GPU hosts behind one queue: one simulator stands for three hosts through its
 * `/hosts/<name>/v1` prefix; the third is reached through a proxy the test can switch off.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { callsOn, hostsOf, overlap, simStats } from './support/hosts';
import { createTask, eventually, postJson, waitForTask } from './support/http';
import { startTestStack, type TestStack } from './support/stack';

const CONFIG = `
hosts:
  gpu-a: { memoryGB: 128, headroomGB: 16, maxConcurrentGenerations: 1 }
  gpu-b: { memoryGB: 64, headroomGB: 8, maxConcurrentGenerations: 1 }
  gpu-c: { memoryGB: 32, headroomGB: 4, maxConcurrentGenerations: 1 }
roles:
  primary:
    { model: sim/qwen2.5-72b-instruct-8bit, endpoint: "http://127.0.0.1:\${SIM_PORT}/hosts/gpu-a/v1", host: gpu-a, memoryGB: 77 }
  tools:
    { model: sim/hermes-3-llama-3.1-8b-8bit, endpoint: "http://127.0.0.1:\${SIM_PORT}/hosts/gpu-a/v1", host: gpu-a, memoryGB: 9 }
  competitor:
    { model: sim/qwen2.5-coder-32b-instruct-4bit, endpoint: "http://127.0.0.1:\${SIM_PORT}/hosts/gpu-b/v1", host: gpu-b, memoryGB: 18 }
  validator:
    { model: sim/qwen2.5-coder-7b-instruct-4bit, endpoint: "http://127.0.0.1:\${FLAKY_PORT}/hosts/gpu-c/v1", host: gpu-c, memoryGB: 5 }
`;

let service: TestStack;
let proxy: Server;
let flakyUp = true;
/** Known once the stack is up; the workers' first probes (during start-up) find gpu-c down. */
let simUrl: string | undefined;
const directory = mkdtempSync(path.join(tmpdir(), 'mageagent-hosts-'));

beforeAll(async () => {
  // gpu-c's server: the simulator while up; while down, every connection is reset.
  proxy = createServer((incoming, outgoing) => {
    if (!flakyUp || simUrl === undefined) {
      incoming.socket.destroy();
      return;
    }
    const upstream = httpRequest(`${simUrl}${incoming.url ?? '/'}`, { method: incoming.method, headers: incoming.headers }, (answer) => {
      outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(outgoing);
    });
    upstream.on('error', () => outgoing.destroy());
    incoming.pipe(upstream);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const configPath = path.join(directory, 'models.yaml');
  writeFileSync(configPath, CONFIG);
  service = await startTestStack({
    workers: 2,
    workerConcurrency: 4,
    simulatedModelsConfig: configPath,
    env: { FLAKY_PORT: String((proxy.address() as AddressInfo).port) },
  });
  simUrl = service.sim;
}, 60_000);

afterAll(async () => {
  await service?.stop();
  proxy?.closeAllConnections();
  await new Promise((resolve) => proxy?.close(resolve));
  rmSync(directory, { recursive: true, force: true });
}, 30_000);

beforeEach(async () => {
  await postJson(`${service.sim}/sim/reset`, {});
});

test('calls on two hosts run at the same time; on one host, one after the other', async () => {
  // compete's two solutions: primary on gpu-a, competitor on gpu-b, started together by the same pattern code.
  const compete = await waitForTask(service.api, await createTask(service.api, { prompt: 'compete across hosts [[sim: ttft=300]]', pattern: 'compete' }));
  expect(compete.status).toBe('completed');
  let stats = await simStats(service.sim);
  const [onA, onB] = [callsOn(stats, 'gpu-a'), callsOn(stats, 'gpu-b')];
  expect(onA.some((a) => onB.some((b) => overlap(a, b)))).toBe(true);

  await postJson(`${service.sim}/sim/reset`, {});
  const sameHost = await Promise.all(
    [0, 1].map((index) => createTask(service.api, { prompt: `both on gpu-a ${index} [[sim: ttft=150]]`, pattern: 'primary' })),
  );
  await Promise.all(sameHost.map((id) => waitForTask(service.api, id)));
  stats = await simStats(service.sim);
  const [first, second] = callsOn(stats, 'gpu-a');
  expect(overlap(first!, second!)).toBe(false);
  expect(stats.maxInFlightByHost['gpu-a']).toBe(1);
});

test('moa on three hosts: its three references run at the same time; the aggregator waits for them', async () => {
  const task = await waitForTask(service.api, await createTask(service.api, { prompt: 'moa across hosts [[sim: ttft=300]]', pattern: 'moa' }));
  expect(task.status).toBe('completed');
  expect(
    task
      .result!.steps.filter((step) => step.kind === 'reference')
      .map((step) => step.host)
      .sort(),
  ).toEqual(['gpu-a', 'gpu-b', 'gpu-c']);
  const stats = await simStats(service.sim);
  const reference = (host: string) => callsOn(stats, host).find((call) => call.role === 'answer')!;
  const [a, b, c] = [reference('gpu-a'), reference('gpu-b'), reference('gpu-c')];
  expect(overlap(a, b) && overlap(b, c) && overlap(a, c)).toBe(true);
  // The synthesis (on gpu-a, after its reference there) starts once the last reference has ended.
  const synthesis = callsOn(stats, 'gpu-a').find((call) => call.role === 'aggregator')!;
  expect(synthesis.startedAt).toBeGreaterThanOrEqual(Math.max(a.endedAt, b.endedAt, c.endedAt));
  expect(stats.maxInFlightByHost['gpu-a']).toBe(1);
});

test('a host whose server stops answering is marked down; its calls fail fast until a probe succeeds', async () => {
  flakyUp = false;
  const down = await eventually(
    async () => {
      const gpuC = (await hostsOf(service.api)).find((host) => host.name === 'gpu-c');
      return gpuC?.health.status === 'down' ? gpuC : undefined;
    },
    5000,
    'gpu-c to be down',
  );
  expect(down.health.error).toMatch(/hosts\/gpu-c\/v1\/models/);
  // The other hosts are not affected.
  expect((await hostsOf(service.api)).filter((host) => host.health.status === 'up').map((host) => host.name)).toEqual(['gpu-a', 'gpu-b']);

  const failed = await waitForTask(service.api, await createTask(service.api, { prompt: 'on gpu-c', pattern: 'validator' }));
  expect(failed).toMatchObject({ status: 'failed', error: { code: 'MODEL_UNAVAILABLE', message: expect.stringMatching(/host gpu-c is down/) } });
  expect(Date.parse(failed.completedAt!) - Date.parse(failed.startedAt!)).toBeLessThan(1000);
  expect((await simStats(service.sim)).requestsByHost['gpu-c']).toBeUndefined();

  flakyUp = true;
  await eventually(
    async () => ((await hostsOf(service.api)).find((host) => host.name === 'gpu-c')?.health.status === 'up' ? true : undefined),
    5000,
    'gpu-c to be up',
  );
  // Workers re-read host health every quarter interval (75 ms here).
  await new Promise((resolve) => setTimeout(resolve, 200));
  const task = await waitForTask(service.api, await createTask(service.api, { prompt: 'on gpu-c again', pattern: 'validator' }));
  expect(task).toMatchObject({ status: 'completed' });
  expect(task.result?.steps[0]).toMatchObject({ host: 'gpu-c', role: 'validator' });
});
