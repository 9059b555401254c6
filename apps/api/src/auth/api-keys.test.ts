/**
 * The registry on real files in a temp dir: authentication, grants, and what reloads (SIGHUP, the
 * file replaced or edited on disk, a bad file) do to the keys in force.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { ConfigError, type QuotaLimits } from '@mageagent/core';
import { ApiKeyRegistry, type ApiKeysChange, type ApiKeysLog } from './api-keys';
import { generateApiKey, generateWebhookSecret, sha256Hex } from '@mageagent/core';
import { presentedKeyOf } from './presented-key';
import { sleep, until } from '../test-support';

interface LogRecord {
  level: 'info' | 'warn' | 'error';
  message: string;
  fields: Record<string, unknown>;
}

/** Keeps what the registry logs, to check both what it says and that no secret is in it. */
class RecordingLog implements ApiKeysLog {
  readonly records: LogRecord[] = [];
  info(message: string, fields: Record<string, unknown>) {
    this.records.push({ level: 'info', message, fields });
  }
  warn(message: string, fields: Record<string, unknown>) {
    this.records.push({ level: 'warn', message, fields });
  }
  error(message: string, fields: Record<string, unknown>) {
    this.records.push({ level: 'error', message, fields });
  }
  errors(): LogRecord[] {
    return this.records.filter((record) => record.level === 'error');
  }
}

interface KeyLine {
  id: string;
  key: string;
  tenant?: string;
  scopes?: string;
  extra?: string;
}

/** A keys file listing the given keys (by their SHA-256), one flow mapping per entry. */
function keysFileText(keys: readonly KeyLine[], tail = ''): string {
  const lines = keys.map(
    ({ id, key, tenant = 'acme', scopes = '[tasks]', extra = '' }) =>
      `  - { id: ${id}, sha256: ${sha256Hex(key)}, tenant: ${tenant}, scopes: ${scopes}${extra} }`,
  );
  return `keys:\n${lines.join('\n')}\n${tail}`;
}

const DEFAULT_LIMITS: QuotaLimits = { requestsPerMinute: 120, maxActiveTasks: 10, maxPromptBytes: 100_000 };

/** test-registry-process.ts running on a keys file: a registry a test can send real signals. */
class RegistryProcess {
  readonly child: ChildProcessWithoutNullStreams;
  logged = '';
  private answers: string[] = [];
  private readonly waiting: Array<(line: string) => void> = [];

  constructor(keysFile: string) {
    this.child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'test-registry-process.ts'), keysFile], { cwd: REPO_ROOT });
    this.child.stderr.on('data', (chunk: Buffer) => (this.logged += chunk.toString()));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const waiter = this.waiting.shift();
      if (waiter) waiter(line);
      else this.answers.push(line);
    });
  }

  private nextLine(): Promise<string> {
    const line = this.answers.shift();
    return line === undefined ? new Promise((resolve) => this.waiting.push(resolve)) : Promise.resolve(line);
  }

  async ready(): Promise<void> {
    expect(await this.nextLine()).toBe('ready');
  }

  /** The id of the key's entry, or `-`. */
  authenticate(key: string): Promise<string> {
    this.child.stdin.write(`${key}\n`);
    return this.nextLine();
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.kill('SIGTERM');
    await exited;
  }
}

const REPO_ROOT = path.resolve(__dirname, '../../../..');

let directory: string;
let file: string;
let log: RecordingLog;
const stops: Array<() => void> = [];
/** Every key and secret a test made: none may ever reach a log. */
const secrets: string[] = [];

function newKey(): string {
  const key = generateApiKey();
  secrets.push(key, sha256Hex(key));
  return key;
}

/** Replaces the file the way editors and `mv` do: a new file renamed over the old one. */
function replaceFile(text: string): void {
  const temporary = path.join(directory, `.keys.yaml.${process.hrtime.bigint()}`);
  writeFileSync(temporary, text);
  renameSync(temporary, file);
}

