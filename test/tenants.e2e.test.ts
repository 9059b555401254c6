/**
 * Keys and tenants through the real processes: a keys file (digests only) read by the api, two
 * tenants whose tasks run on the workers, every transport (HTTP, SSE, Socket.io, the OpenAI SDK),
 * revocation by editing the file (no restart: the key stops working and its open socket is cut
 * off), and open mode refusing to listen beyond loopback.
 */
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { io as connectSocket, type Socket } from 'socket.io-client';
import { generateApiKey, sha256Hex, type TaskEvent } from '@mageagent/core';
import { Redis } from 'ioredis';
import { deleteKeysWithPrefix } from '@mageagent/tasks';
import { startService, stopService, type ServiceProcess } from '../apps/launcher/src/stack';
import { eventually, readSse, requestJson } from './support/http';
import { REDIS_URL, startTestStack, type TestStack } from './support/stack';

const dir = mkdtempSync(path.join(tmpdir(), 'mageagent-keys-'));
const keysFile = path.join(dir, 'api-keys.yaml');
const acmeKey = generateApiKey();
const globexKey = generateApiKey();
const opsKey = generateApiKey();

function writeKeys(entries: Array<{ id: string; key: string; tenant: string; scopes: string[] }>): void {
  const lines = ['keys:'];
  for (const entry of entries) {
    lines.push(`  - id: ${entry.id}`, `    sha256: ${sha256Hex(entry.key)}`, `    tenant: ${entry.tenant}`, `    scopes: [${entry.scopes.join(', ')}]`);
  }
  writeFileSync(`${keysFile}.next`, `${lines.join('\n')}\n`);
  // Replaced as editors and Kubernetes do: a new file renamed over the old one.
  renameSync(`${keysFile}.next`, keysFile);
}

const allKeys = [
  { id: 'acme-ci', key: acmeKey, tenant: 'acme', scopes: ['tasks'] },
  { id: 'globex-main', key: globexKey, tenant: 'globex', scopes: ['tasks'] },
  { id: 'acme-ops', key: opsKey, tenant: 'acme', scopes: ['admin'] },
];

let service: TestStack;

beforeAll(async () => {
  writeKeys(allKeys);
  service = await startTestStack({ workers: 1, workerConcurrency: 4, env: { API_KEYS_FILE: keysFile } });
}, 60_000);

afterAll(async () => {
  await service?.stop();
  rmSync(dir, { recursive: true, force: true });
}, 30_000);

const auth = (key: string) => ({ authorization: `Bearer ${key}` });

async function createAs(key: string, prompt: string): Promise<string> {
  const answer = await requestJson<{ id: string }>(`${service.api}/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...auth(key) },
    body: JSON.stringify({ prompt, pattern: 'primary' }),
  });
  expect(answer.status).toBe(202);
  return answer.body.id;
}

async function connect(key: string): Promise<Socket> {
  const socket = connectSocket(service.api, { transports: ['websocket'], reconnection: false, auth: { token: key } });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  });
  return socket;
}

test('each tenant runs and reads its own tasks on every transport; the other tenant gets 404s', async () => {
  const id = await createAs(acmeKey, 'acme only');
  const stream = await readSse(`${service.api}/tasks/${id}/stream`, auth(acmeKey));
  expect(stream.events.at(-1)).toMatchObject({ type: 'status', status: 'completed' });
  const task = (await requestJson(`${service.api}/tasks/${id}`, { headers: auth(acmeKey) })).body;
  expect(task).toMatchObject({ id, status: 'completed', tenant: 'acme', keyId: 'acme-ci' });

  expect((await requestJson(`${service.api}/tasks/${id}`, { headers: auth(globexKey) })).status).toBe(404);
  expect((await readSse(`${service.api}/tasks/${id}/stream`, auth(globexKey))).status).toBe(404);
  expect((await requestJson(`${service.api}/tasks/${id}/events`, { headers: auth(globexKey) })).status).toBe(404);
  expect((await requestJson<{ tasks: unknown[] }>(`${service.api}/tasks`, { headers: auth(globexKey) })).body.tasks).toEqual([]);
  const socket = await connect(globexKey);
  expect(await socket.emitWithAck('subscribe-task', { taskId: id })).toMatchObject({ error: { code: 'NOT_FOUND' } });
  socket.disconnect();

  // The OpenAI SDK's apiKey is the key; a wrong one raises the SDK's AuthenticationError.
  const client = new OpenAI({ baseURL: `${service.api}/v1`, apiKey: globexKey, maxRetries: 0 });
  const completion = await client.chat.completions.create({ model: 'mageagent:primary', messages: [{ role: 'user', content: 'hello from globex' }] });
  expect(completion.choices[0]?.message.content).toEqual(expect.any(String));
  const stranger = new OpenAI({ baseURL: `${service.api}/v1`, apiKey: generateApiKey(), maxRetries: 0 });
  await expect(stranger.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  // The admin-only key may look at /patterns but not run tasks.
  expect((await requestJson(`${service.api}/patterns`, { headers: auth(opsKey) })).status).toBe(200);
  expect(
    (await requestJson(`${service.api}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth(opsKey) }, body: '{"prompt":"x"}' }))
      .status,
  ).toBe(403);
}, 60_000);

