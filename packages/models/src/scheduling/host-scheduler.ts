import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Cluster, Redis } from 'ioredis';
import { CancelledError, ConfigError, ModelUnavailableError, type Logger, type TaskPriority } from '@mageagent/core';
import { HostLeases, type LeaseOwner } from './host-lease';
import type { HostHealthView } from './host-health';

/** What the scheduler needs to know of each host. */
export interface ScheduledHost {
  /** Leases (model calls) allowed on the host at once, across every process. */
  maxConcurrentGenerations: number;
}

export interface HostSchedulerOptions {
  /** Commands connection (auto-pipelined is best); the lease scripts run here. */
  redis: Redis | Cluster;
  /**
   * The process's shared subscriber connection: grant messages for every host arrive on it and
   * fan out in-process, so waiting calls never open connections of their own.
   */
  subscriber: Redis | Cluster;
  prefix: string;
  hosts: Record<string, ScheduledHost>;
  /** A lease (or a place in the queue) lapses this long after its process stops renewing it. */
  leaseTtlMs: number;
  /** Each priority step is worth this much waiting: a low call that waited 2× this goes first. */
  priorityAgingMs: number;
  /** Names this process in GET /hosts (host:pid). */
  worker: string;
  /** When set, calls to a host it reports down fail fast, and so do calls waiting for it. */
  health?: HostHealthView;
  logger?: Logger;
}

/** What a model call asks for. */
export interface LeaseRequest {
  priority?: TaskPriority;
  /** The task the call is for. */
  owner?: string;
  /** Aborting leaves the queue at once and rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** One granted generation slot on a host; renewed in the background until released. */
export interface HostLease {
  readonly id: string;
  readonly host: string;
  /** Milliseconds from the request to the grant. */
  readonly waitMs: number;
  /**
   * Aborted, with a ModelUnavailableError as its reason, when the lease can no longer be
   * guaranteed (Redis says it is gone, or it could not be renewed within its TTL). The call
   * must stop: another process may already be using the slot.
   */
  readonly lost: AbortSignal;
  /** Gives the slot to the next waiter. Never rejects: a failed release lapses after the TTL. */
  release(): Promise<void>;
}

/** How often a waiter retries after a Redis error while it still has time. */
const ERROR_RETRY_MS = 100;

/**
 * Per-process side of the host lease: queues model calls for GPU hosts and hands each its
 * lease. A waiter learns it was granted from the grant channel (a release hands the slot over in
 * the same script, so the handoff costs one publish); its heartbeat doubles as a safety-net poll
 * for missed messages, and it polls again the moment the earliest lease on its host would
 * expire, so a holder that died frees the host after its TTL, not a poll interval later.
 */
export class HostScheduler {
  readonly leases: HostLeases;
  private readonly waiting = new Map<string, LeaseWaiter>();
  private readonly heartbeatMs: number;
  private started = false;
  private readonly onMessage = (channel: string, message: string): void => this.dispatch(channel, message);
  private readonly onSubscriberReady = (): void => {
    // Messages published while the subscriber was away are lost: poll everyone now.
    for (const waiter of this.waiting.values()) void this.poll(waiter);
  };
  private readonly stopWatchingHealth: (() => void) | undefined;

  constructor(private readonly options: HostSchedulerOptions) {
    this.leases = new HostLeases(options.redis, options.prefix);
    this.heartbeatMs = Math.max(1, Math.floor(options.leaseTtlMs / 3));
    this.stopWatchingHealth = options.health?.onDown((host, reason) => this.failWaiting(host, reason));
  }

  /** Subscribes to every host's grant channel; resolves once the subscriptions are active. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.options.subscriber.on('message', this.onMessage);
    this.options.subscriber.on('ready', this.onSubscriberReady);
    const channels = Object.keys(this.options.hosts).map((host) => this.leases.keys.grantChannel(host));
    if (channels.length > 0) await this.options.subscriber.subscribe(...channels);
  }

  /** Stops listening; waiting calls are rejected, held leases keep renewing until released. */
  async close(): Promise<void> {
    this.stopWatchingHealth?.();
    for (const waiter of [...this.waiting.values()]) this.leave(waiter, new CancelledError('host scheduler closed'));
    if (!this.started) return;
    this.started = false;
    this.options.subscriber.off('message', this.onMessage);
    this.options.subscriber.off('ready', this.onSubscriberReady);
    const channels = Object.keys(this.options.hosts).map((host) => this.leases.keys.grantChannel(host));
    if (channels.length > 0 && this.options.subscriber.status === 'ready') {
      await this.options.subscriber.unsubscribe(...channels).catch(() => undefined);
    }
  }

