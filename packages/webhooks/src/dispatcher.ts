import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Queue } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import type { Logger } from '@mageagent/core';
import { isRedisUnavailable, TaskKeys } from '@mageagent/tasks';
import { WEBHOOK_QUEUE_NAME, webhookJobOptions, type WebhookJobData, type WebhookRetryPolicy } from './queue';

/**
 * Moves up to ARGV[1] entries from the outbox (KEYS[1]) to a dispatcher's claimed list (KEYS[2]),
 * oldest first, and returns them.
 */
const CLAIM = `
local claimed = {}
for i = 1, tonumber(ARGV[1]) do
  local taskId = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not taskId then break end
  claimed[#claimed + 1] = taskId
end
return claimed
`;

/**
 * Gives the claimed entries of dead dispatchers back to the outbox, in front (they are the oldest).
 * KEYS: the set of dispatcher ids, the outbox. ARGV: the claimed-list key prefix, the liveness key prefix.
 * A dispatcher is dead when its liveness key has expired. One that was only paused past it (a long
 * GC, SIGSTOP) loses its entries to another, which adds the same jobs: their ids collapse them.
 * Returns how many entries went back.
 */
const RECOVER = `
local recovered = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[2] .. id) == 0 then
    while redis.call('LMOVE', ARGV[1] .. id, KEYS[2], 'RIGHT', 'LEFT') do recovered = recovered + 1 end
    redis.call('SREM', KEYS[1], id)
  end
end
return recovered
`;

type ScriptedRedis = (Redis | Cluster) & {
  mageClaimWebhooks(outbox: string, claimed: string, count: number): Promise<string[]>;
  mageRecoverWebhooks(dispatchers: string, outbox: string, claimedPrefix: string, livenessPrefix: string): Promise<number>;
};

export interface WebhookDispatcherOptions {
  /**
   * Commands: claims, job adds, heartbeats. A `worker` connection, so an outage is waited out: the
   * dispatcher pauses and goes on.
   */
  redis: Redis | Cluster;
  /** A connection of its own for the blocking wait on the outbox (a `worker` connection too). */
  blocking: Redis | Cluster;
  prefix: string;
  retry: WebhookRetryPolicy;
  logger: Logger;
  /** Names this dispatcher's claimed list; unique per process (default host:pid:random). */
  id?: string;
  /** Without a heartbeat for this long a dispatcher is dead and its claimed entries are recovered (default 15 s). */
  livenessTtlMs?: number;
  /** Longest blocking wait on an empty outbox, so that stopping is prompt (default 1 s). */
  waitSeconds?: number;
  /** Most entries claimed and added in one go (default 100). */
  batchSize?: number;
}

const DEFAULT_LIVENESS_TTL_MS = 15_000;
/** Longest pause after a failed round (a Redis error that is not an outage), doubling from 100 ms. */
const MAX_ERROR_PAUSE_MS = 5_000;

/**
 * Moves webhook outbox entries (task ids the transition script appended when a task with a webhook
 * ended) into the `webhooks` BullMQ queue, one job per task. Runs in every worker process at once.
 *
 * Nothing is lost if a process dies between taking an entry and adding its job: an entry is first
 * moved (atomically) onto this dispatcher's own claimed list, then its job is added, and only then is
 * it removed from that list. The claimed list is read again at every round, so an entry whose move
 * was applied but whose reply was lost (a connection dropped mid-command) is added too. A process
 * that dies leaves its list behind; the others give it back to the outbox once its liveness key has
 * expired. Adding a job twice is harmless: the job id is the task id.
 */
export class WebhookDispatcher {
  readonly id: string;
  private readonly redis: ScriptedRedis;
  private readonly queue: Queue<WebhookJobData>;
  private readonly keys: { outbox: string; claimed: string; liveness: string; dispatchers: string; claimedPrefix: string; livenessPrefix: string };
  private readonly livenessTtlMs: number;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatRunning = false;

