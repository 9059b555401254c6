import path from 'node:path';
import { intEnv, z } from '@mageagent/core';
import { ROOT } from './service-process';

export const LauncherEnvSchema = z.object({
  /** HTTP port of the api. */
  PORT: intEnv(3457, 0, 65535),
  /** Redis URL; unset = 127.0.0.1:6379, or a private redis-server child when nothing answers there. */
  REDIS_URL: z.string().url().optional(),
  /** Sentinel or Cluster mode (see RedisEnv): the children read them; the launcher starts no private Redis then. */
  REDIS_SENTINELS: z.string().optional(),
  REDIS_CLUSTER_NODES: z.string().optional(),
  /** Where the private redis-server keeps its append-only file (relative to the current directory). */
  REDIS_DATA_DIR: z.string().min(1).default(path.join(ROOT, '.mageagent/redis')),
  /** Model config for real model servers; unset = start the simulator and use config/models.sim.yaml. */
  MODELS_CONFIG: z.string().optional(),
  /** Worker processes to run. */
  WORKERS: intEnv(2, 0, 64),
  /** Jobs each worker process runs at once. */
  WORKER_CONCURRENCY: intEnv(4, 1, 1000),
  /** Port of the embedded model simulator. */
  SIM_PORT: intEnv(3458, 0, 65535),
  /**
   * 1: run the services' bundles (apps/<app>/dist/main.js, from `npm run build`); 0: their TypeScript
   * through tsx. Unset: bundles when the launcher itself is the bundle (`node apps/launcher/dist/main.js`).
   */
  MAGEAGENT_COMPILED: z.enum(['0', '1', '']).optional(),
  LOG_LEVEL: z.enum(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly']).default('info'),

  // Restarts: a service (api, worker, simulator, private Redis) that ends on its own is started again.
  /** First delay before a restart, doubling with each crash in a row: 500 ms rides out a blip without spinning. */
  RESTART_BACKOFF_MS: intEnv(500, 0),
  /** Longest delay between restarts: 30 s still brings a service back soon after a longer outage (Redis down for a minute). */
  RESTART_BACKOFF_MAX_MS: intEnv(30_000, 0),
  /**
   * Restarts of one service allowed within RESTART_WINDOW_MS; one more is a crash loop, which stops
   * everything with exit code 1. 5 per minute absorbs a Redis restart or a few killed workers; a
   * service that dies at every start (a bad config) is given up on within about 20 s instead of
   * flapping forever. 0 leaves restarting to an
   * outer supervisor (systemd, Compose, Kubernetes): the first crash stops the launcher.
   */
  RESTART_MAX: intEnv(5, 0),
  /** The window RESTART_MAX counts restarts in. */
  RESTART_WINDOW_MS: intEnv(60_000, 1),
  /** A restarted service up this long ran well: its next crash waits RESTART_BACKOFF_MS again, not the doubled delay. */
  RESTART_STABLE_MS: intEnv(10_000, 0),
});

export type LauncherEnv = z.infer<typeof LauncherEnvSchema>;