  /** Calls waiting in this process (for tests and metrics). */
  get waitingCount(): number {
    return this.waiting.size;
  }

  /**
   * Waits for a generation slot on `host`: served by priority, then arrival, with aging.
   * Rejects at once with the signal's reason on abort, and with ModelUnavailableError when the
   * host is (or goes) down.
   */
  acquire(host: string, request: LeaseRequest = {}): Promise<HostLease> {
    const limit = this.limitOf(host);
    const { signal } = request;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const down = this.downReason(host);
    if (down !== undefined) return Promise.reject(down);
    if (!this.started) return Promise.reject(new Error('HostScheduler.start() was not called'));
    return new Promise<HostLease>((resolve, reject) => {
      const waiter: LeaseWaiter = {
        id: randomUUID(),
        host,
        limit,
        owner: {
          ...(request.owner !== undefined && { owner: request.owner }),
          worker: this.options.worker,
          priority: request.priority ?? 'normal',
        },
        requestedAt: performance.now(),
        aliveSince: performance.now(),
        timer: undefined,
        settled: false,
        signal,
        onAbort: () => this.leave(waiter, signal === undefined ? new CancelledError() : abortReason(signal)),
        resolve,
        reject,
      };
      // Registered before the first script runs: its grant message may overtake the reply.
      this.waiting.set(waiter.id, waiter);
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      void this.poll(waiter);
    });
  }

  private limitOf(host: string): number {
    const config = this.options.hosts[host];
    if (config === undefined) {
      throw new ConfigError(`host "${host}" is not configured; known hosts: ${Object.keys(this.options.hosts).join(', ')}`);
    }
    return config.maxConcurrentGenerations;
  }

  private downReason(host: string): ModelUnavailableError | undefined {
    return this.options.health?.unavailable(host);
  }

  /** Enqueue or heartbeat; grants when at the head, else sleeps until the next heartbeat or expiry. */
  private async poll(waiter: LeaseWaiter): Promise<void> {
    if (waiter.settled) return;
    clearTimeout(waiter.timer);
    waiter.timer = undefined;
    const sentAt = performance.now();
    let outcome: Awaited<ReturnType<HostLeases['acquire']>>;
    try {
      outcome = await this.leases.acquire(waiter.host, waiter.id, {
        limit: waiter.limit,
        ttlMs: this.options.leaseTtlMs,
        agingMs: this.options.priorityAgingMs,
        owner: waiter.owner,
      });
    } catch (error) {
      if (waiter.settled) return;
      // Our place in the queue outlives a Redis blip shorter than the TTL; past that it is gone.
      if (performance.now() - waiter.aliveSince >= this.options.leaseTtlMs) {
        this.leave(waiter, error instanceof Error ? error : new Error(String(error)));
        return;
      }
      this.options.logger?.warn('host lease poll failed, retrying', { host: waiter.host, error: String(error) });
      this.pollLater(waiter, ERROR_RETRY_MS);
      return;
    }
    if (waiter.settled) return;
    waiter.aliveSince = sentAt;
    if (outcome.granted) {
      this.grant(waiter, false);
      return;
    }
    // Wake right after the earliest lease would lapse: if its holder died, the slot is free then.
    const untilExpiry = outcome.nextExpiryInMs === undefined ? Infinity : outcome.nextExpiryInMs + 1;
    this.pollLater(waiter, Math.min(this.heartbeatMs, untilExpiry));
  }

  /** One timer per waiter, even when polls overlap (a reconnect polls everyone at once). */
  private pollLater(waiter: LeaseWaiter, delayMs: number): void {
    clearTimeout(waiter.timer);
    waiter.timer = setTimeout(() => void this.poll(waiter), delayMs);
  }

  private dispatch(channel: string, message: string): void {
    if (this.leases.keys.hostOfGrantChannel(channel) === undefined) return;
    for (const id of message.split(' ')) {
      const waiter = this.waiting.get(id);
      // Granted by someone else's release: the expiry is our heartbeat deadline, so renew at once.
      if (waiter !== undefined) this.grant(waiter, true);
    }
  }

  private grant(waiter: LeaseWaiter, renewNow: boolean): void {
    if (!this.settle(waiter)) return;
    const down = this.downReason(waiter.host);
    const lease = new RenewedLease(this.leases, {
      id: waiter.id,
      host: waiter.host,
      limit: waiter.limit,
      ttlMs: this.options.leaseTtlMs,
      renewEveryMs: this.heartbeatMs,
      waitMs: Math.round(performance.now() - waiter.requestedAt),
      // Redis set the expiry at or after our last heartbeat's send time plus the TTL.
      validUntil: waiter.aliveSince + this.options.leaseTtlMs,
      logger: this.options.logger,
    });
    if (down !== undefined) {
      void lease.release();
      waiter.reject(down);
      return;
    }
    lease.start(renewNow);
    waiter.resolve(lease);
  }

