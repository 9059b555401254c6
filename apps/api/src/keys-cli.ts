/**
 * `npm run keys -- <command>`: issue API keys and check keys files. Keys are printed once and
 * stored nowhere; the keys file only ever holds their SHA-256.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { stringify as yamlScalar } from 'yaml';
import { ConfigError, parseEnv, z } from '@mageagent/core';
import { deriveWebhookSecret } from '@mageagent/webhooks';
import {
  ApiKeyEntrySchema,
  ApiKeysEnv,
  generateApiKey,
  generateWebhookSecret,
  NameSchema,
  readApiKeysFile,
  sha256Hex,
  type ApiKeyEntry,
} from '@mageagent/core';

const USAGE = `usage: npm run keys -- <command>
  create --tenant <tenant> [--app <app>] [--scopes tasks,admin] [--id <id>]
                         print a new key (once) and the entry for the keys file
  hash [<key>]           print a key's SHA-256 (reads the key from stdin when not given)
  check [--file <path>]  validate a keys file (default: $API_KEYS_FILE) and summarise it
  webhook-secret [--tenant <tenant>]
                         print a new webhook signing secret (whsec_…) for the tenants section
  webhook-secret --tenant <tenant> --derived
                         print the secret the tenant's webhooks are signed with when the keys file
                         gives it none (derived from WEBHOOK_SECRET in the environment)`;

/** WEBHOOK_SECRET's shortest length, as the api and workers check it at start-up. */
const MIN_WEBHOOK_MASTER_SECRET_LENGTH = 32;

/** Exit codes: 0 done, 1 the keys file is invalid (or something else failed), 2 the command line is. */
const EXIT_INVALID_FILE = 1;
const EXIT_USAGE = 2;

/** A mistake on the command line: answered with the usage and exit code 2. */
class UsageError extends Error {
  override readonly name = 'UsageError';
}

interface Output {
  out(line: string): void;
  err(line: string): void;
}

const commands: Record<string, (args: string[], output: Output) => Promise<number> | number> = {
  create,
  hash,
  check,
  'webhook-secret': webhookSecret,
};

async function main(argv: string[], output: Output): Promise<number> {
  const [name, ...args] = argv;
  const command = name === undefined ? undefined : commands[name];
  try {
    if (command === undefined) throw new UsageError(name === undefined ? 'no command given' : `unknown command "${name}"`);
    return await command(args, output);
  } catch (error) {
    // parseArgs reports unknown options and missing values as TypeErrors with an ERR_PARSE_ARGS_ code.
    const isParseArgsError = (error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS_') ?? false;
    if (error instanceof UsageError || isParseArgsError) {
      output.err(`keys: ${(error as Error).message}`);
      output.err(USAGE);
      return EXIT_USAGE;
    }
    throw error;
  }
}

function create(args: string[], output: Output): number {
  const { values } = parseArgs({
    args,
    options: { tenant: { type: 'string' }, app: { type: 'string' }, scopes: { type: 'string' }, id: { type: 'string' } },
    strict: true,
    allowPositionals: false,
  });
  if (values.tenant === undefined) throw new UsageError('create needs --tenant');
  // The file's own schema, so whatever is printed is accepted there; the grant first, as the default id is made from it.
  const grant = checkedArguments(ApiKeyEntrySchema.pick({ tenant: true, app: true, scopes: true }), {
    tenant: values.tenant,
    app: values.app,
    scopes: (values.scopes ?? 'tasks').split(',').map((scope) => scope.trim()),
  });
  const key = generateApiKey();
  const entry = checkedArguments(ApiKeyEntrySchema, { id: values.id ?? defaultIdOf(grant.tenant, grant.app), sha256: sha256Hex(key), ...grant });
  output.out(`API key for tenant ${entry.tenant} (shown this once; it cannot be recovered, only replaced):`);
  output.out('');
  output.out(`  ${key}`);
  output.out('');
  output.out('Entry for the keys file (API_KEYS_FILE), under "keys:"; the api picks it up on SIGHUP or when the file changes:');
  output.out('');
  output.out(entryYaml(entry));
  return 0;
}

/** Options parsed with a schema of the keys file; a bad one is a UsageError naming the option. */
function checkedArguments<Schema extends z.ZodType>(schema: Schema, values: unknown): z.infer<Schema> {
  const parsed = schema.safeParse(values);
  if (parsed.success) return parsed.data;
  throw new UsageError(parsed.error.issues.map((issue) => `--${String(issue.path[0])}: ${issue.message}`).join('; '));
}

/** `acme-ci-3f9a2c`: readable, and unique enough that a second key for the same app (a rotation) gets its own id. */
function defaultIdOf(tenant: string, app: string | undefined): string {
  const base = app === undefined ? tenant : `${tenant}-${app}`;
  return `${base.slice(0, 57)}-${randomBytes(3).toString('hex')}`;
}

/** The entry as a YAML list item indented for `keys:`; scalars quoted where YAML would read them as something else. */
function entryYaml(entry: ApiKeyEntry): string {
  const scalar = (value: string) => yamlScalar(value).trimEnd();
  const lines = [`  - id: ${scalar(entry.id)}`, `    sha256: ${entry.sha256}`, `    tenant: ${scalar(entry.tenant)}`];
  if (entry.app !== undefined) lines.push(`    app: ${scalar(entry.app)}`);
  lines.push(`    scopes: [${entry.scopes.join(', ')}]`);
  return lines.join('\n');
}

async function hash(args: string[], output: Output): Promise<number> {
  const { positionals } = parseArgs({ args, options: {}, strict: true, allowPositionals: true });
  if (positionals.length > 1) throw new UsageError('hash takes one key');
  // From stdin, the key stays out of shell history and the process list.
  const key = positionals[0] ?? (process.stdin.isTTY ? undefined : (await readStdin()).trim());
  if (key === undefined || key === '') throw new UsageError('hash needs a key, as an argument or on stdin');
  output.out(sha256Hex(key));
  return 0;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function check(args: string[], output: Output): number {
  const { values } = parseArgs({ args, options: { file: { type: 'string' } }, strict: true, allowPositionals: false });
  const file = values.file ?? parseEnv(z.object(ApiKeysEnv)).API_KEYS_FILE;
  if (file === undefined) throw new UsageError('check needs --file, or API_KEYS_FILE set');
  let parsed: ReturnType<typeof readApiKeysFile>;
  try {
    parsed = readApiKeysFile(file);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    output.err(error.message);
    return EXIT_INVALID_FILE;
  }
  const { keys, tenants = {} } = parsed.file;
  const tenantNames = new Set(keys.map((entry) => entry.tenant));
  output.out(`${file}: valid, ${plural(keys.length, 'key')} of ${plural(tenantNames.size, 'tenant')}`);
  const rows = keys.map((entry) => [
    entry.id,
    entry.tenant,
    entry.app ?? '-',
    entry.scopes.join(','),
    // Enough to tell keys apart and match a `hash` output by eye; a full digest has no place in a summary.
    `${entry.sha256.slice(0, 8)}…`,
    limitsText(entry),
  ]);
  for (const line of table([['id', 'tenant', 'app', 'scopes', 'sha256', 'limits'], ...rows])) output.out(`  ${line}`);
  const withSecret = Object.entries(tenants)
    .filter(([, settings]) => settings.webhookSecret !== undefined)
    .map(([tenant]) => tenant);
  output.out(`webhook secrets: ${withSecret.length === 0 ? 'none' : withSecret.join(', ')}`);
  for (const warning of parsed.warnings) output.out(`warning: ${warning}`);
  return 0;
}

function limitsText(entry: ApiKeyEntry): string {
  const limits = Object.entries(entry.limits ?? {}).filter(([, value]) => value !== undefined);
  return limits.length === 0 ? 'defaults' : limits.map(([name, value]) => `${name}=${value}`).join(' ');
}

function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => row[column]?.length ?? 0))) ?? [];
  return rows.map((row) =>
    row
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd(),
  );
}

