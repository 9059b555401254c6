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
export function logOptionsOf(env: {
  LOG_LEVEL: string;
  LOG_PROMPTS?: boolean | undefined;
  LOG_REDACT?: 'true' | 'false' | undefined;
}): { level: string; logPrompts: boolean; deprecations: string[] } {
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
export const intEnv = (defaultValue: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(defaultValue);

/** Pattern settings shared by the api (validation, GET /patterns) and the workers (running). */
export const PatternsEnv = {
  /** A YAML/JSON file declaring extra patterns (see config/patterns.example.yaml); unset = built-ins only. */
  PATTERNS_CONFIG: z.string().min(1).optional(),
  /** The pattern a request without `pattern` runs. */
  DEFAULT_PATTERN: z.string().min(1).default('auto'),
};
