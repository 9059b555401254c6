import { intEnv, parseEnv, PatternsEnv, RedisEnv, z } from '@mageagent/core';

export const WorkerEnvSchema = z.object({
  ...RedisEnv,
  ...PatternsEnv,
  /** Model config (YAML/JSON); unset = config/models.sim.yaml, every role on the simulator. */
  MODELS_CONFIG: z.string().optional(),
  /** Jobs this process runs at once. */
  WORKER_CONCURRENCY: intEnv(4, 1, 1000),
  /** Default wall-clock limit of a task, when the request sets no options.timeoutMs. */
  TASK_TIMEOUT_MS: intEnv(600_000, 100),
  /** Retries of a model call after a retryable error (5xx, 429, connection, timeout). */
  MODEL_RETRIES: intEnv(2, 0, 10),
  /** First backoff between model-call retries; doubles each time. */
  MODEL_RETRY_BASE_MS: intEnv(500, 0),
  /**
   * Longest Retry-After from a model server that a retry waits out (the wait is the larger of it and
   * the backoff). A server asking for longer fails the step at once, still retryable, so a rate-limited
   * or restarting server cannot park a task for the length of its own TASK_TIMEOUT_MS.
   */
  MODEL_RETRY_AFTER_MAX_MS: intEnv(30_000, 0),
  /** How long a task record and its events are kept after their last change. */
  TASK_RETENTION_SECONDS: intEnv(86_400, 60),
  /** How long token deltas are coalesced before they are written as one event. */
  DELTA_FLUSH_MS: intEnv(20, 0, 1000),
  /** Lock duration of a job; a crashed worker's job is taken over after about this long. */
  JOB_LOCK_MS: intEnv(10_000, 1000),
  /** Time a stopping worker gives its running tasks before handing them back to the queue. */
  SHUTDOWN_GRACE_MS: intEnv(10_000, 0),
  /**
   * A model call's lease on its GPU host (and a waiting call's place in the queue) lapses this long
   * after its worker stops renewing it; renewed every third of it. A worker killed mid-call blocks
   * its host for at most this long.
   */
  HOST_LEASE_TTL_MS: intEnv(10_000, 300),
  /**
   * Aging window of the host queue: each priority step (high, normal, low) is worth this much
   * waiting, so a low call that has waited twice this goes before newly arriving high ones.
   * 0 = arrival order only.
   */
  HOST_PRIORITY_AGING_MS: intEnv(60_000, 0),
  /** How often each host's server is probed (by one worker of the whole deployment, under a Redis lock). */
  HOST_HEALTH_INTERVAL_MS: intEnv(5_000, 50),
  /** A probe slower than this fails (unless the host is busy with a call: a single-threaded server may not answer then). */
  HOST_HEALTH_TIMEOUT_MS: intEnv(5_000, 50),

  // Webhooks: POSTed when a task that asked for one ends; their own queue, connections and concurrency.
  /** The API keys file (as the api's): the workers read its tenants' own webhook signing secrets. */
  API_KEYS_FILE: z.string().min(1).optional(),
  /**
   * Master secret from which each tenant's signing secret is derived (`whsec_` + base64 of
   * HMAC-SHA256(master, tenant)); at least 32 characters. Unset (or empty): webhooks cannot be signed,
   * and each is recorded on its task as a failed attempt instead of being sent.
   */
  WEBHOOK_SECRET: z.preprocess((value) => (value === '' ? undefined : value), z.string().min(32).optional()),
  /**
   * "true" lets webhooks reach loopback, private (RFC 1918, CGNAT), link-local and unique-local
   * addresses: development, tests, a receiver inside the same network. Cloud metadata addresses stay
   * refused. Off, such targets are refused after DNS resolution (SSRF).
   */
  WEBHOOK_ALLOW_PRIVATE: z
    .enum(['true', 'false'])
    .default('false')
    .transform((value) => value === 'true'),
  /** Attempts per webhook, the first included; a 2xx ends them. */
  WEBHOOK_ATTEMPTS: intEnv(6, 1, 30),
  /** Wait before a webhook's first retry; doubles each time (10 s: retries after 10, 20, 40, 80, 160 s). */
  WEBHOOK_BACKOFF_MS: intEnv(10_000, 0),
  /** One attempt's limit: connecting, sending and the receiver's status line (name resolution before it is bounded by the system resolver). */
  WEBHOOK_TIMEOUT_MS: intEnv(10_000, 100, 120_000),
  /** Webhook deliveries this process runs at once (apart from WORKER_CONCURRENCY's task slots). */
  WEBHOOK_CONCURRENCY: intEnv(10, 1, 1000),

  // Probes and metrics.
  /**
   * Port of the worker's health server (/healthz, /readyz, /metrics); unset or empty = no server
   * (a worker needs no port otherwise). 0 = any free port (logged).
   */
  HEALTH_PORT: z.preprocess((value) => (value === '' ? undefined : value), z.coerce.number().int().min(0).max(65535).optional()),
  /** Interface of the health server: loopback by default (it has no authentication); 0.0.0.0 in a pod. */
  HEALTH_HOST: z.string().min(1).default('127.0.0.1'),
});
export type WorkerEnv = z.infer<typeof WorkerEnvSchema>;

export const loadWorkerEnv = (env: NodeJS.ProcessEnv = process.env): WorkerEnv => parseEnv(WorkerEnvSchema, env);