  constructor(private readonly options: WebhookDispatcherOptions) {
    this.id = options.id ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.livenessTtlMs = options.livenessTtlMs ?? DEFAULT_LIVENESS_TTL_MS;
    // Outside `{prefix}:webhooks:*`, the BullMQ queue's key space: clearing a queue by key pattern must
    // not take the dispatchers' claims with it.
    const base = `${options.prefix}:webhook-dispatch`;
    this.keys = {
      outbox: new TaskKeys(options.prefix).webhookOutbox(),
      dispatchers: `${base}:dispatchers`,
      claimedPrefix: `${base}:claimed:`,
      livenessPrefix: `${base}:alive:`,
      claimed: `${base}:claimed:${this.id}`,
      liveness: `${base}:alive:${this.id}`,
    };
    if (!('mageClaimWebhooks' in options.redis)) {
      options.redis.defineCommand('mageClaimWebhooks', { numberOfKeys: 2, lua: CLAIM });
      options.redis.defineCommand('mageRecoverWebhooks', { numberOfKeys: 2, lua: RECOVER });
    }
    this.redis = options.redis as ScriptedRedis;
    this.queue = new Queue<WebhookJobData>(WEBHOOK_QUEUE_NAME, {
      connection: options.redis,
      prefix: options.prefix,
      // Job events are not used (deliveries are recorded on the task); keep BullMQ's stream short.
      streams: { events: { maxLen: 100 } },
    });
    // BullMQ reports each failed reconnect as an 'error' event (printed when nobody listens); the
    // connection's own watcher logs an outage once.
    this.queue.on('error', (error) => {
      if (!isRedisUnavailable(error)) options.logger.error('webhook queue error', { error: String(error) });
    });
  }

  /**
   * Registers this dispatcher, gives dead ones' entries back, then dispatches in the background
   * until `stop()`. Resolves once registered (it waits for Redis, like every worker connection).
   */
  async start(): Promise<void> {
    this.stopping = false;
    await this.heartbeat();
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), Math.max(50, Math.floor(this.livenessTtlMs / 3)));
    this.loop = this.dispatchUntilStopped();
  }

  /** Finishes the round in progress, gives back what this dispatcher still holds, and deregisters. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.heartbeatTimer);
    await this.loop;
    // Left-overs (a round that failed) go back now rather than after the liveness TTL.
    while (await this.redis.lmove(this.keys.claimed, this.keys.outbox, 'RIGHT', 'LEFT')) {
      // moved one; go on until the list is empty
    }
    await this.redis.multi().srem(this.keys.dispatchers, this.id).del(this.keys.liveness).exec();
    await this.queue.close();
  }

  /** Renews this dispatcher's liveness and recovers dead dispatchers' entries; never rejects. */
  private async heartbeat(): Promise<void> {
    // During an outage commands wait; one heartbeat at a time, not a pile of them.
    if (this.heartbeatRunning) return;
    this.heartbeatRunning = true;
    try {
      await this.redis.multi().set(this.keys.liveness, '1', 'PX', this.livenessTtlMs).sadd(this.keys.dispatchers, this.id).exec();
      const { dispatchers, outbox, claimedPrefix, livenessPrefix } = this.keys;
      const recovered = await this.redis.mageRecoverWebhooks(dispatchers, outbox, claimedPrefix, livenessPrefix);
      if (recovered > 0) this.options.logger.warn('gave webhook outbox entries of a stopped dispatcher back to the outbox', { recovered });
    } catch (error) {
      if (!isRedisUnavailable(error)) this.options.logger.error('webhook dispatcher heartbeat failed', { error: String(error) });
    } finally {
      this.heartbeatRunning = false;
    }
  }

  private async dispatchUntilStopped(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      try {
        await this.dispatchOnce();
        failures = 0;
      } catch (error) {
        if (this.stopping) break;
        if (!isRedisUnavailable(error)) this.options.logger.error('webhook dispatch failed; retrying', { error: String(error) });
        await new Promise((resolve) => setTimeout(resolve, Math.min(MAX_ERROR_PAUSE_MS, 100 * 2 ** failures++)));
      }
    }
  }

  /** One round: this dispatcher's left-overs, else a batch from the outbox, else a blocking wait for one. */
  private async dispatchOnce(): Promise<void> {
    const { outbox, claimed } = this.keys;
    let taskIds = await this.redis.lrange(claimed, 0, -1);
    if (taskIds.length === 0) taskIds = await this.redis.mageClaimWebhooks(outbox, claimed, this.options.batchSize ?? 100);
    if (taskIds.length === 0) {
      const taskId = await this.options.blocking.blmove(outbox, claimed, 'LEFT', 'RIGHT', this.options.waitSeconds ?? 1);
      if (taskId === null) return;
      taskIds = [taskId];
    }
    await this.queue.addBulk(taskIds.map((taskId) => ({ name: 'deliver', data: { taskId }, opts: webhookJobOptions(taskId, this.options.retry) })));
    const done = this.redis.pipeline();
    for (const taskId of taskIds) done.lrem(claimed, 1, taskId);
    await done.exec();
  }
}
