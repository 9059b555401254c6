import { hostname } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'bullmq';
import { ConfigError, createLogger, isMageError, logOptionsOf, onShutdown, readApiKeysFile, startTracing } from '@mageagent/core';
import {
  DEFAULT_MODELS_CONFIG_PATH,
  HostHealth,
  HostScheduler,
  loadModelsConfig,
  ModelRegistry,
  probeTargetsFromConfig,
  scheduledModelFactory,
} from '@mageagent/models';
import { loadPatternRegistry } from '@mageagent/patterns';
import {
  CancelChannel,
  createRedis,
  describeTopology,
  isRedisUnavailable,
  pingRedis,
  redisTopologyOf,
  TASK_QUEUE_NAME,
  TaskStore,
  type TaskJobData,
} from '@mageagent/tasks';
import { createWebhookWorker, DerivedWebhookSecrets, WebhookDispatcher } from '@mageagent/webhooks';
import { loadWorkerEnv } from './env';
import { startHealthServer, type HealthServer } from './health-server';
import { WorkerMetrics } from './metrics';
import { createTaskProcessor } from './processor';

/**
 * Tenants' own webhook signing secrets, from the `tenants` section of the API keys file (read at
 * start-up; the api reloads the file, the workers pick a change up when they restart).
 */
function tenantWebhookSecrets(keysFile: string | undefined): Map<string, string> {
  const secrets = new Map<string, string>();
  if (keysFile === undefined) return secrets;
  for (const [tenant, settings] of Object.entries(readApiKeysFile(keysFile).file.tenants ?? {})) {
    if (settings.webhookSecret !== undefined) secrets.set(tenant, settings.webhookSecret);
  }
  return secrets;
}

/** After the grace: time to hand running tasks back and close connections before exiting anyway. */
const SHUTDOWN_HAND_BACK_MS = 5_000;

