import type { Cluster, Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { RateLimitedError, TurnBatcher, type Principal, type QuotaLimits } from '@mageagent/core';

/**
 * The script rate-limiter-flexible's RateLimiterRedis defines on the connection (its INCRBY + TTL):
 * called once per key per round already, so the api's connection sends it as it is, not
 * auto-pipelined (see createRedis).
 */
export const RATE_LIMIT_COMMAND = 'rlflxIncr';

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** A request waiting for its round to be counted. */
interface PendingRequest {
  points: number;
  keyId: string;
  waiter: Waiter;
}

/** The requests of one key (with one limit) in one round. */
interface PendingBatch {
  points: number;
  keyId: string;
  waiters: Waiter[];
}

/**
 * Requests per minute per API key, counted in Redis so every api replica shares the budget
 * (rate-limiter-flexible's RateLimiterRedis, whose counter is one atomic INCRBY + TTL script).
 *
 * Requests of one key that arrive in the same event-loop turn are counted together, like the
 * task intake's group commit: one `consume(key, n)` for the n of them, then the first
 * `limit − (count before them)` pass and the rest get the 429. The outcome is exactly what n
 * single consumes would give (the count in Redis is the same, and no request passes past the
 * limit), but under load it costs Redis one script per key per turn instead of one per request
 * (measured in `npm run bench`: the "with an API key and quotas" row). A lone request waits for
 * nothing but the end of its turn (setImmediate, no timer). One round of counts is in Redis at a
 * time; requests arriving meanwhile are counted together as soon as it is done, so rounds grow
 * with the load (like the task intake's batches).
 *
 * Keys with different limits get limiters of their own.
 */
export class RequestRateLimits {
  private readonly limiters = new Map<number, RateLimiterRedis>();
  /** One round of counts in Redis at a time: requests arriving meanwhile are counted together next. */
  private readonly rounds = new TurnBatcher<PendingRequest>((requests) => this.count(requests));

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    /** The window the limit counts over: a minute, as the name says (shorter only in tests). */
    private readonly windowSeconds = 60,
  ) {
    // A limiter defines its script on the connection; the first one is made now, not on the first
    // request. ioredis copies a connection's scripts into an auto-pipeline when it creates it, so a
    // script defined while one is pending is missing from it: a TypeError, after which ioredis's
    // pipeline callback crashed the api (seen on a Redis Cluster, where one pipeline waits for the
    // one running). Later limiters redefine the same script, which pending pipelines already have.
    this.limiterFor(1);
  }

  /** Counts one request of the caller's key; rejects with RateLimitedError (429 + Retry-After) past its limit. */
  consume(principal: Principal, limits: QuotaLimits): Promise<void> {
    const points = limits.requestsPerMinute;
    if (points <= 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => this.rounds.add({ points, keyId: principal.keyId, waiter: { resolve, reject } }));
  }

  /** One round: the requests of each key (with one limit) counted together, every key at once. */
  private async count(requests: PendingRequest[]): Promise<void> {
    const batches = new Map<string, PendingBatch>();
    for (const { points, keyId, waiter } of requests) {
      const id = `${points}:${keyId}`;
      let batch = batches.get(id);
      if (batch === undefined) {
        batch = { points, keyId, waiters: [] };
        batches.set(id, batch);
      }
      batch.waiters.push(waiter);
    }
    await Promise.allSettled([...batches.values()].map((batch) => this.settle(batch)));
  }

  private async settle({ points, keyId, waiters }: PendingBatch): Promise<void> {
    const count = waiters.length;
    let allowed = count;
    let msBeforeNext = 0;
    try {
      await this.limiterFor(points).consume(keyId, count);
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) {
        // Redis unreachable or failing: every request of the batch gets the error (a 503).
        for (const waiter of waiters) waiter.reject(rejection);
        return;
      }
      // consumedPoints includes this batch's `count`. Below it, the key was refused from memory
      // (it used up its window already) and nothing was counted: none of the batch passes.
      const before = rejection.consumedPoints - count;
      allowed = rejection.consumedPoints < count ? 0 : Math.min(count, Math.max(0, points - before));
      msBeforeNext = rejection.msBeforeNext;
    }
    waiters.forEach((waiter, index) => {
      if (index < allowed) waiter.resolve();
      else waiter.reject(refusal(points, msBeforeNext));
    });
  }

  private limiterFor(points: number): RateLimiterRedis {
    let limiter = this.limiters.get(points);
    if (limiter === undefined) {
      limiter = new RateLimiterRedis({
        storeClient: this.redis,
        keyPrefix: `${this.prefix}:rate`,
        points,
        duration: this.windowSeconds,
        // A key that has used up its minute is refused from memory until the minute ends: abuse
        // costs Redis nothing.
        inMemoryBlockOnConsumed: points,
        inMemoryBlockDuration: 0,
      });
      this.limiters.set(points, limiter);
    }
    return limiter;
  }
}

function refusal(points: number, msBeforeNext: number): RateLimitedError {
  const retryAfterSeconds = Math.max(1, Math.ceil(msBeforeNext / 1000));
  return new RateLimitedError(`this key may make ${points} requests a minute; retry in ${retryAfterSeconds} s`, retryAfterSeconds, {
    quota: 'requestsPerMinute',
    limit: points,
  });
}
