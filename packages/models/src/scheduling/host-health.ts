import type { Cluster, Redis } from 'ioredis';
import { Mutex } from 'redis-semaphore';
import { ConfigError, ModelUnavailableError, type Logger } from '@mageagent/core';
import type { ModelsConfig } from '../config';
import { HostLeases, type HostKeys } from './host-lease';

/** What the last probe of a host found; `unknown` until one ran (treated as up). */
export interface HostHealthRecord {
  status: 'up' | 'down' | 'unknown';
  /** When the probe ran (ISO 8601). */
  checkedAt?: string;
  /** Why the probe failed. */
  error?: string;
  /** How long the probe took. */
  latencyMs?: number;
  /** The probers' interval, so a reader can tell a stale record (no prober running). */
  intervalMs?: number;
  /** Why an inconclusive probe did not change the status. */
  note?: string;
}

/** What the host scheduler reads of host health. */
export interface HostHealthView {
  /** The error calls to the host fail with while it is down (as last read, at most a quarter interval ago). */
  unavailable(host: string): ModelUnavailableError | undefined;
  /** Called when a host turns down, with the error calls to it now fail with; returns an unsubscribe. */
  onDown(listener: (host: string, reason: ModelUnavailableError) => void): () => void;
}

/** Where to probe a host: an OpenAI-compatible `/models` of one of its servers. */
export interface HostProbeTarget {
  host: string;
  url: string;
  headers: Record<string, string>;
}

/** One probe target per host: `<endpoint>/models` of the first role on it, with that role's API key. */
export function probeTargetsFromConfig(config: ModelsConfig, env: NodeJS.ProcessEnv = process.env): HostProbeTarget[] {
  const targets = new Map<string, HostProbeTarget>();
  for (const [roleName, role] of Object.entries(config.roles)) {
    if (targets.has(role.host)) continue;
    const headers: Record<string, string> = {};
    if (role.apiKeyEnv !== undefined) {
      const key = env[role.apiKeyEnv];
      if (key === undefined || key === '') {
        throw new ConfigError(`role "${roleName}": environment variable ${role.apiKeyEnv} (apiKeyEnv) is not set`);
      }
      headers.authorization = `Bearer ${key}`;
    }
    targets.set(role.host, { host: role.host, url: `${role.endpoint.replace(/\/+$/, '')}/models`, headers });
  }
  return [...targets.values()];
}

export interface HostHealthOptions {
  redis: Redis | Cluster;
  prefix: string;
  /** Hosts to watch; a host without a target is read but never probed. */
  targets: HostProbeTarget[];
  /** A host is probed about this often, by one process of the whole deployment. */
  intervalMs: number;
  /** A probe slower than this fails. */
  timeoutMs: number;
  /** False for processes that only read health (the api). */
  probe: boolean;
  logger?: Logger;
}

/** Share of the interval between reads of the shared state (and chances to probe). */
const TICKS_PER_INTERVAL = 4;

/**
 * Host health, shared through Redis. Every process reads each host's record every quarter
 * interval; a process whose read finds a record older than the interval takes the host's probe
 * lock (redis-semaphore's Mutex: plain mutual exclusion is exactly what it gives), reads again
 * (another pod may just have probed), probes, writes and releases. So one pod probes a host per
 * interval, whatever the number of pods, and a dead pod's lock lapses after the probe timeout.
 */
export class HostHealth implements HostHealthView {
  private readonly leases: HostLeases;
  private readonly keys: HostKeys;
  private readonly records = new Map<string, HostHealthRecord>();
  private readonly listeners = new Set<(host: string, reason: ModelUnavailableError) => void>();
  private readonly hosts: string[];
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private ticking: Promise<void> | undefined;

  constructor(private readonly options: HostHealthOptions) {
    this.leases = new HostLeases(options.redis, options.prefix);
    this.keys = this.leases.keys;
    this.hosts = [...new Set(options.targets.map((target) => target.host))];
  }

  /** First read (and probe, if due) before resolving, so a host that is down is known from the start. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.tick();
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking;
  }

  current(host: string): HostHealthRecord {
    return this.records.get(host) ?? { status: 'unknown' };
  }

  unavailable(host: string): ModelUnavailableError | undefined {
    const record = this.records.get(host);
    return record?.status === 'down' ? downError(host, record) : undefined;
  }

  onDown(listener: (host: string, reason: ModelUnavailableError) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads every host's record from Redis now (tests and GET /hosts use it). */
  async refresh(): Promise<void> {
    if (this.hosts.length === 0) return;
    const values = await this.options.redis.mget(...this.hosts.map((host) => this.keys.health(host)));
    this.hosts.forEach((host, index) => {
      const record = parseRecord(values[index] ?? null);
      if (record !== undefined) this.update(host, record);
    });
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(
      () => {
        this.ticking = this.tick().finally(() => this.schedule());
      },
      Math.max(1, Math.floor(this.options.intervalMs / TICKS_PER_INTERVAL)),
    );
  }

