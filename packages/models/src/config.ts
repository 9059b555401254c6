import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError, z } from '@mageagent/core';

const TimeoutsSchema = z.strictObject({
  /** Time allowed for the server to answer with its first token (or whole answer when not streaming). */
  firstTokenMs: z.number().int().positive().default(120_000),
  /** Time allowed for one whole model call. */
  totalMs: z.number().int().positive().default(600_000),
});

/** Simulator-only settings for a role's model; ignored by real model servers. */
const SimModelSchema = z.strictObject({
  tokensPerSecond: z.number().positive().optional(),
  ttftMs: z.number().min(0).optional(),
  defaultTokens: z.number().int().positive().optional(),
});

export const RoleConfigSchema = z.strictObject({
  /** The model id the server expects in `model`. */
  model: z.string().min(1),
  /** Base URL of the OpenAI-compatible API, ending before `/chat/completions` (e.g. http://127.0.0.1:8080/v1). */
  endpoint: z.string().url(),
  /** The host (GPU machine) this model is resident on; must be declared under `hosts`. */
  host: z.string().min(1),
  memoryGB: z.number().min(0).default(0),
  contextLength: z.number().int().positive().default(32768),
  temperature: z.number().min(0).max(2).default(0.7),
  maxTokens: z.number().int().positive().default(2048),
  timeouts: TimeoutsSchema.default({ firstTokenMs: 120_000, totalMs: 600_000 }),
  /** Name of an environment variable holding the server's API key, if it wants one. */
  apiKeyEnv: z.string().optional(),
  /** Whether the server honours OpenAI `response_format` (`json_object` and `json_schema`); only then is it sent. */
  structuredOutput: z.boolean().default(false),
  sim: SimModelSchema.optional(),
});
export type RoleConfig = z.infer<typeof RoleConfigSchema>;

export const HostConfigSchema = z.strictObject({
  memoryGB: z.number().positive(),
  /** Memory kept free for the OS and KV caches. */
  headroomGB: z.number().min(0).default(0),
  /** Model calls allowed in flight on this host at once across the whole worker pool. */
  maxConcurrentGenerations: z.number().int().positive().default(1),
});
export type HostConfig = z.infer<typeof HostConfigSchema>;

export const ModelsConfigSchema = z
  .strictObject({
    hosts: z.record(z.string().min(1), HostConfigSchema),
    roles: z.record(z.string().min(1), RoleConfigSchema),
  })
  .superRefine((config, context) => {
    for (const [role, roleConfig] of Object.entries(config.roles)) {
      if (!(roleConfig.host in config.hosts)) {
        context.addIssue({
          code: 'custom',
          path: ['roles', role, 'host'],
          message: `host "${roleConfig.host}" is not declared under hosts`,
        });
      }
    }
    if (!('primary' in config.roles)) {
      context.addIssue({ code: 'custom', path: ['roles', 'primary'], message: 'a primary role is required' });
    }
  });
export type ModelsConfig = z.infer<typeof ModelsConfigSchema>;

/** Replaces `${NAME}` and `${NAME:-default}` with environment values, so one file serves many machines. */
export function interpolateEnv(text: string, env: NodeJS.ProcessEnv): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_match, name: string, fallback?: string) => {
    const value = env[name];
    if (value !== undefined && value !== '') return value;
    if (fallback !== undefined) return fallback;
    throw new ConfigError(`environment variable ${name} is referenced by the model config but not set`);
  });
}

/** Parses and validates a models config; errors name the source and the path of each bad field. */
export function parseModelsConfig(text: string, source: string, env: NodeJS.ProcessEnv = process.env): ModelsConfig {
  let raw: unknown;
  try {
    raw = parseYaml(interpolateEnv(text, env));
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`${source}: ${error.message}`);
    throw new ConfigError(`${source}: not valid YAML or JSON: ${(error as Error).message}`);
  }
  const parsed = ModelsConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`);
    throw new ConfigError(`${source}: invalid model config: ${problems.join('; ')}`, problems);
  }
  checkMemory(parsed.data, source);
  return parsed.data;
}

/** The distinct models resident on a host (roles sharing a model id share its memory) and their sum. */
export function hostMemory(config: ModelsConfig, hostName: string): { models: Map<string, number>; sumGB: number } {
  const models = new Map<string, number>();
  for (const role of Object.values(config.roles)) {
    if (role.host === hostName) models.set(role.model, role.memoryGB);
  }
  return { models, sumGB: [...models.values()].reduce((total, gb) => total + gb, 0) };
}

/** Refuses a config whose resident models do not fit their host's memory. */
function checkMemory(config: ModelsConfig, source: string): void {
  for (const [hostName, host] of Object.entries(config.hosts)) {
    const sum = hostMemory(config, hostName).sumGB;
    const budget = host.memoryGB - host.headroomGB;
    if (sum > budget) {
      throw new ConfigError(
        `${source}: models on host "${hostName}" need ${sum} GB but the host has ${host.memoryGB} GB minus ${host.headroomGB} GB headroom = ${budget} GB`,
      );
    }
  }
}

/** The repo's default config: every role served by the model simulator. */
export const DEFAULT_MODELS_CONFIG_PATH = path.resolve(__dirname, '../../../config/models.sim.yaml');

export function loadModelsConfig(path: string, env: NodeJS.ProcessEnv = process.env): ModelsConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read model config ${path}: ${(error as Error).message}`);
  }
  return parseModelsConfig(text, path, env);
}
