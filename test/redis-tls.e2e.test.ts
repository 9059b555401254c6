/**
 * A managed-style Redis: TLS only (`rediss://`), a certificate from a private CA, and a password.
 * A local redis-server with `--tls-port` and a CA made here with openssl stands in for it; the
 * connections are built from the environment as the processes build theirs, then the spine runs
 * on it end to end.
 *
 * Skipped (with the reason printed) where redis-server (with TLS) or openssl is missing.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseEnv, RedisEnv, z } from '@mageagent/core';
import { createRedis, redisReady, redisTopologyOf, type RedisClient } from '@mageagent/tasks';
import { findExecutable, freePort } from '../apps/launcher/src/redis-probe';
import { Stack } from '../apps/launcher/src/stack';
import { createTask, waitForTask } from './support/http';
import { collectOutput } from './support/stack';

const PASSWORD = 'tls-test-password';
const server = findExecutable('redis-server');
const openssl = findExecutable('openssl');
const missing = server === undefined ? 'redis-server is not on PATH' : openssl === undefined ? 'openssl is not on PATH' : undefined;
if (missing !== undefined) console.warn(`redis-tls e2e skipped: ${missing}`);
const describeIfTls = missing === undefined ? describe : describe.skip;

describeIfTls('Redis over TLS with a private CA and a password', () => {
  let dir: string;
  let child: ChildProcess | undefined;
  let port: number;
  let ca: string;
  const opened: RedisClient[] = [];

  const connect = (env: Record<string, string>) => {
    const redis = createRedis(redisTopologyOf(parseEnv(z.object(RedisEnv), env)), 'requests');
    opened.push(redis);
    return redis;
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'mageagent-tls-'));
    const certs = makeCertificates(dir);
    ca = certs.ca;
    port = await freePort();
    child = spawn(
      server!,
      [
        '--port',
        '0',
        '--tls-port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--tls-cert-file',
        certs.cert,
        '--tls-key-file',
        certs.key,
        '--tls-ca-cert-file',
        certs.ca,
        '--tls-auth-clients',
        'no',
        '--requirepass',
        PASSWORD,
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      { stdio: 'ignore' },
    );
    // Ready when a TLS client with the CA gets an answer.
    const probe = connect({ REDIS_URL: `rediss://127.0.0.1:${port}`, REDIS_TLS_CA_FILE: ca, REDIS_PASSWORD: PASSWORD });
    if (!(await redisReady(probe, 10_000))) throw new Error('redis-server with TLS did not answer within 10 s');
  }, 30_000);

  afterAll(async () => {
    for (const redis of opened) redis.disconnect();
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test('rediss:// with REDIS_TLS_CA_FILE and REDIS_PASSWORD: commands go through', async () => {
    const redis = connect({ REDIS_URL: `rediss://127.0.0.1:${port}`, REDIS_TLS_CA_FILE: ca, REDIS_PASSWORD: PASSWORD });
    expect(await redisReady(redis, 5_000)).toBe(true);
    expect(await redis.set('tls-test:key', 'v')).toBe('OK');
    expect(await redis.get('tls-test:key')).toBe('v');
  });

  test('without the private CA the server certificate is refused; without the password, commands are', async () => {
    const untrusted = connect({ REDIS_URL: `rediss://127.0.0.1:${port}`, REDIS_PASSWORD: PASSWORD });
    const errors: string[] = [];
    untrusted.on('error', (error: Error) => errors.push(error.message));
    expect(await redisReady(untrusted, 1_500)).toBe(false);
    expect(errors.join('\n')).toMatch(/self[- ]signed|unable to verify|certificate/i);

    const anonymous = connect({ REDIS_URL: `rediss://127.0.0.1:${port}`, REDIS_TLS_CA_FILE: ca });
    const refusals: string[] = [];
    anonymous.on('error', (error: Error) => refusals.push(error.message));
    await new Promise((resolve) => setTimeout(resolve, 500));
    await expect(anonymous.get('tls-test:key')).rejects.toThrow(/NOAUTH|Stream isn't writeable/);
  });

  test('the spine runs on it: api and worker as processes, task completed', async () => {
    const output: string[] = [];
    const stack = new Stack({
      redisUrl: `rediss://127.0.0.1:${port}`,
      prefix: 'test-tls',
      apiPort: 0,
      simPort: 0,
      workers: 1,
      workerConcurrency: 2,
      sink: collectOutput(output),
      env: { REDIS_TLS_CA_FILE: ca, REDIS_PASSWORD: PASSWORD, LOG_LEVEL: 'warn', SIM_SPEEDUP: '1000' },
    });
    try {
      await stack.start();
      const task = await waitForTask(stack.apiUrl, await createTask(stack.apiUrl, { prompt: 'over TLS', pattern: 'validated' }));
      expect(task.status).toBe('completed');
    } catch (error) {
      throw new Error(`${String(error)}\n${output.slice(-30).join('\n')}`);
    } finally {
      await stack.stop();
    }
  }, 90_000);
});

/**
 * A CA, and a server certificate it signed for 127.0.0.1 and localhost (in subjectAltName, which
 * node checks, not the CN).
 */
function makeCertificates(dir: string): { ca: string; cert: string; key: string } {
  const file = (name: string) => path.join(dir, name);
  const run = (args: string[]) => execFileSync(openssl!, args, { stdio: 'ignore' });
  writeFileSync(file('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=mageagent test CA', '-keyout', file('ca.key'), '-out', file('ca.pem')]);
  run(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', file('server.key'), '-out', file('server.csr')]);
  run([
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.pem'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    file('server.ext'),
    '-out',
    file('server.pem'),
  ]);
  return { ca: file('ca.pem'), cert: file('server.pem'), key: file('server.key') };
}
