import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PrivateRedis, type PrivateRedisOptions } from './private-redis';
import { findExecutable, redisReply } from './redis-probe';
import type { SupervisionEvent } from './supervisor';

const binary = findExecutable('redis-server');
if (!binary) throw new Error('these tests run a real redis-server: put one on PATH');

let dataDir: string;
let output: string[];
const running: PrivateRedis[] = [];

beforeEach(() => {
  dataDir = mkdtempSync(path.join(os.tmpdir(), 'private-redis-'));
  output = [];
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((redis) => redis.stop()));
  rmSync(dataDir, { recursive: true, force: true });
});

async function startRedis(options: Partial<PrivateRedisOptions> = {}): Promise<PrivateRedis> {
  const redis = new PrivateRedis({ binary: binary!, dataDir, sink: (name, line) => output.push(`[${name}] ${line}`), ...options });
  running.push(redis);
  return redis.start();
}

const command = (redis: PrivateRedis, ...args: string[]) => redisReply('127.0.0.1', redis.process!.port, args, 2000);

async function until<T>(check: () => T | undefined, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; redis said:\n${output.join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

test('killed outright, it comes back on the same port with the same data', async () => {
  const events: SupervisionEvent[] = [];
  const supervise = {
    backoffMs: 50,
    backoffMaxMs: 500,
    maxRestarts: 3,
    windowMs: 60_000,
    stableAfterMs: 10_000,
    onEvent: (event: SupervisionEvent) => events.push(event),
  };
  const redis = await startRedis({ supervise });
  const { url } = redis;
  expect(await command(redis, 'SET', 'accepted-task', 'kept')).toBe('+OK\r\n');
  const killed = redis.process!;
  killed.child.kill('SIGKILL');

  await until(() => (redis.process !== killed ? true : undefined), 'redis-server to be restarted');
  expect(redis.url).toBe(url);
  expect(redis.process!.port).toBe(killed.port);
  expect(events.map((event) => event.type)).toEqual(['restarting', 'restarted']);
  // Acknowledged writes are in the append-only file (written before Redis replies), which the new process loads.
  expect(await command(redis, 'GET', 'accepted-task')).toBe('$4\r\nkept\r\n');
});

test('its data outlives the launcher: a later start in the same directory has it, and the directory is released', async () => {
  const first = await startRedis();
  await command(first, 'SET', 'accepted-task', 'kept');
  await first.stop();
  expect(first.process!.child.exitCode).toBe(0);
  expect(existsSync(path.join(dataDir, 'appendonlydir'))).toBe(true);
  expect(existsSync(path.join(dataDir, 'launcher.json'))).toBe(false);

  const second = await startRedis();
  expect(await command(second, 'GET', 'accepted-task')).toBe('$4\r\nkept\r\n');
});

test('one directory serves one launcher at a time', async () => {
  await startRedis();
  await expect(startRedis()).rejects.toThrow(`cannot use ${dataDir} for the private Redis (the launcher with pid ${process.pid} uses it)`);
});

test('a redis-server left running by a launcher that was killed is shut down cleanly before a new one starts', async () => {
  // Unsupervised, as its launcher is gone: nobody restarts it.
  const orphan = await startRedis();
  await command(orphan, 'SET', 'accepted-task', 'kept');
  const deadLauncher = spawnSync(process.execPath, ['-e', '']).pid;
  writeFileSync(path.join(dataDir, 'launcher.json'), JSON.stringify({ launcherPid: deadLauncher, port: orphan.process!.port }));

  const next = await startRedis();
  expect(await orphan.process!.exited).toBe(0);
  expect(output.join('\n')).toMatch(`shutting down the redis-server on port ${orphan.process!.port} that a killed launcher left running`);
  expect(await command(next, 'GET', 'accepted-task')).toBe('$4\r\nkept\r\n');
  running.splice(running.indexOf(orphan), 1);
});
