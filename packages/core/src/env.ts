import { z } from 'zod';
import { ConfigError } from './errors';

/**
 * Parses `process.env` (or the given record) with a zod schema once at start-up.
 * A bad variable throws a ConfigError whose message names every bad variable.
 */
export function parseEnv<Schema extends z.ZodType>(schema: Schema, env: NodeJS.ProcessEnv = process.env): z.infer<Schema> {
  const parsed = schema.safeParse(env);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
  throw new ConfigError(`invalid environment: ${problems.join('; ')}`, problems);
}

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/**
 * Letters, digits and `: _ . -`, with at most one non-empty `{…}` hash tag. Every key starts with
 * the prefix, so its first `{…}` is the hash tag of every key (Redis hashes only the first one).
 */
export const REDIS_PREFIX_PATTERN = /^[A-Za-z0-9:_.-]*(\{[A-Za-z0-9:_.-]+\})?[A-Za-z0-9:_.-]*$/;

/** Env fields every process shares. */
export const RedisEnv = {
  /**
   * One Redis node: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. Exclusive
   * with REDIS_SENTINELS and REDIS_CLUSTER_NODES (see `redisTopologyOf` in @mageagent/tasks).
   */
  REDIS_URL: z.string().url().default(DEFAULT_REDIS_URL),
  /** Sentinel mode: the Sentinels, `host:port,host:port`; they name the current master. */
  REDIS_SENTINELS: z.string().optional(),
  /** Sentinel mode: the master group name the Sentinels monitor. */
  REDIS_SENTINEL_NAME: z.string().min(1).default('mymaster'),
  /** Sentinel mode: the Sentinels' own password (`requirepass` of the sentinels), if they have one. */
  REDIS_SENTINEL_PASSWORD: z.string().optional(),
  /** Cluster mode: seed nodes, `host:port,host:port` (the rest of the cluster is discovered from them). */
  REDIS_CLUSTER_NODES: z.string().optional(),
  /** ACL user of the data nodes (Sentinel and Cluster mode; a single node takes it in REDIS_URL or here). */
  REDIS_USERNAME: z.string().optional(),
  /** Password of the data nodes (Sentinel and Cluster mode; a single node takes it in REDIS_URL or here). */
  REDIS_PASSWORD: z.string().optional(),
  /** "true": TLS to the data nodes in Sentinel and Cluster mode (a single node says so with `rediss://`). */
  REDIS_TLS: z
    .enum(['true', 'false'])
    .default('false')
    .transform((value) => value === 'true'),
  /** A PEM file of the CA(s) that signed the Redis servers' certificates (a private CA); unset: the system's CAs. */
  REDIS_TLS_CA_FILE: z.string().min(1).optional(),
  /**
   * Key prefix for every key this service writes (BullMQ's prefix too); lets several deployments
   * share a Redis. It may hold one hash tag, `{mageagent}`, which puts every key in one cluster
   * slot; Cluster mode requires it.
   */
  REDIS_PREFIX: z.string().min(1).regex(REDIS_PREFIX_PATTERN, 'letters, digits and : _ . - only, with at most one non-empty {hash tag}').default('mageagent'),
  /** winston level: error, warn, info, http, verbose, debug, silly. */
  LOG_LEVEL: z.enum(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly']).default('info'),
  /**
   * "true" writes prompts and outputs to the logs (development only). Credentials (authorization
   * headers, API keys, tokens, passwords, secrets) are redacted whatever it says.
   */
  LOG_PROMPTS: z
    .enum(['true', 'false'])
    .optional()
    .transform((value) => (value === undefined ? undefined : value === 'true')),
  /** Deprecated: "false" is read as LOG_PROMPTS=true (no longer as "log credentials too"). */
  LOG_REDACT: z.enum(['true', 'false']).optional(),
};

/** The log settings of an env parsed with `RedisEnv`'s fields, as `createLogger` takes them. */
export function logOptionsOf(env: { LOG_LEVEL: string; LOG_PROMPTS?: boolean | undefined; LOG_REDACT?: 'true' | 'false' | undefined }): {
  level: string;
  logPrompts: boolean;
  deprecations: string[];
} {
  const deprecations: string[] = [];
  if (env.LOG_REDACT !== undefined) {
    deprecations.push(
      env.LOG_PROMPTS === undefined
        ? `LOG_REDACT is deprecated: read as LOG_PROMPTS=${env.LOG_REDACT === 'false'}; credentials are redacted whatever it says`
        : 'LOG_REDACT is deprecated and ignored: LOG_PROMPTS is set',
    );
  }
  return { level: env.LOG_LEVEL, logPrompts: env.LOG_PROMPTS ?? env.LOG_REDACT === 'false', deprecations };
}

/** A positive integer env var with a default. */
export const intEnv = (defaultValue: number, min = 0, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max).default(defaultValue);

/** Pattern settings shared by the api (validation, GET /patterns) and the workers (running). */
export const PatternsEnv = {
  /** A YAML/JSON file declaring extra patterns (see config/patterns.example.yaml); unset = built-ins only. */
  PATTERNS_CONFIG: z.string().min(1).optional(),
  /** The pattern a request without `pattern` runs. */
  DEFAULT_PATTERN: z.string().min(1).default('auto'),
};
