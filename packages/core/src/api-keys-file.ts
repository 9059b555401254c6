import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLError } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './errors';
import { Scopes, type QuotaLimits } from './identity';
import { API_KEY_PREFIX } from './key-material';

/** Env of the api that concerns keys; spread into the api's env schema. */
export const ApiKeysEnv = {
  /** The API keys file (YAML or JSON, see ApiKeysFileSchema); unset = open mode (no authentication). */
  API_KEYS_FILE: z.string().min(1).optional(),
};

/** Ids, tenants and apps: safe to put in logs, Redis keys and URLs as they are. */
const NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
const NAME_RULE = 'must be 1 to 64 characters of A-Z a-z 0-9 _ . -';
export const NameSchema = z.string().regex(NAME_PATTERN, NAME_RULE);

const SHA256_HEX_PATTERN = /^[0-9a-f]{64}$/;

/**
 * The key's SHA-256. A value that is a key itself gets its own message: the key is then in a file
 * that may be backed up, versioned or shared, and should be replaced, not only moved. Messages never
 * repeat the value.
 */
const Sha256Schema = z.string().superRefine((value, context) => {
  if (value.startsWith(API_KEY_PREFIX)) {
    context.addIssue({
      code: 'custom',
      message: `holds a key, not its SHA-256: store only \`npm run keys -- hash <key>\`, and treat that key as exposed (issue a new one)`,
    });
  } else if (!SHA256_HEX_PATTERN.test(value)) {
    context.addIssue({ code: 'custom', message: 'must be the SHA-256 of the key: 64 lowercase hex digits (npm run keys -- hash <key>)' });
  }
});

const PositiveIntSchema = z.number().int().positive();

/** A key's own limits; each one left out is the deployment's default. */
const LimitsOverrideSchema = z.strictObject({
  requestsPerMinute: PositiveIntSchema.optional(),
  maxActiveTasks: PositiveIntSchema.optional(),
  maxPromptBytes: PositiveIntSchema.optional(),
} satisfies Record<keyof QuotaLimits, z.ZodType>);
export type LimitsOverride = z.infer<typeof LimitsOverrideSchema>;

export const ApiKeyEntrySchema = z.strictObject({
  /** Shown in logs and on tasks instead of the key. */
  id: NameSchema,
  /** Hex SHA-256 of the key; the key itself is never stored. */
  sha256: Sha256Schema,
  tenant: NameSchema,
  /** The tenant's application the key belongs to, if it names one. */
  app: NameSchema.optional(),
  scopes: z
    .array(z.enum(Scopes))
    .min(1, `must list at least one of ${Scopes.join(', ')}`)
    .refine((scopes) => new Set(scopes).size === scopes.length, 'lists a scope twice'),
  limits: LimitsOverrideSchema.optional(),
});
export type ApiKeyEntry = z.infer<typeof ApiKeyEntrySchema>;

/** Decoded length bounds of a webhook secret, from the Standard Webhooks spec. */
const WEBHOOK_SECRET_MIN_BYTES = 24;
const WEBHOOK_SECRET_MAX_BYTES = 64;
const WEBHOOK_SECRET_PATTERN = /^whsec_([A-Za-z0-9+/]+={0,2})$/;

/** A Standard Webhooks signing secret, `whsec_<base64 of 24 to 64 bytes>`. Messages never repeat it. */
const WebhookSecretSchema = z.string().superRefine((value, context) => {
  const base64 = WEBHOOK_SECRET_PATTERN.exec(value)?.[1];
  // Re-encoding catches a truncated or mistyped secret that Buffer.from would decode leniently.
  const bytes = base64 === undefined ? undefined : Buffer.from(base64, 'base64');
  if (bytes === undefined || bytes.toString('base64') !== base64) {
    context.addIssue({ code: 'custom', message: 'must be whsec_ followed by base64 (npm run keys -- webhook-secret)' });
  } else if (bytes.length < WEBHOOK_SECRET_MIN_BYTES || bytes.length > WEBHOOK_SECRET_MAX_BYTES) {
    context.addIssue({
      code: 'custom',
      message: `must decode to ${WEBHOOK_SECRET_MIN_BYTES} to ${WEBHOOK_SECRET_MAX_BYTES} bytes (it has ${bytes.length})`,
    });
  }
});

const TenantSettingsSchema = z.strictObject({
  /** Signs this tenant's webhook deliveries; without one they go unsigned. */
  webhookSecret: WebhookSecretSchema.optional(),
});
export type TenantSettings = z.infer<typeof TenantSettingsSchema>;

