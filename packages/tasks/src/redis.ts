import { Redis, type RedisOptions } from 'ioredis';

export type RedisRole = 'commands' | 'subscriber' | 'bullmq';

/**
 * One place that knows how each kind of connection must be configured:
 * - `commands`: auto-pipelining, so concurrent requests share round trips;
 * - `subscriber`: pub/sub only, retries forever;
 * - `bullmq`: BullMQ requires `maxRetriesPerRequest: null` for blocking connections.
 */
export function createRedis(url: string, role: RedisRole, connectionName?: string): Redis {
  const options: RedisOptions = {
    connectionName,
    // RESP2 replies (HGETALL → object, no push frames) are what the scripts here and BullMQ expect.
    protocol: 2,
    enableAutoPipelining: role === 'commands',
    maxRetriesPerRequest: role === 'commands' ? 3 : null,
    retryStrategy: (times) => Math.min(50 * 2 ** times, 2000),
  };
  return new Redis(url, options);
}

/** Ping with a deadline, for readiness probes. */
export async function pingRedis(redis: Redis, timeoutMs = 1000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const answer = await Promise.race([
      redis.ping(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('ping timed out')), timeoutMs);
      }),
    ]);
    return answer === 'PONG';
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/** Deletes every key under `prefix:` (SCAN + UNLINK, never KEYS): tests, benchmarks, tear-down. */
export async function deleteKeysWithPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
}