  private async tick(): Promise<void> {
    try {
      await this.refresh();
      if (this.options.probe) await Promise.all(this.options.targets.map((target) => this.probeIfDue(target)));
    } catch (error) {
      this.options.logger?.warn('host health check failed', { error: String(error) });
    }
  }

  private isDue(record: HostHealthRecord | undefined): boolean {
    if (record?.checkedAt === undefined) return true;
    // A host that is down is probed every tick, not every interval: calls to it fail fast while
    // it is down, so the sooner its recovery is seen, the fewer tasks fail after it came back.
    const periodMs = record.status === 'down' ? this.options.intervalMs / TICKS_PER_INTERVAL : this.options.intervalMs;
    // Half a tick of slack, so a lone prober probes every period rather than every other.
    const slackMs = this.options.intervalMs / TICKS_PER_INTERVAL / 2;
    return Date.now() - Date.parse(record.checkedAt) >= periodMs - slackMs;
  }

  private async probeIfDue(target: HostProbeTarget): Promise<void> {
    if (!this.isDue(this.records.get(target.host))) return;
    const lock = new Mutex(this.options.redis, this.keys.probeLock(target.host), {
      lockTimeout: this.options.timeoutMs + 1000,
      acquireAttemptsLimit: 1,
      refreshInterval: 0,
    });
    if (!(await lock.tryAcquire())) return;
    try {
      const latest = parseRecord(await this.options.redis.get(this.keys.health(target.host)));
      if (latest !== undefined && !this.isDue(latest)) {
        this.update(target.host, latest);
        return;
      }
      const record = await this.probeUnlessBusy(target);
      // Kept a while after the last prober stops, then gone, so a retired deployment leaves nothing.
      const keepMs = Math.max(60_000, this.options.intervalMs * 10);
      await this.options.redis.set(this.keys.health(target.host), JSON.stringify(record), 'PX', keepMs);
      this.update(target.host, record);
    } finally {
      await lock.release();
    }
  }

  /**
   * A probe that times out while a call holds the host proves nothing: mlx_lm.server, for one,
   * handles one request at a time and answers the probe only after the generation. Marking
   * such a host down would fail every waiting call on a healthy, busy GPU.
   */
  private async probeUnlessBusy(target: HostProbeTarget): Promise<HostHealthRecord> {
    const { record, timedOut } = await this.probe(target);
    if (!timedOut || (await this.leases.inspect(target.host, 1)).leases.length === 0) return record;
    const { error: _error, ...rest } = record;
    return { ...rest, status: 'up', note: `${record.error ?? 'probe timed out'}, while a call held the host: inconclusive` };
  }

  /** GET `<endpoint>/models`: any 2xx is up; an error status, a refused connection or a timeout is down. */
  private async probe(target: HostProbeTarget): Promise<{ record: HostHealthRecord; timedOut: boolean }> {
    const startedAt = Date.now();
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.options.timeoutMs);
    const base = { checkedAt: new Date(startedAt).toISOString(), intervalMs: this.options.intervalMs };
    try {
      const response = await fetch(target.url, { headers: target.headers, signal: controller.signal });
      await response.arrayBuffer();
      const latencyMs = Date.now() - startedAt;
      if (response.ok) return { record: { status: 'up', ...base, latencyMs }, timedOut: false };
      return { record: { status: 'down', ...base, latencyMs, error: `${target.url} answered HTTP ${response.status}` }, timedOut: false };
    } catch (error) {
      const timedOut = controller.signal.aborted;
      const why = timedOut ? `no answer within ${this.options.timeoutMs} ms` : describeFetchError(error);
      return { record: { status: 'down', ...base, latencyMs: Date.now() - startedAt, error: `${target.url}: ${why}` }, timedOut };
    } finally {
      clearTimeout(timer);
    }
  }

  private update(host: string, record: HostHealthRecord): void {
    const previous = this.records.get(host);
    this.records.set(host, record);
    if (previous?.status === record.status) return;
    if (record.status === 'down') {
      this.options.logger?.warn('model host is down; calls to it fail fast until a probe succeeds', { host, error: record.error });
      const reason = downError(host, record);
      for (const listener of this.listeners) listener(host, reason);
    } else if (previous?.status === 'down') {
      this.options.logger?.info('model host is up again', { host });
    }
  }
}

function downError(host: string, record: HostHealthRecord): ModelUnavailableError {
  return new ModelUnavailableError(
    `host ${host} is down (probe at ${record.checkedAt ?? 'unknown'}: ${record.error ?? 'failed'}); failing fast until a probe succeeds`,
    { details: { host, health: record } },
  );
}

function parseRecord(text: string | null): HostHealthRecord | undefined {
  if (text === null) return undefined;
  try {
    const parsed = JSON.parse(text) as HostHealthRecord;
    return parsed.status === 'up' || parsed.status === 'down' ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** undici's `fetch failed` hides the useful part (ECONNREFUSED, ENOTFOUND) in `cause`. */
function describeFetchError(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return error instanceof Error ? error.message : String(error);
}
