import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseEnv } from '@mageagent/core';
import { LauncherEnvSchema } from './env';
import { findExecutable, redisAnswers, startPrivateRedis } from './redis-probe';
import { printPrefixed, Stack } from './stack';

const say = (line: string) => printPrefixed('mageagent', line);

async function resolveRedis(configured: string | undefined): Promise<{ url: string; child?: ChildProcess }> {
  if (configured) return { url: configured };
  if (await redisAnswers('127.0.0.1', 6379)) return { url: 'redis://127.0.0.1:6379' };
  const binary = findExecutable('redis-server');
  if (!binary) {
    throw new Error(
      'no Redis answers on 127.0.0.1:6379 and no redis-server binary is on PATH: install Redis (apt-get install redis-server, brew install redis) or set REDIS_URL',
    );
  }
  const redis = await startPrivateRedis(binary);
  say(`nothing answered on 127.0.0.1:6379, so started a private, non-persistent redis-server at ${redis.url} (set REDIS_URL to use your own)`);
  return redis;
}

async function main(): Promise<void> {
  const env = parseEnv(LauncherEnvSchema);
  if (env.MODELS_CONFIG && !existsSync(path.resolve(env.MODELS_CONFIG))) {
    throw new Error(`MODELS_CONFIG points at ${env.MODELS_CONFIG}, which does not exist`);
  }
  const redis = await resolveRedis(env.REDIS_URL);
  const stack = new Stack({
    redisUrl: redis.url,
    apiPort: env.PORT,
    simPort: env.SIM_PORT,
    modelsConfig: env.MODELS_CONFIG ? path.resolve(env.MODELS_CONFIG) : undefined,
    workers: env.WORKERS,
    workerConcurrency: env.WORKER_CONCURRENCY,
  });

  let stopping = false;
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('stopping: api, then workers, then the simulator');
    await stack.stop();
    redis.child?.kill('SIGTERM');
    say('stopped');
    process.exit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  await stack.start();
  say(
    `ready: api on ${stack.apiUrl}, ${env.WORKERS} worker(s) x ${env.WORKER_CONCURRENCY}, ` +
      (stack.simUrl ? `models SIMULATED by ${stack.simUrl} (set MODELS_CONFIG for real model servers)` : `models from ${env.MODELS_CONFIG}`),
  );
  // A service that dies on its own takes the whole stack down, loudly: a supervisor
  // (systemd, Compose, Kubernetes) restarts it.
  for (const service of [stack.api, stack.sim, ...stack.workers]) {
    void service?.exited.then((code) => {
      if (stopping) return;
      say(`${service.name} exited unexpectedly (${code}); stopping`);
      void shutdown(1);
    });
  }
}

main().catch((error: unknown) => {
  say(`cannot start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
