import path from 'node:path';
import { RedisEnv, createLogger, intEnv, parseEnv, startTracing, z } from '@mageagent/core';
import { DEFAULT_MODELS_CONFIG_PATH, loadModelsConfig } from '@mageagent/models';
import { createSimulator } from './simulator';

const EnvSchema = z.object({
  /** 0 picks a free port; the port actually bound is logged and sent to the parent over IPC. */
  SIM_PORT: intEnv(3458, 0, 65535),
  SIM_HOST: z.string().min(1).default('127.0.0.1'),
  MODELS_CONFIG: z.string().min(1).default(DEFAULT_MODELS_CONFIG_PATH),
  /** Divides time-to-first-token and multiplies tokens/s of the config, so demos stay quick. */
  SIM_SPEEDUP: z.coerce.number().positive().default(10),
  LOG_LEVEL: RedisEnv.LOG_LEVEL,
});

async function main(): Promise<void> {
  const env = parseEnv(EnvSchema);
  const logger = createLogger({ service: 'model-sim', level: env.LOG_LEVEL });
  // Loads the SDK only when OTEL_EXPORTER_OTLP_ENDPOINT is set.
  const tracing = await startTracing('mageagent-model-sim', logger);
  const configPath = path.resolve(env.MODELS_CONFIG);
  const simulator = createSimulator({ modelsConfig: loadModelsConfig(configPath), speedup: env.SIM_SPEEDUP, logger });
  const port = await simulator.listen(env.SIM_PORT, env.SIM_HOST);
  logger.info('model simulator ready (simulated models, not real ones)', { port, config: configPath });
  process.send?.({ type: 'ready', service: 'model-sim', port });

  let stopping = false;
  const stop = (reason: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info('model simulator stopping', { reason });
    // The simulator's own spans go out before it exits.
    simulator
      .close()
      .then(() => tracing.shutdown())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error('model simulator did not close cleanly', { error: (error as Error).message });
          process.exit(1);
        },
      );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  // Spawned by the launcher with an IPC channel: if the launcher dies, do not linger as an orphan.
  if (process.send !== undefined) process.once('disconnect', () => stop('parent disconnected'));
}

main().catch((error: unknown) => {
  // The logger may not exist yet (bad env), so the failure goes to stderr as one JSON line.
  process.stderr.write(
    `${JSON.stringify({ level: 'error', service: 'model-sim', message: 'model simulator failed to start', error: (error as Error).message })}\n`,
  );
  process.exit(1);
});
