import type { Cluster, Redis } from 'ioredis';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { RateLimitedError, type Principal, type QuotaLimits } from '@mageagent/core';

/**
 * Requests per minute per API key, counted in Redis so every api replica shares the budget
 * (rate-limiter-flexible's RateLimiterRedis: one atomic script per request, on the api's
 * auto-pipelined connection). Keys with different limits get limiters of their own.
 */
export class RequestRateLimits {
  private readonly limiters = new Map<number, RateLimiterRedis>();

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly prefix: string,
    /** The window the limit counts over: a minute, as the name says (shorter only in tests). */
    private readonly windowSeconds = 60,
  ) {}

  /** Counts one request of the caller's key; throws RateLimitedError (429 + Retry-After) past its limit. */
  async consume(principal: Principal, limits: QuotaLimits): Promise<void> {
    const points = limits.requestsPerMinute;
    if (points <= 0) return;
    try {
      await this.limiterFor(points).consume(principal.keyId);
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
      const retryAfterSeconds = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
      throw new RateLimitedError(`this key may make ${points} requests a minute; retry in ${retryAfterSeconds} s`, retryAfterSeconds, {
        quota: 'requestsPerMinute',
        limit: points,
      });
    }
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
