/**
 * Test helpers for the scheduling tests (not exported by the package): a unique key prefix on
 * the real Redis, schedulers that each stand for a worker process, and clean-up.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { HostLeases } from './host-lease';
import { HostScheduler, type HostSchedulerOptions } from './host-scheduler';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function until(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Configured as the worker configures its connections: RESP2; a subscriber retries for ever. */
function newConnection(role: 'commands' | 'subscriber'): Redis {
  return new Redis(REDIS_URL, { protocol: 2, enableAutoPipelining: role === 'commands', maxRetriesPerRequest: role === 'commands' ? 3 : null });
}

export class SchedulingTestBed {
  readonly prefix = `test-hosts-${randomUUID().slice(0, 8)}`;
  readonly admin: Redis = newConnection('commands');
  readonly leases = new HostLeases(this.admin, this.prefix);
  private readonly connections: Redis[] = [];
  private readonly schedulers: HostScheduler[] = [];
  private hostCounter = 0;

  /** A host name no other test uses. */
  newHost(): string {
    return `gpu-${++this.hostCounter}`;
  }

  connection(role: 'commands' | 'subscriber' = 'commands'): Redis {
    const redis = newConnection(role);
    this.connections.push(redis);
    return redis;
  }

  /** One "worker process": its own commands and subscriber connections and its own scheduler. */
  async scheduler(hosts: Record<string, number>, options: Partial<HostSchedulerOptions> = {}): Promise<HostScheduler> {
    const scheduler = new HostScheduler({
      redis: this.connection(),
      subscriber: this.connection('subscriber'),
      prefix: this.prefix,
      hosts: Object.fromEntries(Object.entries(hosts).map(([name, limit]) => [name, { maxConcurrentGenerations: limit }])),
      leaseTtlMs: 2000,
      priorityAgingMs: 60_000,
      worker: `test:${this.schedulers.length}`,
      ...options,
    });
    await scheduler.start();
    this.schedulers.push(scheduler);
    return scheduler;
  }

  async waitersOn(host: string): Promise<number> {
    return (await this.leases.inspect(host, 1)).waiters;
  }

  /** Closes the schedulers started so far (after each test). */
  async closeSchedulers(): Promise<void> {
    await Promise.all(this.schedulers.splice(0).map((scheduler) => scheduler.close()));
  }

  /** Deletes every key of the prefix (and the health probe's `mutex:` locks) and closes every connection. */
  async close(): Promise<void> {
    await this.closeSchedulers();
    const keys = [...(await this.admin.keys(`${this.prefix}:*`)), ...(await this.admin.keys(`mutex:${this.prefix}:*`))];
    if (keys.length > 0) await this.admin.unlink(...keys);
    await Promise.all([...this.connections, this.admin].map((connection) => connection.quit().catch(() => undefined)));
  }
}
