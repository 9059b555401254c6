import { intEnv, parseEnv, z } from '@mageagent/core';

export const LauncherEnvSchema = z.object({
  /** HTTP port of the api. */
  PORT: intEnv(3457, 0, 65535),
  /** Redis URL; unset = 127.0.0.1:6379, or a private redis-server child when nothing answers there. */
  REDIS_URL: z.string().url().optional(),
  /** Model config for real model servers; unset = start the simulator and use config/models.sim.yaml. */
  MODELS_CONFIG: z.string().optional(),
  /** Worker processes to run. */
  WORKERS: intEnv(2, 0, 64),
  /** Jobs each worker process runs at once. */
  WORKER_CONCURRENCY: intEnv(4, 1, 1000),
  /** Port of the embedded model simulator. */
  SIM_PORT: intEnv(3458, 0, 65535),
  LOG_LEVEL: z.enum(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly']).default('info'),
});