const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? '' : 's'}`;

function webhookSecret(args: string[], output: Output): number {
  const { values } = parseArgs({ args, options: { tenant: { type: 'string' }, derived: { type: 'boolean' } }, strict: true, allowPositionals: false });
  const tenant = values.tenant ?? '<tenant>';
  if (values.tenant !== undefined && !NameSchema.safeParse(values.tenant).success)
    throw new UsageError('--tenant: must be 1 to 64 characters of A-Z a-z 0-9 _ . -');
  if (values.derived) {
    // The secret the workers sign this tenant's webhooks with when the keys file gives it none.
    if (values.tenant === undefined) throw new UsageError('webhook-secret --derived needs --tenant');
    const master = process.env.WEBHOOK_SECRET;
    if (master === undefined || master.length < MIN_WEBHOOK_MASTER_SECRET_LENGTH) {
      throw new UsageError(`webhook-secret --derived needs WEBHOOK_SECRET (at least ${MIN_WEBHOOK_MASTER_SECRET_LENGTH} characters) in the environment`);
    }
    // The keys file's own secret for the tenant wins over the derived one (as the workers sign).
    const file = process.env.API_KEYS_FILE;
    if (file !== undefined && file !== '' && readApiKeysFile(file).file.tenants?.[values.tenant]?.webhookSecret !== undefined) {
      output.err(`keys: ${file} gives tenant "${values.tenant}" a webhookSecret of its own; its webhooks are signed with that one, not this`);
    }
    output.out(`Webhook signing secret of tenant "${values.tenant}", derived from WEBHOOK_SECRET, for the tenant, who verifies deliveries with it:`);
    output.out('');
    output.out(`  ${deriveWebhookSecret(master, values.tenant)}`);
    return 0;
  }
  output.out('Webhook signing secret, for the keys file (API_KEYS_FILE) and for the tenant, who verifies deliveries with it:');
  output.out('');
  output.out(`tenants:\n  ${tenant}:\n    webhookSecret: ${generateWebhookSecret()}`);
  return 0;
}

const consoleOutput: Output = { out: (line) => console.log(line), err: (line) => console.error(line) };

main(process.argv.slice(2), consoleOutput).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(`keys: ${(error as Error).message}`);
    process.exitCode = EXIT_INVALID_FILE;
  },
);
