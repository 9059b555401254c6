import type { Cluster, Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { RateLimitedError, RequestRateExceededError, TurnBatcher, type Principal, type QuotaLimits } from '@mageagent/core';
import { definedScript, type RequestCounter } from '@mageagent/tasks';

/**
 * The script rate-limiter-flexible's RateLimiterRedis defines on the connection (its INCRBY + TTL):
 * called once per key per round already, so the api's connection sends it as it is, not
 * auto-pipelined (see createRedis). The task store runs the same script inside its creation
 * script (see RequestRateLimits.counter).
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
 * Keys with different limits get limiters of their own; they share one count per key.
 *
 * A request that creates a task (POST /tasks) is counted by the script that writes its task, in
 * the same Redis call (`counter`, and PendingRequestCount): the same script of the library's,
 * under the same key, so every route and replica still shares one count per key, and the request
 * costs no round trip of its own (measured in `npm run bench`).
 *
 * A key past its limit is refused from memory until its window ends (or its limit changes),
 * whichever path found it past: abuse costs Redis nothing. (Kept here rather than with the library's inMemoryBlock
 * options, which cannot learn of a refusal made by the creation script.)
 */
export class RequestRateLimits {
  private readonly limiters = new Map<number, RateLimiterRedis>();
  /** One round of counts in Redis at a time: requests arriving meanwhile are counted together next. */
  private readonly rounds = new TurnBatcher<PendingRequest>((requests) => this.count(requests));
  /** Keys past their limit, with when their window ends (ms since the epoch). */
  private readonly blocked = new Map<string, { until: number; limit: number }>();
  /**
   * Where new tasks' requests are counted, for the task store (undefined where the library defined
   * no script on the connection, as with a client it does not know: then the limiter counts them).
   */
  readonly counter: RequestCounter | undefined;

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
    const limiter = this.limiterFor(1);
    const script = definedScript(redis, RATE_LIMIT_COMMAND);
    this.counter = script && { lua: script.lua, windowSeconds, keyOf: (keyId) => limiter.getKey(keyId) };
  }

  /** Counts one request of the caller's key; rejects with RateLimitedError (429 + Retry-After) past its limit. */
  consume(principal: Principal, limits: QuotaLimits): Promise<void> {
    const points = limits.requestsPerMinute;
    if (points <= 0) return Promise.resolve();
    const refusal = this.refusalFromMemory(principal.keyId, points);
    if (refusal) return Promise.reject(refusal);
    return new Promise<void>((resolve, reject) => this.rounds.add({ points, keyId: principal.keyId, waiter: { resolve, reject } }));
  }

  /**
   * A request to be counted with the task it creates (see PendingRequestCount); refused at once
   * (RateLimitedError) when its key is known to be past its limit. Undefined when there is nothing
   * to defer: no counter (the limiter counts every request), or no limit on the key.
   */
  pending(principal: Principal, limits: QuotaLimits): PendingRequestCount | undefined {
    if (this.counter === undefined || limits.requestsPerMinute <= 0) return undefined;
    const refusal = this.refusalFromMemory(principal.keyId, limits.requestsPerMinute);
    if (refusal) throw refusal;
    return new PendingRequestCount(this, principal, limits);
  }

  /** Refuses the key from memory until its window ends (a request past its limit was just refused). */
  block(keyId: string, refusal: RequestRateExceededError): void {
    this.blocked.set(keyId, { until: Date.now() + refusal.msBeforeNext, limit: refusal.limit });
  }

  /**
   * The 429 for a key refused from memory, while its window lasts and its limit is the one it was
   * refused under: a key whose limit changed since (the keys file reloaded) is counted in Redis
   * again, against the new limit and the same count.
   */
  private refusalFromMemory(keyId: string, limit: number): RequestRateExceededError | undefined {
    const block = this.blocked.get(keyId);
    if (block === undefined) return undefined;
    const left = block.until - Date.now();
    if (left > 0 && block.limit === limit) return new RequestRateExceededError(block.limit, left);
    this.blocked.delete(keyId);
    return undefined;
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
      // consumedPoints includes this batch's `count`.
      const before = rejection.consumedPoints - count;
      allowed = Math.min(count, Math.max(0, points - before));
      msBeforeNext = rejection.msBeforeNext;
    }
    if (allowed < count) this.block(keyId, new RequestRateExceededError(points, msBeforeNext));
    waiters.forEach((waiter, index) => {
      if (index < allowed) waiter.resolve();
      else waiter.reject(new RequestRateExceededError(points, msBeforeNext));
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
      });
      this.limiters.set(points, limiter);
    }
    return limiter;
  }
}

/**
 * A request whose count against its key's requests per minute waits for what the request turns out
 * to do (POST /tasks). When it creates a task, the script that writes the task counts it, in the
 * same Redis call (`withTask`). When it does not (a bad body, an Idempotency-Key conflict or
 * replay), the limiter counts it before it is answered (`now`, `answerFor`). Either way it is
 * counted once, before its answer, and a request past the limit gets the 429 whatever else it
 * was, as when the limiter counts it first.
 */
export class PendingRequestCount {
  private counted = false;

  constructor(
    private readonly rates: RequestRateLimits,
    private readonly principal: Principal,
    private readonly limits: QuotaLimits,
  ) {}

  /** The task's creation counts the request: the limit its script counts it against. */
  withTask(): number {
    this.counted = true;
    return this.limits.requestsPerMinute;
  }

  /** Counts the request now, unless it was counted already; rejects with the 429 past its key's limit. */
  now(): Promise<void> {
    if (this.counted) return Promise.resolve();
    this.counted = true;
    return this.rates.consume(this.principal, this.limits);
  }

  /**
   * The error the request is answered with, now that it failed with `error`: the 429 when the
   * request, counted now, is past its key's limit; else `error` (also when Redis cannot count it:
   * the request's own answer is the more useful one). A 429 from the task's creation script makes
   * the key refused from memory until its window ends.
   */
  async answerFor(error: unknown): Promise<unknown> {
    if (this.counted) {
      if (error instanceof RequestRateExceededError) this.rates.block(this.principal.keyId, error);
      return error;
    }
    try {
      await this.now();
    } catch (refusal) {
      if (refusal instanceof RateLimitedError) return refusal;
    }
    return error;
  }
}