beforeEach(() => {
  directory = mkdtempSync(path.join(tmpdir(), 'api-keys-'));
  file = path.join(directory, 'keys.yaml');
  log = new RecordingLog();
  secrets.length = 0;
});

afterEach(() => {
  for (const stop of stops.splice(0)) stop();
  const logged = JSON.stringify(log.records);
  for (const secret of secrets) expect(logged).not.toContain(secret);
  rmSync(directory, { recursive: true, force: true });
});

describe('ApiKeyRegistry', () => {
  it('authenticates a key presented by Bearer or X-API-Key, and nothing else', () => {
    const key = newKey();
    writeFileSync(file, keysFileText([{ id: 'acme-ci', key }]));
    const registry = ApiKeyRegistry.load(file, log);
    expect(registry.size).toBe(1);
    expect(log.records).toEqual([{ level: 'info', message: 'API keys loaded', fields: { file, keys: 1, tenants: 1 } }]);

    for (const headers of [{ authorization: `Bearer ${key}` }, { 'x-api-key': key }]) {
      const presented = presentedKeyOf(headers);
      if (presented.status !== 'present') throw new Error(`not present: ${presented.status}`);
      expect(registry.authenticate(presented.key)?.id).toBe('acme-ci');
    }
    expect(registry.authenticate(newKey())).toBeUndefined();
    expect(registry.authenticate(sha256Hex(key))).toBeUndefined();
    expect(registry.authenticate('')).toBeUndefined();
    expect(registry.authenticate(`${key}x`)).toBeUndefined();
  });

  it('gives the principal and limits of a key, its own limits over the defaults', () => {
    const withApp = newKey();
    const plain = newKey();
    writeFileSync(
      file,
      keysFileText([
        { id: 'acme-ci', key: withApp, extra: ', app: ci, limits: { requestsPerMinute: 600, maxPromptBytes: 200000 }' },
        { id: 'beta-1', key: plain, tenant: 'beta' },
      ]),
    );
    const registry = ApiKeyRegistry.load(file, log);
    const acme = registry.authenticate(withApp)!;
    const beta = registry.authenticate(plain)!;

    expect(registry.principalOf(acme)).toEqual({ tenant: 'acme', app: 'ci', keyId: 'acme-ci', scopes: ['tasks'] });
    expect(registry.principalOf(beta)).toEqual({ tenant: 'beta', keyId: 'beta-1', scopes: ['tasks'] });
    expect(Object.isFrozen(registry.principalOf(beta))).toBe(true);
    expect(Object.isFrozen(acme) && Object.isFrozen(acme.scopes) && Object.isFrozen(acme.limits)).toBe(true);

    expect(registry.limitsOf(acme, DEFAULT_LIMITS)).toEqual({ requestsPerMinute: 600, maxActiveTasks: 10, maxPromptBytes: 200_000 });
    expect(registry.limitsOf(beta, DEFAULT_LIMITS)).toEqual(DEFAULT_LIMITS);
  });

  it("gives each tenant's webhook secret", () => {
    const secret = generateWebhookSecret();
    secrets.push(secret);
    writeFileSync(file, keysFileText([{ id: 'a', key: newKey() }], `tenants:\n  acme: { webhookSecret: "${secret}" }\n  beta: {}\n`));
    const registry = ApiKeyRegistry.load(file, log);
    expect(registry.webhookSecretOf('acme')).toBe(secret);
    expect(registry.webhookSecretOf('beta')).toBeUndefined();
    expect(registry.webhookSecretOf('gamma')).toBeUndefined();
    expect(log.records.filter((record) => record.level === 'warn').map((record) => record.message)).toEqual([
      'API keys file: tenants.beta has no key in keys (a misspelt tenant?)',
    ]);
  });

  it('fails fast on a bad file at start-up, naming the file and the field', () => {
    writeFileSync(
      file,
      keysFileText([
        { id: 'a', key: newKey() },
        { id: 'a', key: newKey() },
      ]),
    );
    expect(() => ApiKeyRegistry.load(file, log)).toThrow(new ConfigError(`${file}: invalid API keys file: keys[1] (id "a").id: is also the id of keys[0]`));
    expect(() => ApiKeyRegistry.load(path.join(directory, 'missing.yaml'), log)).toThrow(ConfigError);
  });

  it('applies a valid file on reload: added, revoked and changed keys, reported by id', () => {
    const [kept, revoked, changed, added] = [newKey(), newKey(), newKey(), newKey()];
    writeFileSync(
      file,
      keysFileText([
        { id: 'kept', key: kept },
        { id: 'revoked', key: revoked },
        { id: 'changed', key: changed },
      ]),
    );
    const registry = ApiKeyRegistry.load(file, log);
    const changes: ApiKeysChange[] = [];
    registry.onChange((change) => changes.push(change));

    writeFileSync(
      file,
      keysFileText([
        { id: 'kept', key: kept },
        { id: 'changed', key: changed, tenant: 'beta' },
        { id: 'added', key: added },
      ]),
    );
    const expectedChange = { added: ['added'], revoked: ['revoked'], changed: ['changed'] };
    expect(registry.reload()).toEqual({ status: 'applied', keys: 3, change: expectedChange });
    expect(changes).toEqual([expectedChange]);
    expect(registry.authenticate(revoked)).toBeUndefined();
    expect(registry.authenticate(added)?.id).toBe('added');
    expect(registry.authenticate(changed)?.tenant).toBe('beta');
    expect(log.records.at(-1)).toEqual({ level: 'info', message: 'API keys reloaded', fields: { file, trigger: 'reload', keys: 3, ...expectedChange } });

    // Nothing changed: no listener call.
    expect(registry.reload()).toMatchObject({ status: 'applied', change: { added: [], revoked: [], changed: [] } });
    expect(changes).toHaveLength(1);
  });

  it('keeps the keys in force when a reload meets an invalid file, and logs why', () => {
    const [first, second, third] = [newKey(), newKey(), newKey()];
    writeFileSync(
      file,
      keysFileText([
        { id: 'first', key: first },
        { id: 'second', key: second },
      ]),
    );
    const registry = ApiKeyRegistry.load(file, log);

    // A typo (a YAML one: a field given twice): no one is locked out, and neither the new key nor
    // the tenant change of the broken file applies.
    writeFileSync(
      file,
      keysFileText([
        { id: 'first', key: first, tenant: 'beta' },
        { id: 'second', key: second, extra: ', scopes: [tasks]' },
        { id: 'third', key: third },
      ]),
    );
    const outcome = registry.reload();
    expect(outcome).toMatchObject({ status: 'rejected', keys: 2, revoked: [] });
    expect(registry.authenticate(first)?.tenant).toBe('acme');
    expect(registry.authenticate(second)?.id).toBe('second');
    expect(registry.authenticate(third)).toBeUndefined();
    expect(log.errors()).toEqual([
      {
        level: 'error',
        message: 'API keys file rejected; keeping the keys in force but for those it no longer lists',
        fields: {
          file,
          trigger: 'reload',
          error: `${file}: not valid YAML or JSON at line 3, column 124: Map keys must be unique`,
          keys: 2,
          revoked: [],
        },
      },
    ]);
  });

  it('revokes a key an invalid file no longer lists, so a typo never keeps a revoked key alive', () => {
    const [first, second, third] = [newKey(), newKey(), newKey()];
    writeFileSync(
      file,
      keysFileText([
        { id: 'first', key: first },
        { id: 'second', key: second },
        { id: 'third', key: third },
      ]),
    );
    const registry = ApiKeyRegistry.load(file, log);
    const changes: ApiKeysChange[] = [];
    registry.onChange((change) => changes.push(change));

    // `second` removed, `third` commented out, and a typo (scopes: [task]) in what remains.
    const commentedOut = keysFileText([{ id: 'third', key: third }]).split('\n')[1];
    writeFileSync(file, `${keysFileText([{ id: 'first', key: first, scopes: '[task]' }])}#${commentedOut}\n`);
    expect(registry.reload()).toMatchObject({ status: 'rejected', keys: 1, revoked: ['second', 'third'] });
    expect(registry.authenticate(first)?.id).toBe('first');
    expect(registry.authenticate(second)).toBeUndefined();
    expect(registry.authenticate(third)).toBeUndefined();
    expect(changes).toEqual([{ added: [], revoked: ['second', 'third'], changed: [] }]);
    expect(log.errors().at(-1)?.fields).toMatchObject({ revoked: ['second', 'third'] });
    expect(log.errors().at(-1)?.fields.error).toContain('keys[0] (id "first").scopes.0: Invalid option');
  });

  it('never lets a revoked key back in through an invalid file', () => {
    const [first, second] = [newKey(), newKey()];
    writeFileSync(
      file,
      keysFileText([
        { id: 'first', key: first },
        { id: 'second', key: second },
      ]),
    );
    const registry = ApiKeyRegistry.load(file, log);
    writeFileSync(file, keysFileText([{ id: 'first', key: first }]));
    expect(registry.reload()).toMatchObject({ status: 'applied', change: { revoked: ['second'] } });

    writeFileSync(
      file,
      keysFileText([
        { id: 'first', key: first },
        { id: 'second', key: second, extra: ', bogus: 1' },
      ]),
    );
    expect(registry.reload()).toMatchObject({ status: 'rejected', keys: 1, revoked: [] });
    expect(registry.authenticate(second)).toBeUndefined();
  });

  it('keeps every key when the file is missing or empty (an editor midway), and says how to revoke them all', () => {
    const key = newKey();
    writeFileSync(file, keysFileText([{ id: 'a', key }]));
    const registry = ApiKeyRegistry.load(file, log);

    unlinkSync(file);
    expect(registry.reload()).toMatchObject({ status: 'rejected', keys: 1, revoked: [] });
    writeFileSync(file, '\n');
    expect(registry.reload()).toMatchObject({ status: 'rejected', keys: 1, revoked: [] });
    expect(registry.authenticate(key)?.id).toBe('a');
    expect(log.errors().map((record) => [record.message, record.fields.error])).toEqual([
      ['API keys file cannot be read; keeping the keys in force', `cannot read API keys file ${file}: ENOENT`],
      ['API keys file is empty; keeping the keys in force', `${file}: the API keys file is empty (write "keys: []" to revoke every key)`],
    ]);

    writeFileSync(file, 'keys: []\n');
    expect(registry.reload()).toMatchObject({ status: 'applied', keys: 0, change: { revoked: ['a'] } });
    expect(registry.authenticate(key)).toBeUndefined();
  });

  it('reloads on SIGHUP: a key removed from the file stops working without a restart', async () => {
    const [kept, revoked] = [newKey(), newKey()];
    writeFileSync(
      file,
      keysFileText([
        { id: 'kept', key: kept },
        { id: 'revoked', key: revoked },
      ]),
    );
    const registryProcess = new RegistryProcess(file);
    try {
      await registryProcess.ready();
      expect(await registryProcess.authenticate(revoked)).toBe('revoked');
      writeFileSync(file, keysFileText([{ id: 'kept', key: kept }]));
      expect(await registryProcess.authenticate(revoked)).toBe('revoked');

      registryProcess.child.kill('SIGHUP');
      await until(() => registryProcess.logged.includes('API keys reloaded'), 'the reload');
      expect(await registryProcess.authenticate(revoked)).toBe('-');
      expect(await registryProcess.authenticate(kept)).toBe('kept');
      const reloaded = registryProcess.logged.split('\n').find((line) => line.includes('API keys reloaded'));
      expect(JSON.parse(reloaded!)).toMatchObject({ trigger: 'SIGHUP', keys: 1, revoked: ['revoked'] });
      for (const secret of secrets) expect(registryProcess.logged).not.toContain(secret);
      expect(registryProcess.child.exitCode).toBeNull();
    } finally {
      await registryProcess.stop();
    }
  });

  it('reloads when the file is replaced on disk, and when it is edited in place', async () => {
    const [kept, revoked, added] = [newKey(), newKey(), newKey()];
    writeFileSync(
      file,
      keysFileText([
        { id: 'kept', key: kept },
        { id: 'revoked', key: revoked },
      ]),
    );
    const registry = ApiKeyRegistry.load(file, log);
    stops.push(registry.watch({ debounceMs: 50 }));

    replaceFile(keysFileText([{ id: 'kept', key: kept }]));
    await until(() => registry.authenticate(revoked) === undefined, 'the revoked key to stop working');
    expect(registry.authenticate(kept)?.id).toBe('kept');

    writeFileSync(
      file,
      keysFileText([
        { id: 'kept', key: kept },
        { id: 'added', key: added },
      ]),
    );
    await until(() => registry.authenticate(added) !== undefined, 'the added key to work');
    expect(log.records.filter((record) => record.message === 'API keys reloaded').map((record) => record.fields.trigger)).toEqual([
      'file change',
      'file change',
    ]);
  });

  it('ignores changes in the directory that leave the file as it was', async () => {
    const text = keysFileText([{ id: 'a', key: newKey() }]);
    writeFileSync(file, text);
    const registry = ApiKeyRegistry.load(file, log);
    stops.push(registry.watch({ debounceMs: 20 }));
    writeFileSync(path.join(directory, 'unrelated.txt'), 'x');
    replaceFile(text);
    await sleep(300);
    expect(log.records.map((record) => record.message)).toEqual(['API keys loaded']);
    // The watch was live all along: a real change is picked up.
    replaceFile('keys: []\n');
    await until(() => registry.size === 0, 'the emptied file to be applied');
  });

  it('follows a Kubernetes-style mount, where a symlinked directory is swapped', async () => {
    // keys.yaml -> ..data/keys.yaml, ..data -> v1; an update renames a new ..data link over the old one.
    const [kept, revoked] = [newKey(), newKey()];
    for (const [version, keys] of [
      [
        'v1',
        [
          { id: 'kept', key: kept },
          { id: 'revoked', key: revoked },
        ],
      ],
      ['v2', [{ id: 'kept', key: kept }]],
    ] as const) {
      mkdirSync(path.join(directory, version));
      writeFileSync(path.join(directory, version, 'keys.yaml'), keysFileText(keys));
    }
    symlinkSync('v1', path.join(directory, '..data'));
    symlinkSync('..data/keys.yaml', file);
    const registry = ApiKeyRegistry.load(file, log);
    stops.push(registry.watch({ debounceMs: 50 }));
    expect(registry.authenticate(revoked)?.id).toBe('revoked');

    symlinkSync('v2', path.join(directory, '..data_tmp'));
    renameSync(path.join(directory, '..data_tmp'), path.join(directory, '..data'));
    await until(() => registry.authenticate(revoked) === undefined, 'the revoked key to stop working');
    expect(registry.authenticate(kept)?.id).toBe('kept');
  });

  it('stops watching when asked: neither SIGHUP listener nor watch is left behind', async () => {
    const key = newKey();
    writeFileSync(file, keysFileText([{ id: 'a', key }]));
    const registry = ApiKeyRegistry.load(file, log);
    const listenersBefore = process.listenerCount('SIGHUP');
    const stop = registry.watch({ debounceMs: 20 });
    expect(process.listenerCount('SIGHUP')).toBe(listenersBefore + 1);
    stop();
    expect(process.listenerCount('SIGHUP')).toBe(listenersBefore);

    replaceFile('keys: []\n');
    await sleep(300);
    expect(registry.authenticate(key)?.id).toBe('a');
  });
});
