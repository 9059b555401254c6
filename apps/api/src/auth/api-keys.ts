import { watch as watchPath, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { ConfigError, type Principal, type QuotaLimits } from '@mageagent/core';
import { parseApiKeysFile, readKeysText, sha256Hex, type ApiKeyEntry, type ApiKeysFile, type ParsedApiKeysFile } from '@mageagent/core';
import { MAX_PRESENTED_KEY_CHARS } from './presented-key';

/**
 * Where the registry reports loads, reloads and rejected files. The api's winston logger fits.
 * Nothing logged ever holds a key, a digest or a webhook secret: keys are named by their id.
 */
export interface ApiKeysLog {
  info(message: string, fields: Record<string, unknown>): unknown;
  warn(message: string, fields: Record<string, unknown>): unknown;
  error(message: string, fields: Record<string, unknown>): unknown;
}

/** What a reload changed, by key id. */
export interface ApiKeysChange {
  /** Keys that work now and did not before. */
  added: string[];
  /** Keys that worked before and no longer do. Holders of connections authenticated with them should be cut off. */
  revoked: string[];
  /** Keys that still work but with another id, tenant, app, scopes or limits. */
  changed: string[];
}

/**
 * What `reload()` did:
 * - `applied`: the file was valid and is now in force;
 * - `unchanged`: (file-change reloads only) the file's text is the one last read;
 * - `rejected`: the file was unreadable, empty or invalid; the previous keys stay in force except
 *   the `revoked` ones, which the invalid file no longer lists (see ApiKeyRegistry.reload).
 */
export type ApiKeysReloadOutcome =
  | { status: 'applied'; keys: number; change: ApiKeysChange }
  | { status: 'unchanged'; keys: number }
  | { status: 'rejected'; keys: number; error: ConfigError; revoked: string[] };

export interface ApiKeysWatchOptions {
  /** Quiet time after the last change in the file's directory before it is read again (default 200 ms). */
  debounceMs?: number;
}

/** The keys in force: by SHA-256 digest, and each tenant's webhook secret. */
interface KeySet {
  byDigest: ReadonlyMap<string, ApiKeyEntry>;
  webhookSecrets: ReadonlyMap<string, string>;
}

/**
 * The API keys of a keys file (API_KEYS_FILE), authenticated by their SHA-256 and kept current:
 * `watch()` re-reads the file on SIGHUP and when it changes on disk, so a key removed from the file
 * stops working without a restart. `load` fails fast on a bad file; a bad file met by a reload never
 * locks everyone out (see `reload`).
 */
export class ApiKeyRegistry {
  private keys: KeySet;
  /** The text of the file as last read, so a change event that changed nothing does nothing. */
  private lastText: string;
  private readonly listeners = new Set<(change: ApiKeysChange) => void>();

  private constructor(
    /** The keys file, as given. */
    readonly file: string,
    parsed: ParsedApiKeysFile,
    text: string,
    private readonly log: ApiKeysLog,
  ) {
    this.keys = keySetOf(parsed.file);
    this.lastText = text;
  }

  /** Reads and validates the keys file; throws a ConfigError naming the file and each bad field. */
  static load(file: string, log: ApiKeysLog): ApiKeyRegistry {
    const text = readKeysText(file);
    const parsed = parseApiKeysFile(text, file);
    const registry = new ApiKeyRegistry(file, parsed, text, log);
    registry.logWarnings(parsed.warnings);
    log.info('API keys loaded', { file, keys: registry.size, tenants: registry.tenantCount() });
    return registry;
  }

  /** How many keys are in force. */
  get size(): number {
    return this.keys.byDigest.size;
  }

  /**
   * The entry of a presented key, or undefined for a key nobody issued or one since revoked.
   *
   * The lookup compares SHA-256 digests, never keys, so its timing (string comparison, hash-table
   * probing) can at most tell an attacker something about the digest of a key they chose, and so
   * about the stored digests. That is harmless: a digest is not a credential, and going from a
   * digest back to a 256-bit random key is a preimage attack on SHA-256. A constant-time compare
   * would protect nothing that needs it here.
   */
  authenticate(presented: string): ApiKeyEntry | undefined {
    if (presented.length === 0 || presented.length > MAX_PRESENTED_KEY_CHARS) return undefined;
    return this.keys.byDigest.get(sha256Hex(presented));
  }

  /** Who a request made with this key is. */
  principalOf(entry: ApiKeyEntry): Principal {
    const principal: Principal = { tenant: entry.tenant, keyId: entry.id, scopes: entry.scopes };
    if (entry.app !== undefined) principal.app = entry.app;
    return Object.freeze(principal);
  }

  /** The key's limits: its own where the file sets them, the deployment's defaults elsewhere. */
  limitsOf(entry: ApiKeyEntry, defaults: QuotaLimits): QuotaLimits {
    return {
      requestsPerMinute: entry.limits?.requestsPerMinute ?? defaults.requestsPerMinute,
      maxActiveTasks: entry.limits?.maxActiveTasks ?? defaults.maxActiveTasks,
      maxPromptBytes: entry.limits?.maxPromptBytes ?? defaults.maxPromptBytes,
    };
  }

  /** The tenant's webhook signing secret (`whsec_…`), if the file gives it one. */
  webhookSecretOf(tenant: string): string | undefined {
    return this.keys.webhookSecrets.get(tenant);
  }

  /** Calls `listener` after every reload that added, revoked or changed a key; returns the unsubscribe. */
  onChange(listener: (change: ApiKeysChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Re-reads the file. A valid file replaces the keys in force. Otherwise the keys in force stay,
   * so a typo never locks everyone out, with one exception that keeps a typo from keeping a
   * revoked key alive: a key whose SHA-256 no longer appears in the file (outside `#` comments)
   * is revoked even though the file is invalid. Removing a key is how keys are revoked, usually in
   * a hurry because one leaked, and the hurry is when typos happen. So a failed reload can only
   * ever take keys away, never add one back or change one's tenant, scopes or limits; and since it
   * starts from the keys in force, a key revoked by an earlier reload stays revoked.
   *
   * A file that cannot be read, or is empty, says nothing about any key (an editor may be midway
   * through replacing it): everything stays. To revoke every key, write `keys: []`.
   */
  reload(): ApiKeysReloadOutcome {
    return this.reloadFromDisk('reload', false);
  }

  /**
   * Reloads on SIGHUP and whenever something changes in the file's directory. The directory, not
   * the file, is watched: editors and `mv` replace the file (a new inode a file watch would miss),
   * and Kubernetes swaps a symlinked directory under mounted ConfigMaps and Secrets. Changes are
   * debounced, and a change that leaves the file's text as it was does nothing. Returns the stop
   * function; neither the watch nor the signal handler keeps the process alive.
   */
  watch(options: ApiKeysWatchOptions = {}): () => void {
    const debounceMs = options.debounceMs ?? 200;
    const onHangup = () => this.reloadLoggingFailures('SIGHUP', false);
    process.on('SIGHUP', onHangup);

    let timer: NodeJS.Timeout | undefined;
    let watcher: FSWatcher | undefined;
    try {
      watcher = watchPath(path.dirname(path.resolve(this.file)), { persistent: false }, () => {
        clearTimeout(timer);
        timer = setTimeout(() => this.reloadLoggingFailures('file change', true), debounceMs);
        timer.unref();
      });
      watcher.on('error', (error) => this.log.error('API keys file: watching stopped; reload with SIGHUP', { file: this.file, error: error.message }));
    } catch (error) {
      // Out of inotify watches, or a filesystem without change events: SIGHUP still works.
      this.log.error('API keys file cannot be watched; reload with SIGHUP', { file: this.file, error: (error as Error).message });
    }
    return () => {
      process.off('SIGHUP', onHangup);
      clearTimeout(timer);
      watcher?.close();
    };
  }

  /** For the signal and the watch: a bug in a reload must not take the api down with it. */
  private reloadLoggingFailures(trigger: string, onlyIfChanged: boolean): void {
    try {
      this.reloadFromDisk(trigger, onlyIfChanged);
    } catch (error) {
      this.log.error('API keys reload failed; keeping the keys in force', { file: this.file, trigger, error: (error as Error).message });
    }
  }

  private reloadFromDisk(trigger: string, onlyIfChanged: boolean): ApiKeysReloadOutcome {
    let text: string;
    try {
      text = readKeysText(this.file);
    } catch (error) {
      return this.keepAll(trigger, error as ConfigError, 'cannot be read');
    }
    if (onlyIfChanged && text === this.lastText) return { status: 'unchanged', keys: this.size };
    this.lastText = text;
    if (text.trim() === '') {
      return this.keepAll(trigger, new ConfigError(`${this.file}: the API keys file is empty (write "keys: []" to revoke every key)`), 'is empty');
    }

    let parsed: ParsedApiKeysFile;
    try {
      parsed = parseApiKeysFile(text, this.file);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      return this.keepListed(trigger, error, text);
    }
    const next = keySetOf(parsed.file);
    const change = changeBetween(this.keys.byDigest, next.byDigest);
    this.keys = next;
    this.logWarnings(parsed.warnings);
    this.log.info('API keys reloaded', { file: this.file, trigger, keys: this.size, ...change });
    this.notify(change);
    return { status: 'applied', keys: this.size, change };
  }

  private keepAll(trigger: string, error: ConfigError, what: string): ApiKeysReloadOutcome {
    this.log.error(`API keys file ${what}; keeping the keys in force`, { file: this.file, trigger, error: error.message, keys: this.size });
    return { status: 'rejected', keys: this.size, error, revoked: [] };
  }

  /** A rejected file: the keys in force stay, but for those whose digest the file no longer lists. */
  private keepListed(trigger: string, error: ConfigError, text: string): ApiKeysReloadOutcome {
    const listed = digestsListedIn(text);
    const kept = new Map([...this.keys.byDigest].filter(([digest]) => listed.has(digest)));
    const change = changeBetween(this.keys.byDigest, kept);
    this.keys = { byDigest: kept, webhookSecrets: this.keys.webhookSecrets };
    this.log.error('API keys file rejected; keeping the keys in force but for those it no longer lists', {
      file: this.file,
      trigger,
      error: error.message,
      keys: this.size,
      revoked: change.revoked,
    });
    this.notify(change);
    return { status: 'rejected', keys: this.size, error, revoked: change.revoked };
  }

  private notify(change: ApiKeysChange): void {
    if (change.added.length + change.revoked.length + change.changed.length === 0) return;
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch (error) {
        this.log.error('API keys change listener failed', { file: this.file, error: (error as Error).message });
      }
    }
  }

  private logWarnings(warnings: readonly string[]): void {
    for (const warning of warnings) this.log.warn(`API keys file: ${warning}`, { file: this.file });
  }

  private tenantCount(): number {
    return new Set([...this.keys.byDigest.values()].map((entry) => entry.tenant)).size;
  }
}

/** Entries frozen, so no caller can change a key's grant in place. */
function keySetOf(file: ApiKeysFile): KeySet {
  const byDigest = new Map<string, ApiKeyEntry>();
  for (const entry of file.keys) {
    Object.freeze(entry.scopes);
    if (entry.limits) Object.freeze(entry.limits);
    byDigest.set(entry.sha256, Object.freeze(entry));
  }
  const webhookSecrets = new Map<string, string>();
  for (const [tenant, settings] of Object.entries(file.tenants ?? {})) {
    if (settings.webhookSecret !== undefined) webhookSecrets.set(tenant, settings.webhookSecret);
  }
  return { byDigest, webhookSecrets };
}

/**
 * Every SHA-256 (64 hex digits standing alone) in the file's text outside comments, in lower case.
 * A `#` opens a comment at the start of a line or after white space, as in YAML; treating a `#`
 * inside a quoted string as a comment only ever drops digests, so errs towards revoking.
 */
function digestsListedIn(text: string): Set<string> {
  const digests = new Set<string>();
  for (const line of text.split('\n')) {
    const code = line.replace(/(^|\s)#.*$/, '');
    for (const match of code.matchAll(/(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])/g)) digests.add(match[0].toLowerCase());
  }
  return digests;
}

function changeBetween(before: ReadonlyMap<string, ApiKeyEntry>, after: ReadonlyMap<string, ApiKeyEntry>): ApiKeysChange {
  const change: ApiKeysChange = { added: [], revoked: [], changed: [] };
  for (const [digest, entry] of before) if (!after.has(digest)) change.revoked.push(entry.id);
  for (const [digest, entry] of after) {
    const previous = before.get(digest);
    if (previous === undefined) change.added.push(entry.id);
    else if (!sameGrant(previous, entry)) change.changed.push(entry.id);
  }
  return change;
}

function sameGrant(a: ApiKeyEntry, b: ApiKeyEntry): boolean {
  return (
    a.id === b.id &&
    a.tenant === b.tenant &&
    a.app === b.app &&
    a.scopes.join(',') === b.scopes.join(',') &&
    a.limits?.requestsPerMinute === b.limits?.requestsPerMinute &&
    a.limits?.maxActiveTasks === b.limits?.maxActiveTasks &&
    a.limits?.maxPromptBytes === b.limits?.maxPromptBytes
  );
}
