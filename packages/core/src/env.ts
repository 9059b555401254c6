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

/** Env fields every process shares. */
export const RedisEnv = {
  /** Redis connection URL. */
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  /** Key prefix for every key this service writes (BullMQ's prefix too); lets several deployments share a Redis. */
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_.-]+$/, 'letters, digits and : _ . - only')
    .default('mageagent'),
  /** winston level: error, warn, info, http, verbose, debug, silly. */
  LOG_LEVEL: z.enum(['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly']).default('info'),
  /** Set to "false" to log prompts and outputs (development only). */
  LOG_REDACT: z
    .enum(['true', 'false'])
    .default('true')
    .transform((value) => value === 'true'),
};

/** A positive integer env var with a default. */
export const intEnv = (defaultValue: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(defaultValue);

/** Pattern settings shared by the api (validation, GET /patterns) and the workers (running). */
export const PatternsEnv = {
  /** A YAML/JSON file declaring extra patterns (see config/patterns.example.yaml); unset = built-ins only. */
  PATTERNS_CONFIG: z.string().min(1).optional(),
  /** The pattern a request without `pattern` runs. */
  DEFAULT_PATTERN: z.string().min(1).default('auto'),
};