test('a key removed from the file stops working without a restart, and its open socket is cut off', async () => {
  const id = await createAs(globexKey, 'before the revocation');
  const socket = await connect(globexKey);
  const events: TaskEvent[] = [];
  socket.on('task-update', (event: TaskEvent) => events.push(event));
  const disconnected = new Promise<string>((resolve) => socket.once('disconnect', (reason) => resolve(reason)));
  expect(await socket.emitWithAck('subscribe-task', { taskId: id })).toMatchObject({ task: { id } });

  writeKeys(allKeys.filter((entry) => entry.id !== 'globex-main'));
  await eventually(
    async () => ((await requestJson(`${service.api}/patterns`, { headers: auth(globexKey) })).status === 401 ? true : undefined),
    10_000,
    'the revoked key to be refused',
  );
  expect(await disconnected).toBe('io server disconnect');
  // Other keys are untouched, and the api never restarted.
  expect((await requestJson(`${service.api}/patterns`, { headers: auth(acmeKey) })).status).toBe(200);
  await expect(connect(globexKey)).rejects.toMatchObject({ data: { code: 'UNAUTHORIZED' } });

  writeKeys(allKeys);
  await eventually(
    async () => ((await requestJson(`${service.api}/patterns`, { headers: auth(globexKey) })).status === 200 ? true : undefined),
    10_000,
    'the key to be back',
  );
}, 60_000);

describe('open mode', () => {
  const started: ServiceProcess[] = [];
  const prefix = `test-open-${Date.now()}`;
  afterAll(async () => {
    // Stopped first, so nothing writes under the prefix once its keys are deleted.
    await Promise.all(started.map((service) => stopService(service)));
    const redis = new Redis(REDIS_URL);
    await deleteKeysWithPrefix(redis, prefix);
    redis.disconnect();
  });

  test('refuses to listen beyond loopback without keys, unless ALLOW_OPEN_MODE=true', async () => {
    const lines: string[] = [];
    const env = { ...process.env, REDIS_URL, REDIS_PREFIX: prefix, PORT: '0', HOST: '0.0.0.0', LOG_LEVEL: 'warn', API_KEYS_FILE: '' };
    delete (env as Record<string, string | undefined>).API_KEYS_FILE;
    await expect(startService('api', 'api-open', env, (_name, line) => lines.push(line))).rejects.toThrow(/exited \(1\)/);
    expect(lines.join('\n')).toMatch(/refusing to listen on 0\.0\.0\.0 in open mode/);

    const allowed = await startService('api', 'api-open-allowed', { ...env, ALLOW_OPEN_MODE: 'true' }, () => undefined);
    started.push(allowed);
    expect((await requestJson(`http://127.0.0.1:${allowed.port}/patterns`)).status).toBe(200);
  }, 60_000);
});