  /** Leaves the queue at once; Redis is told in the background (or the entry lapses after the TTL). */
  private leave(waiter: LeaseWaiter, reason: Error): void {
    if (!this.settle(waiter)) return;
    waiter.reject(reason);
    this.leases.release(waiter.host, waiter.id, { limit: waiter.limit, ttlMs: this.options.leaseTtlMs }).catch((error: unknown) =>
      this.options.logger?.warn('could not leave the host queue; the entry lapses after the lease TTL', {
        host: waiter.host,
        error: String(error),
      }),
    );
  }

  private failWaiting(host: string, reason: Error): void {
    for (const waiter of [...this.waiting.values()]) if (waiter.host === host) this.leave(waiter, reason);
  }

  /** Marks the waiter done; false when it already was. */
  private settle(waiter: LeaseWaiter): boolean {
    if (waiter.settled) return false;
    waiter.settled = true;
    clearTimeout(waiter.timer);
    this.waiting.delete(waiter.id);
    waiter.signal?.removeEventListener('abort', waiter.onAbort);
    return true;
  }
}

interface LeaseWaiter {
  id: string;
  host: string;
  limit: number;
  owner: LeaseOwner;
  requestedAt: number;
  /** Send time of the last poll Redis answered (or of the first poll): our deadline is at least this + TTL. */
  aliveSince: number;
  timer: NodeJS.Timeout | undefined;
  settled: boolean;
  signal: AbortSignal | undefined;
  onAbort: () => void;
  resolve: (lease: HostLease) => void;
  reject: (error: Error) => void;
}

interface RenewedLeaseOptions {
  id: string;
  host: string;
  limit: number;
  ttlMs: number;
  renewEveryMs: number;
  waitMs: number;
  /** Local time (performance.now) until which the lease is known to be ours. */
  validUntil: number;
  logger: Logger | undefined;
}

/**
 * A held lease: renewed every TTL/3; if a renewal says it is gone, or none succeeds before the
 * lease would lapse, `lost` fires, because from then on another process may hold the slot and
 * the bound would only hold if this call stopped.
 */
class RenewedLease implements HostLease {
  readonly id: string;
  readonly host: string;
  readonly waitMs: number;
  private readonly controller = new AbortController();
  private renewTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private validUntil: number;
  private released = false;

  constructor(
    private readonly leases: HostLeases,
    private readonly options: RenewedLeaseOptions,
  ) {
    this.id = options.id;
    this.host = options.host;
    this.waitMs = options.waitMs;
    this.validUntil = options.validUntil;
  }

  get lost(): AbortSignal {
    return this.controller.signal;
  }

  start(renewNow: boolean): void {
    this.armExpiry();
    if (renewNow) void this.renew();
    else this.scheduleRenewal();
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.expiryTimer);
    try {
      await this.leases.release(this.host, this.id, { limit: this.options.limit, ttlMs: this.options.ttlMs });
    } catch (error) {
      this.options.logger?.warn('could not release a host lease; it lapses after its TTL', { host: this.host, error: String(error) });
    }
  }

  private scheduleRenewal(): void {
    this.renewTimer = setTimeout(() => void this.renew(), this.options.renewEveryMs);
  }

  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = setTimeout(() => this.lose(`not renewed within its ${this.options.ttlMs} ms TTL`), Math.max(0, this.validUntil - performance.now()));
  }

  private async renew(): Promise<void> {
    if (this.released || this.controller.signal.aborted) return;
    const sentAt = performance.now();
    try {
      const held = await this.leases.renew(this.host, this.id, this.options.ttlMs);
      if (this.released) return;
      if (!held) {
        this.lose('it expired and was handed on');
        return;
      }
      this.validUntil = sentAt + this.options.ttlMs;
      this.armExpiry();
    } catch (error) {
      this.options.logger?.warn('host lease renewal failed, retrying', { host: this.host, error: String(error) });
    }
    if (!this.released && !this.controller.signal.aborted) this.scheduleRenewal();
  }

  private lose(why: string): void {
    if (this.released || this.controller.signal.aborted) return;
    clearTimeout(this.renewTimer);
    clearTimeout(this.expiryTimer);
    this.options.logger?.warn('host lease lost; stopping the call', { host: this.host, why });
    this.controller.abort(new ModelUnavailableError(`lease on host ${this.host} lost: ${why}`, { details: { host: this.host, leaseId: this.id } }));
  }
}

/** The abort reason as an error (the worker aborts with TaskTimeoutError or CancelledError). */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new CancelledError();
}
