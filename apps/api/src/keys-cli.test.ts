/**
 * `npm run keys` as a real process: what `create` prints is a key and an entry that `check`, the
 * file schema and the registry all accept; bad command lines get the usage and exit code 2.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ApiKeyRegistry } from './auth/api-keys';
import { generateApiKey, generateWebhookSecret, parseApiKeysFile, sha256Hex } from '@mageagent/core';
import { DerivedWebhookSecrets } from '@mageagent/webhooks';

const REPO_ROOT = path.resolve(__dirname, '../../..');
const CLI = path.join(__dirname, 'keys-cli.ts');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node --import tsx apps/api/src/keys-cli.ts ...args`, as `npm run keys -- ...args` runs it. */
function runKeys(args: string[], options: { stdin?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const { API_KEYS_FILE: _inherited, ...env } = process.env;
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: REPO_ROOT, env: { ...env, ...options.env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.end(options.stdin ?? '');
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The key and the entry `create` printed. */
function createdKeyAndEntry(stdout: string): { key: string; entryYaml: string } {
  const key = /^ {2}(mak_[A-Za-z0-9_-]{43})$/m.exec(stdout)?.[1];
  const entryYaml = /^ {2}- id: [\s\S]*$/m.exec(stdout)?.[0];
  if (key === undefined || entryYaml === undefined) throw new Error(`unexpected output:\n${stdout}`);
  return { key, entryYaml };
}

let directory: string;
beforeEach(() => {
  directory = mkdtempSync(path.join(tmpdir(), 'keys-cli-'));
});
afterEach(() => rmSync(directory, { recursive: true, force: true }));

describe('npm run keys', () => {
  it('create prints a key once, then an entry holding its SHA-256 that check and the registry accept', async () => {
    const created = await runKeys(['create', '--tenant', 'acme', '--app', 'ci']);
    expect(created).toMatchObject({ code: 0, stderr: '' });
    const { key, entryYaml } = createdKeyAndEntry(created.stdout);
    expect(created.stdout.split(key)).toHaveLength(2);
    expect(created.stdout.indexOf('API key for tenant acme')).toBeLessThan(created.stdout.indexOf(key));
    expect(created.stdout.indexOf(key)).toBeLessThan(created.stdout.indexOf(entryYaml));

    const [entry] = parseYaml(entryYaml) as Array<Record<string, unknown>>;
    expect(entry).toEqual({ id: expect.stringMatching(/^acme-ci-[0-9a-f]{6}$/), sha256: sha256Hex(key), tenant: 'acme', app: 'ci', scopes: ['tasks'] });

    const file = path.join(directory, 'keys.yaml');
    writeFileSync(file, `keys:\n${entryYaml}\n`);
    const checked = await runKeys(['check', '--file', file]);
    expect(checked).toMatchObject({ code: 0, stderr: '' });
    expect(checked.stdout).toContain(`${file}: valid, 1 key of 1 tenant`);
    expect(checked.stdout).toMatch(new RegExp(`${entry!.id as string} +acme +ci +tasks +${sha256Hex(key).slice(0, 8)}… +defaults`));
    expect(checked.stdout).not.toContain(sha256Hex(key));

    const registry = ApiKeyRegistry.load(file, { info: () => undefined, warn: () => undefined, error: () => undefined });
    expect(registry.authenticate(key)?.id).toBe(entry!.id);
  });

  it('create takes scopes and an id', async () => {
    const created = await runKeys(['create', '--tenant', 'acme', '--scopes', 'tasks, admin', '--id', 'acme-ops']);
    expect(created.code).toBe(0);
    const { key, entryYaml } = createdKeyAndEntry(created.stdout);
    expect(parseYaml(entryYaml)).toEqual([{ id: 'acme-ops', sha256: sha256Hex(key), tenant: 'acme', scopes: ['tasks', 'admin'] }]);
  });

  it('hash prints the SHA-256 of a key given as an argument or on stdin', async () => {
    const key = generateApiKey();
    const [fromArgument, fromStdin] = await Promise.all([runKeys(['hash', key]), runKeys(['hash'], { stdin: `${key}\n` })]);
    expect(fromArgument).toEqual({ code: 0, stdout: `${sha256Hex(key)}\n`, stderr: '' });
    expect(fromStdin).toEqual({ code: 0, stdout: `${sha256Hex(key)}\n`, stderr: '' });
  });

  it('check reads API_KEYS_FILE, and refuses a bad file naming the field (exit 1)', async () => {
    const file = path.join(directory, 'keys.yaml');
    writeFileSync(file, `keys:\n  - { id: a, sha256: ${sha256Hex('a')}, tenant: acme, scopes: [tasks], limits: { maxActiveTasks: 0 } }\n`);
    const checked = await runKeys(['check'], { env: { API_KEYS_FILE: file } });
    expect(checked.code).toBe(1);
    expect(checked.stdout).toBe('');
    expect(checked.stderr).toContain(`${file}: invalid API keys file: keys[0] (id "a").limits.maxActiveTasks: Too small`);
  });

  it('webhook-secret prints a secret the keys file accepts', async () => {
    const printed = await runKeys(['webhook-secret', '--tenant', 'acme']);
    expect(printed.code).toBe(0);
    const tenantsSection = /^tenants:[\s\S]*$/m.exec(printed.stdout)?.[0];
    const { warnings } = parseApiKeysFile(`keys:\n  - { id: a, sha256: ${sha256Hex('a')}, tenant: acme, scopes: [tasks] }\n${tenantsSection}`, 'keys.yaml');
    expect(warnings).toEqual([]);
  });

  it('webhook-secret --derived prints the secret a tenant without its own is signed with: the one the workers derive', async () => {
    const master = 'm'.repeat(40);
    const printed = await runKeys(['webhook-secret', '--tenant', 'acme', '--derived'], { env: { WEBHOOK_SECRET: master } });
    expect(printed.code).toBe(0);
    const secret = /^ {2}(whsec_\S+)$/m.exec(printed.stdout)?.[1];
    expect(secret).toBe(new DerivedWebhookSecrets({ master }).secretFor('acme'));
    expect(secret).not.toBe(new DerivedWebhookSecrets({ master }).secretFor('globex'));
    // A tenant the keys file gives a secret of its own is signed with that one: said on stderr.
    const dir = mkdtempSync(path.join(tmpdir(), 'keys-cli-'));
    try {
      const file = path.join(dir, 'keys.yaml');
      writeFileSync(
        file,
        `keys:\n  - { id: a, sha256: ${sha256Hex('a')}, tenant: acme, scopes: [tasks] }\ntenants:\n  acme:\n    webhookSecret: ${generateWebhookSecret()}\n`,
      );
      const overridden = await runKeys(['webhook-secret', '--tenant', 'acme', '--derived'], { env: { WEBHOOK_SECRET: master, API_KEYS_FILE: file } });
      expect(overridden.code).toBe(0);
      expect(overridden.stderr).toContain(`keys: ${file} gives tenant "acme" a webhookSecret of its own`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const withoutMaster = await runKeys(['webhook-secret', '--tenant', 'acme', '--derived'], { env: { WEBHOOK_SECRET: '' } });
    expect(withoutMaster.code).toBe(2);
    expect(withoutMaster.stderr).toContain('webhook-secret --derived needs WEBHOOK_SECRET');
  });

  it('answers a bad command line with the usage and exit code 2, and prints no key', async () => {
    const commandLines: Array<[string[], string]> = [
      [[], 'keys: no command given'],
      [['rotate'], 'keys: unknown command "rotate"'],
      [['create'], 'keys: create needs --tenant'],
      [['create', '--tenant', 'a b'], 'keys: --tenant: must be 1 to 64 characters of A-Z a-z 0-9 _ . -'],
      [['create', '--tenant', 'acme', '--scopes', 'tasks,root'], 'keys: --scopes: Invalid option: expected one of "tasks"|"admin"'],
      [['create', '--tenant', 'acme', '--scopes', ''], 'keys: --scopes: Invalid option'],
      [['create', '--tenant', 'acme', '--tenants', 'x'], "keys: Unknown option '--tenants'"],
      [['create', '--tenant'], "keys: Option '--tenant <value>' argument missing"],
      [['hash', 'a', 'b'], 'keys: hash takes one key'],
      [['hash'], 'keys: hash needs a key, as an argument or on stdin'],
      [['check'], 'keys: check needs --file, or API_KEYS_FILE set'],
    ];
    // One at a time: a burst of processes would starve the timing-sensitive suites jest runs alongside.
    for (const [args, message] of commandLines) {
      const run = await runKeys(args);
      expect({ args, code: run.code, stdout: run.stdout }).toEqual({ args, code: 2, stdout: '' });
      expect(run.stderr).toContain(message);
      expect(run.stderr).toContain('usage: npm run keys -- <command>');
    }
  }, 120_000);
});
