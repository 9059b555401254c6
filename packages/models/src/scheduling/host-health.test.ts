/**
 * Host health: probes against a local HTTP server that can be told to fail, two prober
 * processes sharing one Redis lock.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError, ModelUnavailableError } from '@mageagent/core';
import { parseModelsConfig } from '../config';
import { HostHealth, probeTargetsFromConfig, type HostHealthOptions } from './host-health';
import { SchedulingTestBed, sleep, until } from './test-support';

const bed = new SchedulingTestBed();
let server: Server;
let port: number;
let mode: 'up' | 'error' | 'hang' = 'up';
let probes = 0;
const healths: HostHealth[] = [];

beforeAll(async () => {
  server = createServer((request, response) => {
    probes += 1;
    if (mode === 'hang') return;
    if (mode === 'error') {
      response.writeHead(503).end();
      return;
    }
    response
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ object: 'list', data: [], auth: request.headers.authorization ?? null }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterEach(async () => {
  await Promise.all(healths.splice(0).map((health) => health.stop()));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await bed.close();
});

async function startHealth(host: string, options: Partial<HostHealthOptions> = {}): Promise<HostHealth> {
  const health = new HostHealth({
    redis: bed.connection(),
    prefix: bed.prefix,
    targets: [{ host, url: `http://127.0.0.1:${port}/v1/models`, headers: {} }],
    intervalMs: 200,
    timeoutMs: 100,
    probe: true,
    ...options,
  });
  await health.start();
  healths.push(health);
  return health;
}

test('two processes probe a host about once per interval between them, not each', async () => {
  const host = bed.newHost();
  mode = 'up';
  const [first, second] = [await startHealth(host), await startHealth(host)];
  probes = 0;
  await sleep(1000);
  // One prober: ~5 probes in a second at 200 ms; two unsynchronised probers would make ~10.
  expect(probes).toBeGreaterThanOrEqual(3);
  expect(probes).toBeLessThanOrEqual(7);
  expect(first.current(host).status).toBe('up');
  expect(second.current(host)).toMatchObject({ status: 'up', intervalMs: 200 });
});

test('a failing probe marks the host down everywhere, with the reason; a good one brings it back', async () => {
  const host = bed.newHost();
  mode = 'up';
  const [first, second] = [await startHealth(host), await startHealth(host)];
  const downs: ModelUnavailableError[] = [];
  second.onDown((_host, reason) => downs.push(reason));
  mode = 'error';
  await until(() => first.current(host).status === 'down' && second.current(host).status === 'down', 'both to see the host down', 1000);
  expect(first.current(host).error).toMatch(/answered HTTP 503/);
  expect(second.unavailable(host)).toBeInstanceOf(ModelUnavailableError);
  expect(second.unavailable(host)?.message).toMatch(new RegExp(`host ${host} is down`));
  expect(downs).toHaveLength(1);

  mode = 'hang';
  await until(() => /no answer within 100 ms/.test(first.current(host).error ?? ''), 'a timed-out probe', 1000);

  // A server that does not answer while it generates is not down: a timeout during a held lease is inconclusive.
  const lease = await bed.leases.acquire(host, 'busy-call', { limit: 1, ttlMs: 5000, agingMs: 0, owner: { worker: 'test', priority: 'normal' } });
  expect(lease.granted).toBe(true);
  await until(() => first.current(host).status === 'up', 'the busy host to count as up', 1000);
  expect(first.current(host)).toMatchObject({ note: expect.stringMatching(/while a call held the host: inconclusive/) });
  await bed.leases.release(host, 'busy-call', { limit: 1, ttlMs: 5000 });
  await until(() => first.current(host).status === 'down', 'the idle, silent host to be down again', 1000);

  mode = 'up';
  await until(() => first.current(host).status === 'up' && second.current(host).status === 'up', 'both to see the host up', 1000);
  expect(second.unavailable(host)).toBeUndefined();
});

test('a host that is down is probed every tick, so its recovery is seen within a fraction of the interval', async () => {
  const host = bed.newHost();
  mode = 'error';
  const health = await startHealth(host, { intervalMs: 2000 });
  await until(() => health.current(host).status === 'down', 'the host to be down', 3000);
  probes = 0;
  await sleep(1600);
  // Up, it would be probed at most once in that time (every 2 s); down, every tick (500 ms).
  expect(probes).toBeGreaterThanOrEqual(2);
  mode = 'up';
  const back = Date.now();
  await until(() => health.current(host).status === 'up', 'the host to be seen up again', 3000);
  // Seen well before a whole interval would have passed.
  expect(Date.now() - back).toBeLessThan(2000);
});

test('a host whose server does not listen is down; a reader that never probes sees what probers wrote', async () => {
  const host = bed.newHost();
  const reader = await startHealth(host, { probe: false });
  expect(reader.current(host).status).toBe('unknown');
  expect(reader.unavailable(host)).toBeUndefined();
  const closedPort = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address() as AddressInfo;
      probe.close(() => resolve(free));
    });
  });
  await startHealth(host, { targets: [{ host, url: `http://127.0.0.1:${closedPort}/v1/models`, headers: {} }] });
  await until(() => reader.current(host).status === 'down', 'the reader to see the host down', 1000);
  expect(reader.current(host).error).toMatch(/ECONNREFUSED/);
});

test("probe targets: one per host, `<endpoint>/models`, with the role's API key", () => {
  const config = parseModelsConfig(
    `
hosts:
  mac: { memoryGB: 64 }
  pc: { memoryGB: 64 }
roles:
  primary: { model: a, endpoint: "http://mac:8080/v1/", host: mac, apiKeyEnv: MAC_KEY }
  validator: { model: b, endpoint: "http://mac:8081/v1", host: mac }
  competitor: { model: c, endpoint: "http://pc:9000/v1", host: pc }
`,
    'inline.yaml',
    {},
  );
  expect(probeTargetsFromConfig(config, { MAC_KEY: 'secret' })).toEqual([
    { host: 'mac', url: 'http://mac:8080/v1/models', headers: { authorization: 'Bearer secret' } },
    { host: 'pc', url: 'http://pc:9000/v1/models', headers: {} },
  ]);
  expect(() => probeTargetsFromConfig(config, {})).toThrow(ConfigError);
});
