import { intEnv, parseEnv, PatternsEnv, RedisEnv, z } from '@mageagent/core';
import { DEFAULT_JOB_RETENTION } from '@mageagent/tasks';
import { CorsOriginsSchema } from './middleware/security-headers';

export const ApiEnvSchema = z.object({
  ...RedisEnv,
  ...PatternsEnv,
  /** HTTP port of the api (0 = any free port, reported to a parent process). */
  PORT: intEnv(3457, 0, 65535),
  /**
   * Interface to listen on. Loopback by default: in open mode (no API_KEYS_FILE) anyone who can
   * reach the port may use it, so another interface needs keys or ALLOW_OPEN_MODE=true.
   */
  HOST: z.string().min(1).default('127.0.0.1'),
  /** A YAML or JSON file of API keys (see `npm run keys`); unset = open mode: one tenant, every scope. */
  API_KEYS_FILE: z.string().min(1).optional(),
  /** Set to "true" to serve open mode (no keys) on an interface other than loopback. */
  ALLOW_OPEN_MODE: z
    .enum(['true', 'false'])
    .default('false')
    .transform((value) => value === 'true'),
  /**
   * Requests one key may make per minute, across every replica (0 = no limit). A key's `limits`
   * override the QUOTA_* defaults; keys that set none share these. 0 by default, as LiteLLM's
   * keys: an operator who shares the service sets them (the Compose and Kubernetes files do).
   */
  QUOTA_REQUESTS_PER_MINUTE: intEnv(0, 0),
  /** Tasks one key may have queued or running at once (0 = no limit). */
  QUOTA_MAX_ACTIVE_TASKS: intEnv(0, 0),
  /** Largest prompt (the messages' text, UTF-8 bytes) one task may carry. */
  QUOTA_MAX_PROMPT_BYTES: intEnv(1_048_576, 1),
  /**
   * New tasks are refused (503 QUEUE_FULL, Retry-After) while this many wait in the queue (0 = no
   * bound), like Ollama's OLLAMA_MAX_QUEUE: better refused now than run hours late.
   */
  MAX_QUEUED_TASKS: intEnv(10_000, 0),
  /**
   * The workers' master webhook secret: with neither it nor a tenant's own secret in the keys file,
   * a task asking for a webhook is refused (400), as nothing could sign its delivery.
   */
  WEBHOOK_SECRET: z
    .string()
    .optional()
    .transform((value) => (value === '' ? undefined : value)),
  /** Set to "true" to accept webhook URLs on loopback and private addresses (as the workers' setting). */
  WEBHOOK_ALLOW_PRIVATE: z
    .enum(['true', 'false'])
    .default('false')
    .transform((value) => value === 'true'),
  /** Largest request body accepted, in bytes; larger bodies get 413. */
  BODY_LIMIT_BYTES: intEnv(1_048_576, 1024),
  /**
   * Longest a client may take to send a whole request (headers and body); then 408 and the
   * connection is closed. Responses are not bounded by it: SSE streams and waiting /v1 calls go on.
   */
  REQUEST_TIMEOUT_MS: intEnv(30_000, 1_000, 600_000),
  /** Interval of `: ping` comments on open SSE streams. */
  SSE_PING_MS: intEnv(15_000, 100),
  /** How long a task record and its events are kept after their last change. */
  TASK_RETENTION_SECONDS: intEnv(86_400, 60),
  /** How many times a task's job is started in all (restarts after a crashed worker count). */
  TASK_ATTEMPTS: intEnv(3, 1, 20),
  /**
   * OpenAI facade: a streaming chat call that has sent nothing for this long gets a `: keep-alive`
   * comment, so proxies and clients with idle timeouts do not cut it while a step is quiet.
   */
  OPENAI_KEEPALIVE_MS: intEnv(5_000, 100),
  /** Model config (YAML/JSON) the workers use, for GET /hosts; unset = config/models.sim.yaml. */
  MODELS_CONFIG: z.string().optional(),
  /** Socket.io: most tasks one socket may follow at once. */
  SOCKET_MAX_SUBSCRIPTIONS: intEnv(100, 1),
  /**
   * A Redis command of a request that has no answer after this long fails, and the request is
   * answered 503 with Retry-After: while Redis hangs, clients hear so within twice this (a command
   * may wait for the auto-pipelined batch ahead of it) instead of waiting until they give up.
   * An unreachable Redis (connection refused or reset) fails commands at once anyway.
   */
  REDIS_COMMAND_TIMEOUT_MS: intEnv(400, 50, 60_000),
  /**
   * On SIGTERM: how long requests in flight get to finish after the api stops accepting and has
   * told open streams to reconnect, before it exits anyway.
   */
  SHUTDOWN_GRACE_MS: intEnv(10_000, 0),

  // Hardening. LOG_PROMPTS (prompts and outputs in the logs) is shared with the workers: see RedisEnv.
  /**
   * Browser origins whose pages may call the api and open Socket.io connections: comma-separated,
   * exact (`https://app.example.com,http://localhost:5173`). Empty (the default): no CORS header is
   * sent, so browsers on other origins are refused, and so are cross-origin socket handshakes.
   */
  CORS_ORIGINS: CorsOriginsSchema,
  /**
   * `Strict-Transport-Security` max-age in seconds; 0 (the default) sends none. Set it (a year is
   * 31536000) when browsers reach the api only over HTTPS, through a proxy that terminates TLS.
   */
  HSTS_MAX_AGE_SECONDS: intEnv(0, 0, 63_072_000),
  /** The access log: one JSON line per request, at info. "false" turns it off without hiding the rest of info. */
  ACCESS_LOG: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true'),

  // Metrics and the queue dashboard. GET /metrics, GET /queue/stats and /admin/queues on PORT need the admin scope.
  /**
   * A second listener serving only /metrics and /queue/stats, without credentials, for scrapers
   * and autoscalers that hold no API key. Unset or empty: none. 0 = any free port (logged).
   */
  METRICS_PORT: z.preprocess((value) => (value === '' ? undefined : value), z.coerce.number().int().min(0).max(65535).optional()),
  /** Interface of the METRICS_PORT listener: loopback by default (it has no authentication); 0.0.0.0 in a pod behind a NetworkPolicy. */
  METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  /** Queue counts (for /metrics and /queue/stats) are reused this long, so frequent scrapes cost Redis one count. */
  QUEUE_STATS_CACHE_MS: intEnv(2_000, 0, 60_000),
  /** Completed task jobs BullMQ keeps (for the dashboard); 0 = removed at once. The task records have their own retention. */
  JOB_RETENTION_COMPLETED_COUNT: intEnv(DEFAULT_JOB_RETENTION.completed.count, 0),
  /** Seconds a completed task job is kept; 0 = removed at once. */
  JOB_RETENTION_COMPLETED_AGE_SECONDS: intEnv(DEFAULT_JOB_RETENTION.completed.ageSeconds, 0),
  /** Failed task jobs BullMQ keeps; 0 = removed at once. */
  JOB_RETENTION_FAILED_COUNT: intEnv(DEFAULT_JOB_RETENTION.failed.count, 0),
  /** Seconds a failed task job is kept; 0 = removed at once. */
  JOB_RETENTION_FAILED_AGE_SECONDS: intEnv(DEFAULT_JOB_RETENTION.failed.ageSeconds, 0),
});
export type ApiEnv = z.infer<typeof ApiEnvSchema>;

export const loadApiEnv = (env: NodeJS.ProcessEnv = process.env): ApiEnv => parseEnv(ApiEnvSchema, env);
