import { existsSync } from 'node:fs';
import path from 'node:path';
import { parseEnv } from '@mageagent/core';
import { LauncherEnvSchema, type LauncherEnv } from './env';
import { PrivateRedis } from './private-redis';
import { findExecutable, redisAnswers } from './redis-probe';
import { printPrefixed } from './service-process';
import { Stack } from './stack';
import { describeExit, type SupervisionEvent, type SupervisionOptions } from './supervisor';

const say = (line: string) => printPrefixed('mageagent', line);

/** A private redis-server when no Redis is configured and none answers on the default port. */
async function privateRedisIfNeeded(env: LauncherEnv, supervise: SupervisionOptions): Promise<PrivateRedis | undefined> {
  if (env.REDIS_URL || env.REDIS_SENTINELS || env.REDIS_CLUSTER_NODES || (await redisAnswers('127.0.0.1', 6379))) return undefined;
  const binary = findExecutable('redis-server');
  if (!binary) {
    throw new Error(
      'no Redis answers on 127.0.0.1:6379 and no redis-server binary is on PATH: install Redis (apt-get install redis-server, brew install redis) or set REDIS_URL',
    );
  }
  return new PrivateRedis({ binary, dataDir: path.resolve(env.REDIS_DATA_DIR), supervise });
}

function describe(event: SupervisionEvent, env: LauncherEnv): string {
  switch (event.type) {
    case 'restarting':
      return (
        `${event.service} ${event.beforeReady ? 'failed to start again' : 'exited'} (${describeExit(event.exit)}); ` +
        `restart ${event.restart} (${event.restartsInWindow} of ${env.RESTART_MAX} allowed in ${env.RESTART_WINDOW_MS} ms) in ${event.delayMs} ms`
      );
    case 'restarted':
      return `${event.service} restarted (pid ${event.pid}, restart ${event.restart})`;
    case 'crash-loop':
      return (
        `${event.service} ${event.beforeReady ? 'failed to start again' : 'exited'} (${describeExit(event.exit)}) after ` +
        `${event.restartsInWindow} restart(s) within ${event.windowMs} ms (RESTART_MAX ${env.RESTART_MAX}): a crash loop; stopping everything`
      );
  }
}

async function main(): Promise<void> {
  const env = parseEnv(LauncherEnvSchema);
  if (env.MODELS_CONFIG && !existsSync(path.resolve(env.MODELS_CONFIG))) {
    throw new Error(`MODELS_CONFIG points at ${env.MODELS_CONFIG}, which does not exist`);
  }
  let redis: PrivateRedis | undefined;
  let stack: Stack | undefined;
  let stopping: Promise<void> | undefined;
  const shutdown = (code: number) => {
    stopping ??= (async () => {
      say(`stopping: api, then workers, then the simulator${redis ? ', then the private Redis' : ''}`);
      await stack?.stop();
      await redis?.stop();
      say('stopped');
      process.exit(code);
    })();
    return stopping;
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  // The service is the default a user runs: a service that ends on its own is started again, and only
  // a crash loop (or a signal) stops everything. RESTART_MAX=0 hands restarting to an outer supervisor.
  const supervise: SupervisionOptions = {
    backoffMs: env.RESTART_BACKOFF_MS,
    backoffMaxMs: env.RESTART_BACKOFF_MAX_MS,
    maxRestarts: env.RESTART_MAX,
    windowMs: env.RESTART_WINDOW_MS,
    stableAfterMs: env.RESTART_STABLE_MS,
    onEvent: (event) => {
      say(describe(event, env));
      if (event.type === 'crash-loop') void shutdown(1);
    },
  };

  try {
    redis = await privateRedisIfNeeded(env, supervise);
    if (redis) {
      await redis.start();
      say(
        `nothing answered on 127.0.0.1:6379, so started a private redis-server at ${redis.url}, ` +
          `persistent: its data (append-only file) is in ${path.resolve(env.REDIS_DATA_DIR)} (set REDIS_URL to use your own)`,
      );
    }
    if (stopping) return;
    stack = new Stack({
      // Sentinel or Cluster: no URL; the children read REDIS_SENTINELS / REDIS_CLUSTER_NODES from the environment.
      redisUrl: redis?.url ?? env.REDIS_URL ?? (env.REDIS_SENTINELS || env.REDIS_CLUSTER_NODES ? undefined : 'redis://127.0.0.1:6379'),
      apiPort: env.PORT,
      simPort: env.SIM_PORT,
      modelsConfig: env.MODELS_CONFIG ? path.resolve(env.MODELS_CONFIG) : undefined,
      workers: env.WORKERS,
      workerConcurrency: env.WORKER_CONCURRENCY,
      supervise,
    });
    await stack.start();
  } catch (error) {
    if (stopping) return;
    // Redis is a process group of its own: it would outlive the launcher.
    await redis?.stop();
    throw error;
  }
  say(
    `ready: api on ${stack.apiUrl}, ${env.WORKERS} worker(s) x ${env.WORKER_CONCURRENCY}, ` +
      (stack.simUrl ? `models SIMULATED by ${stack.simUrl} (set MODELS_CONFIG for real model servers)` : `models from ${env.MODELS_CONFIG}`),
  );
}

main().catch((error: unknown) => {
  say(`cannot start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