export const ApiKeysFileSchema = z
  .strictObject({
    keys: z.array(ApiKeyEntrySchema),
    tenants: z.record(NameSchema, TenantSettingsSchema).optional(),
  })
  .superRefine((file, context) => {
    const firstWithId = new Map<string, number>();
    const firstWithDigest = new Map<string, number>();
    file.keys.forEach((entry, index) => {
      const sameId = firstWithId.get(entry.id);
      if (sameId === undefined) firstWithId.set(entry.id, index);
      else context.addIssue({ code: 'custom', path: ['keys', index, 'id'], message: `is also the id of keys[${sameId}]` });
      const sameDigest = firstWithDigest.get(entry.sha256);
      if (sameDigest === undefined) firstWithDigest.set(entry.sha256, index);
      else context.addIssue({ code: 'custom', path: ['keys', index, 'sha256'], message: `is the same key as keys[${sameDigest}]` });
    });
  });
export type ApiKeysFile = z.infer<typeof ApiKeysFileSchema>;

/** A valid keys file, and what in it is legal but probably not meant. */
export interface ParsedApiKeysFile {
  file: ApiKeysFile;
  warnings: string[];
}

/**
 * Parses and validates a keys file (YAML, or JSON, which YAML reads too). A bad file throws a
 * ConfigError naming the source and each bad field as `keys[2] (id "acme-ci").sha256`; no message
 * repeats a value of the file, so neither a key pasted by mistake nor a webhook secret reaches a log.
 */
export function parseApiKeysFile(text: string, source: string): ParsedApiKeysFile {
  let raw: unknown;
  try {
    // prettyErrors would quote the lines around a syntax error, which may hold a webhook secret.
    raw = parseYaml(text, { prettyErrors: false });
  } catch (error) {
    const where = error instanceof YAMLError ? ` at ${lineAndColumn(text, error.pos[0])}` : '';
    throw new ConfigError(`${source}: not valid YAML or JSON${where}: ${(error as Error).message}`);
  }
  const parsed = ApiKeysFileSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${describePath(issue.path, raw)}: ${issue.message}`);
    throw new ConfigError(`${source}: invalid API keys file: ${problems.join('; ')}`, problems);
  }
  return { file: parsed.data, warnings: warningsOf(parsed.data) };
}

/** Reads and parses a keys file; an unreadable file is a ConfigError naming it. */
export function readApiKeysFile(path: string): ParsedApiKeysFile {
  return parseApiKeysFile(readKeysText(path), path);
}

/** The text of a keys file, or a ConfigError naming it. */
export function readKeysText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read API keys file ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

function lineAndColumn(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return `line ${line}, column ${column}`;
}

/** `keys[2] (id "acme-ci").sha256`: the index always, the id when the entry has a readable one. */
function describePath(path: readonly PropertyKey[], raw: unknown): string {
  if (path.length === 0) return '(root)';
  const [section, index, ...rest] = path;
  if (section === 'keys' && typeof index === 'number') {
    const id = idAt(raw, index);
    const entry = id === undefined ? `keys[${index}]` : `keys[${index}] (id "${id}")`;
    return rest.length === 0 ? entry : `${entry}.${rest.map(String).join('.')}`;
  }
  // A name that is not a valid one could be anything (a secret pasted there included): not repeated.
  return path.map((part) => (typeof part === 'string' && !NAME_PATTERN.test(part) ? '(invalid name)' : String(part))).join('.');
}

function idAt(raw: unknown, index: number): string | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const keys = (raw as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) return undefined;
  const entry: unknown = keys[index];
  if (typeof entry !== 'object' || entry === null) return undefined;
  const id = (entry as { id?: unknown }).id;
  // Only an id that is a valid name: a malformed one could be anything, a key pasted there included.
  return typeof id === 'string' && NAME_PATTERN.test(id) ? id : undefined;
}

function warningsOf(file: ApiKeysFile): string[] {
  const warnings: string[] = [];
  if (file.keys.length === 0) warnings.push('no keys: every request will be refused');
  const tenantsWithKeys = new Set(file.keys.map((entry) => entry.tenant));
  for (const tenant of Object.keys(file.tenants ?? {})) {
    // Not an error: revoking a tenant's last key must not need a second edit to be accepted.
    if (!tenantsWithKeys.has(tenant)) warnings.push(`tenants.${tenant} has no key in keys (a misspelt tenant?)`);
  }
  return warnings;
}