async function main(): Promise<void> {
  // Model calls go through fetch (undici), whose HTTP parser is WebAssembly (llhttp). V8's optimising
  // wasm compiler takes ~30 MB of malloc for it on the first call, and much of that stays in RSS
  // (worker after 200 tasks: see docs/operate/build.md). The baseline compiler alone (Liftoff) needs
  // ~2 MB; parsing model responses was no slower measurably. Must run before the first fetch.
  setFlagsFromString('--liftoff-only');
  const env = loadWorkerEnv();
  const logger = createLogger({ service: 'worker', ...logOptionsOf(env) });
  // Before anything creates spans; loads the SDK only when OTEL_EXPORTER_OTLP_ENDPOINT is set.
  const tracing = await startTracing('mageagent-worker', logger);
  const workerName = `${hostname()}:${process.pid}`;
  const modelsConfig = loadModelsConfig(env.MODELS_CONFIG ?? DEFAULT_MODELS_CONFIG_PATH);

  // One node, Sentinel or Cluster: decided (and checked) once, and every connection follows it.
  const topology = redisTopologyOf(env);
  // Every connection of a worker waits out a Redis outage: running tasks pause and go on.
  const commands = createRedis(topology, 'worker', { connectionName: 'mageagent-worker', logger });
  const blocking = createRedis(topology, 'bullmq', { connectionName: 'mageagent-worker-bullmq', logger });
  // One subscriber per process: cancel requests and host-lease grants share it.
  const subscriber = createRedis(topology, 'subscriber', { connectionName: 'mageagent-worker-subscriber', logger });
  const metrics = new WorkerMetrics({ redisUp: () => commands.status === 'ready' });
  const store = new TaskStore(commands, env.REDIS_PREFIX, { retentionSeconds: env.TASK_RETENTION_SECONDS });
  const health = new HostHealth({
    redis: commands,
    prefix: env.REDIS_PREFIX,
    targets: probeTargetsFromConfig(modelsConfig),
    intervalMs: env.HOST_HEALTH_INTERVAL_MS,
    timeoutMs: env.HOST_HEALTH_TIMEOUT_MS,
    probe: true,
    logger,
  });
  const scheduler = new HostScheduler({
    redis: commands,
    subscriber,
    prefix: env.REDIS_PREFIX,
    hosts: modelsConfig.hosts,
    leaseTtlMs: env.HOST_LEASE_TTL_MS,
    priorityAgingMs: env.HOST_PRIORITY_AGING_MS,
    worker: workerName,
    health,
    logger,
  });
  // Every model call takes a lease on its GPU host for its duration.
  const models = new ModelRegistry(modelsConfig, process.env, scheduledModelFactory(scheduler, metrics.modelObserver()));
  const patterns = loadPatternRegistry({ patternsConfig: env.PATTERNS_CONFIG, defaultPattern: env.DEFAULT_PATTERN });
  for (const { pattern, builtIn, roles } of patterns.missingRoles((role) => models.has(role))) {
    const message = `pattern "${pattern}" calls role(s) ${roles.join(', ')} that the model config does not define`;
    if (!builtIn) throw new ConfigError(`${env.PATTERNS_CONFIG}: ${message}`);
    logger.warn(`${message}; its tasks will fail until they are configured`);
  }
  // Webhooks: connections of their own (the outbox's blocking wait, the delivery Worker's), so
  // deliveries never queue behind a task's commands, nor tasks behind deliveries.
  const outboxWaitConnection = createRedis(topology, 'worker', { connectionName: 'mageagent-webhook-outbox', logger });
  const webhookWorkerConnection = createRedis(topology, 'bullmq', { connectionName: 'mageagent-webhooks-bullmq', logger });
  const dispatcher = new WebhookDispatcher({
    redis: commands,
    blocking: outboxWaitConnection,
    prefix: env.REDIS_PREFIX,
    retry: { attempts: env.WEBHOOK_ATTEMPTS, backoffMs: env.WEBHOOK_BACKOFF_MS },
    logger,
  });
  const webhookWorker = createWebhookWorker({
    connection: webhookWorkerConnection,
    prefix: env.REDIS_PREFIX,
    concurrency: env.WEBHOOK_CONCURRENCY,
    store,
    secrets: new DerivedWebhookSecrets({ master: env.WEBHOOK_SECRET, explicit: tenantWebhookSecrets(env.API_KEYS_FILE) }),
    allowPrivate: env.WEBHOOK_ALLOW_PRIVATE,
    timeoutMs: env.WEBHOOK_TIMEOUT_MS,
    logger,
  });
  if (env.WEBHOOK_SECRET === undefined) logger.warn('WEBHOOK_SECRET is not set: only tenants with their own secret in the keys file get webhooks');
  let shuttingDown = false;

  const worker = new Worker<TaskJobData>(
    TASK_QUEUE_NAME,
    createTaskProcessor({
      store,
      patterns,
      models,
      retry: { retries: env.MODEL_RETRIES, baseDelayMs: env.MODEL_RETRY_BASE_MS, retryAfterMaxMs: env.MODEL_RETRY_AFTER_MAX_MS },
      defaultTimeoutMs: env.TASK_TIMEOUT_MS,
      deltaFlushMs: env.DELTA_FLUSH_MS,
      logger,
      workerName,
      isShuttingDown: () => shuttingDown,
      observer: metrics,
    }),
    {
      connection: blocking,
      prefix: env.REDIS_PREFIX,
      concurrency: env.WORKER_CONCURRENCY,
      lockDuration: env.JOB_LOCK_MS,
      stalledInterval: Math.max(1000, Math.floor(env.JOB_LOCK_MS / 2)),
      maxStalledCount: 2,
      autorun: false,
    },
  );

  // A job that BullMQ gives up on (attempts or stall limit exhausted) must not leave its task
  // `processing` forever: the task record is what clients read.
  worker.on('failed', (job, error) => {
    if (!job) return;
    void job
      .getState()
      .then(async (state) => {
        if (state !== 'failed') return;
        const message = isMageError(error) ? error.message : `task could not be run: ${error.message}`;
        await store.fail(job.data.taskId, { code: 'INTERNAL', message, retryable: true });
      })
      .catch((failure: unknown) => logger.error('could not record a failed job', { error: String(failure) }));
  });
  // BullMQ reports every failed reconnect attempt here; an outage is logged once by the connections.
  worker.on('error', (error) => {
    if (!isRedisUnavailable(error)) logger.error('worker error', { error: String(error) });
  });

  await new CancelChannel(store.keys).listen(subscriber, (taskId, reason) => {
    if (worker.cancelJob(taskId, reason)) logger.info('cancelled a running task', { taskId });
  });
  await scheduler.start();
  await health.start();
  await dispatcher.start();

  let healthServer: HealthServer | undefined;
  if (env.HEALTH_PORT !== undefined) {
    healthServer = await startHealthServer({
      port: env.HEALTH_PORT,
      host: env.HEALTH_HOST,
      registry: metrics.registry,
      // The commands connection queues commands during an outage: ask only when it is connected.
      redisReady: async () => commands.status === 'ready' && (await pingRedis(commands, 1000)),
      workerRunning: () => worker.isRunning(),
      draining: () => shuttingDown,
    });
    logger.info('health server listening', { host: env.HEALTH_HOST, port: healthServer.port });
  }

  onShutdown(
    logger,
    [
      {
        name: 'stop taking jobs and finish running ones, handing back what does not finish in time',
        run: async () => {
          shuttingDown = true;
          const grace = setTimeout(() => worker.cancelAllJobs('worker shutting down'), env.SHUTDOWN_GRACE_MS);
          // Deliveries in flight finish within WEBHOOK_TIMEOUT_MS; the rest wait in the queue for other workers.
          await Promise.all([worker.close(), webhookWorker.close()]);
          clearTimeout(grace);
        },
      },
      // After the tasks: the ones that ended during the grace are in the outbox, and go to the queue now.
      { name: 'stop the webhook dispatcher, giving back what it holds', run: () => dispatcher.stop() },
      { name: 'stop host scheduling', run: async () => void (await Promise.all([health.stop(), scheduler.close()])) },
      // Open until the drain is over, so probes see /readyz answer 503 (draining) meanwhile.
      { name: 'close the health server', run: async () => void (await healthServer?.close()) },
      {
        name: 'close redis',
        run: async () =>
          void (await Promise.allSettled(
            [commands, blocking, subscriber, outboxWaitConnection, webhookWorkerConnection].map((connection) => connection.quit()),
          )),
      },
      // Last: the spans of the tasks that finished or were handed back during the grace go out too.
      { name: 'flush traces', run: () => tracing.shutdown() },
    ],
    // The grace, then time to hand back what is still running; past that, BullMQ's stalled-job
    // check hands the jobs on (as after a crash).
    { deadlineMs: env.SHUTDOWN_GRACE_MS + SHUTDOWN_HAND_BACK_MS },
  );

  void worker.run();
  webhookWorker.run().catch((error: unknown) => logger.error('webhook worker stopped', { error: String(error) }));
  await worker.waitUntilReady();
  logger.info('worker ready', { redis: describeTopology(topology), concurrency: env.WORKER_CONCURRENCY, roles: models.roles(), hosts: models.hosts() });
  process.send?.({ type: 'ready', service: 'worker', pid: process.pid });
}

main().catch((error: unknown) => {
  console.error(`worker: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
