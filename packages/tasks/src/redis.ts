import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { ServiceUnavailableError, type Logger } from '@mageagent/core';
import { UNPIPELINED_COMMANDS } from './scripts';
import type { RedisTopology } from './topology';

/** A connection of any topology: a `Redis` (one node, or a Sentinel-managed master) or a `Cluster`. */
export type RedisClient = Redis | Cluster;

/**
 * What a connection is for, which decides how it behaves while Redis is unreachable:
 * - `requests`: commands on behalf of a client's HTTP or socket request (the api). They fail at
 *   once while Redis is down (no offline queue, in-flight commands rejected when the connection
 *   drops) and after `commandTimeoutMs` when it hangs, so the client gets a quick 503 instead of
 *   a request that hangs until it gives up. Auto-pipelined, so concurrent requests share round trips.
 * - `worker`: a worker's commands (task store, host leases, health). They wait out an outage and
 *   go on when Redis returns: a running task pauses instead of failing. Writes that could be
 *   resent after a reconnect are idempotent (see TaskStore's write ids).
 * - `subscriber`: pub/sub only; re-subscribes by itself after a reconnect.
 * - `bullmq`: a BullMQ Worker's connection, which BullMQ requires to have
 *   `maxRetriesPerRequest: null` (it blocks, and retries on its own).
 *
 * ioredis 6's defaults (offline queue on, 20 retries per request, about 10 s before a command
 * fails during an outage) suit none of these, so every option that matters is set here.
 */
export type RedisRole = 'requests' | 'worker' | 'subscriber' | 'bullmq';

export interface RedisConnectionOptions {
  /** CLIENT SETNAME, so `CLIENT LIST` shows who is connected. */
  connectionName?: string;
  /** Logs when the connection is lost (once per outage) and when it is back, with how long it took. */
  logger?: Logger;
  /** `requests` only: a command that has no reply after this long fails (Redis hung or unreachable). */
  commandTimeoutMs?: number;
  /**
   * `requests` only: more commands (beside the task creation scripts) sent as they are, not
   * auto-pipelined: commands a caller already batches itself, one call per event-loop turn.
   */
  unpipelined?: readonly string[];
}

/**
 * A script a library defined on the connection (ioredis's defineCommand), as that library wrote
 * it: its Lua and key count; undefined when it defined none under that name. This reads ioredis's
 * own record of the definitions, which it exposes without a type; the callers check what they get
 * and do without the script when it is not there.
 */
export function definedScript(connection: RedisClient, name: string): { lua: string; numberOfKeys: number | undefined } | undefined {
  const script = (connection as unknown as { scriptsSet?: Record<string, { lua?: unknown; numberOfKeys?: unknown }> }).scriptsSet?.[name];
  if (typeof script?.lua !== 'string') return undefined;
  return { lua: script.lua, numberOfKeys: typeof script.numberOfKeys === 'number' ? script.numberOfKeys : undefined };
}

/** Longest wait between reconnect attempts. */
const RECONNECT_MAX_DELAY_MS = 500;

/**
 * Default deadline of a `requests` command. Auto-pipelining sends one batch at a time, so a
 * command can wait for the batch ahead of it to time out before its own clock runs: the worst
 * case is twice this, which keeps an api route's 503 inside one second.
 */
export const DEFAULT_COMMAND_TIMEOUT_MS = 400;

/**
 * One place that knows how each kind of connection must be configured; see RedisRole. A URL is a
 * single node; a topology (`redisTopologyOf`) may also be Sentinel (a `Redis` that follows the
 * master) or Cluster (a `Cluster`, whose nodes get the role's options through `redisOptions`).
 */
export function createRedis(url: string, role: RedisRole, options?: RedisConnectionOptions): Redis;
export function createRedis(topology: RedisTopology, role: RedisRole, options?: RedisConnectionOptions): RedisClient;
export function createRedis(target: string | RedisTopology, role: RedisRole, options: RedisConnectionOptions = {}): RedisClient {
  const { connectionName, logger, commandTimeoutMs, unpipelined = [] } = options;
  const failFast = role === 'requests';
  // Auto-pipelined, except for calls that are already one per batch (the task creation script, and
  // what the caller names): an auto-pipeline costs a Pipeline object, which copies every script
  // defined on the connection (BullMQ defines some 65): about 100 µs of the api's thread per batch,
  // for nothing to gain.
  const autoPipelining = { enableAutoPipelining: failFast, autoPipeliningIgnoredCommands: [...UNPIPELINED_COMMANDS, ...unpipelined] };
  const commandOptions = {
    connectionName,
    // RESP2 replies (HGETALL → object, no push frames) are what the scripts here and BullMQ expect.
    protocol: 2,
    // 0: commands in flight when the connection drops are rejected at once (not resent later);
    // null: they wait for the reconnect and are resent.
    maxRetriesPerRequest: failFast ? 0 : null,
    ...(failFast && { commandTimeout: commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS }),
  } satisfies RedisOptions;
  // Reconnect quickly at first, then every half second, forever: recovery needs no restart, and
  // comes within half a second of Redis answering again. A refused connect costs next to nothing.
  const retryStrategy = (times: number) => Math.min(50 * 2 ** times, RECONNECT_MAX_DELAY_MS);
  const topology: RedisTopology = typeof target === 'string' ? { kind: 'single', url: target } : target;
  const auth = {
    ...(topology.username !== undefined && { username: topology.username }),
    ...(topology.password !== undefined && { password: topology.password }),
    ...(topology.tls !== undefined && { tls: topology.tls }),
  };
  let redis: RedisClient;
  switch (topology.kind) {
    case 'single':
      // The URL's own host, port, credentials, db and scheme (rediss: TLS) come first; `auth` only
      // fills what the URL leaves out (redisTopologyOf refuses credentials in both places).
      redis = new Redis(topology.url, {
        ...commandOptions,
        ...auth,
        ...autoPipelining,
        enableOfflineQueue: !failFast,
        retryStrategy,
      });
      break;
    case 'sentinel':
      redis = new Redis({
        ...commandOptions,
        ...auth,
        sentinels: topology.sentinels,
        name: topology.name,
        ...(topology.sentinelPassword !== undefined && { sentinelPassword: topology.sentinelPassword }),
        // `tls` is for the master only when this is set; the Sentinels themselves are plain TCP.
        enableTLSForSentinelMode: topology.tls !== undefined,
        // No failoverDetector (a subscription to the Sentinels' +switch-master that drops every
        // connection at once): with it, BullMQ's blocking connection sometimes stayed down after a
        // failover (jobs never taken; test/redis-sentinel.e2e). A dead master is noticed by the
        // connection closing, and so is a master the Sentinels demote alive (they CLIENT KILL its
        // clients as they reconfigure it). Either way the reconnect asks the Sentinels for the
        // new master. A demotion without that kill (a node restarted as a replica, a managed
        // service's own failover) shows as READONLY replies: reconnect then too. 2 resends the
        // refused command after the reconnect (a READONLY write was not applied, so that is safe);
        // a `requests` command fails instead (1), and its client gets a 503.
        reconnectOnError: (error: Error) => (/^READONLY\b/.test(error.message) ? (failFast ? 1 : 2) : false),
        ...autoPipelining,
        enableOfflineQueue: !failFast,
        retryStrategy,
        // Never give up on the Sentinels either (the default also retries forever, but slower).
        sentinelRetryStrategy: retryStrategy,
      });
      break;
    case 'cluster': {
      const clusterOptions: ClusterOptions = {
        ...autoPipelining,
        enableOfflineQueue: !failFast,
        // Reads go to masters: a follower reads the log right after the write it was told of, and
        // a replica may not have it yet.
        scaleReads: 'master',
        clusterRetryStrategy: retryStrategy,
        redisOptions: { ...commandOptions, ...auth },
      };
      redis = new Cluster(topology.nodes, clusterOptions);
      break;
    }
  }
  watchConnection(redis, role, connectionName ?? role, logger);
  return redis;
}

/**
 * Every connection gets an `error` listener (without one, ioredis prints each failed reconnect
 * attempt), and the outage is logged once when it starts and once when it ends.
 */
function watchConnection(redis: RedisClient, role: RedisRole, name: string, logger: Logger | undefined): void {
  let downSince: number | undefined;
  const lost = (why: string) => {
    if (downSince !== undefined) return;
    downSince = Date.now();
    logger?.warn('redis unreachable; reconnecting', { connection: name, role, error: why });
  };
  redis.on('error', (error: Error) => lost(error.message));
  redis.on('close', () => {
    // 'close' also ends a deliberate quit(); only a connection that is coming back was lost.
    if (redis.status === 'reconnecting') lost('connection closed');
  });
  redis.on('ready', () => {
    if (downSince !== undefined) logger?.info('redis connection back', { connection: name, role, downMs: Date.now() - downSince });
    downSince = undefined;
  });
}

/** Reply errors Redis gives while it cannot serve writes for a while: loading, out of memory, read-only. */
const UNAVAILABLE_REPLIES = /^(LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|READONLY|MISCONF|OOM)\b/;
/**
 * ioredis's own messages for a connection that is down, closed or not answering; and a Cluster's
 * or Sentinel's while a failover is under way (redirections run out while the slot has no master,
 * the cluster client reconnecting, the Sentinels naming a master that is gone).
 */
const CONNECTION_MESSAGES =
  /Stream isn't writeable|Connection is closed|Command timed out|max retries per request|connect ETIMEDOUT|Too many Cluster redirections|Cluster isn't ready|Cluster is disconnected|None of startup nodes is available|Node is disconnected|All sentinels are unreachable/i;
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** Whether an error means "Redis cannot be reached or cannot serve right now" (worth a retry), rather than a bug. */
export function isRedisUnavailable(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { name, message, code } = error as { name?: unknown; message?: unknown; code?: unknown };
  if (name === 'MaxRetriesPerRequestError') return true;
  if (typeof code === 'string' && CONNECTION_CODES.has(code)) return true;
  if (typeof message !== 'string') return false;
  return CONNECTION_MESSAGES.test(message) || UNAVAILABLE_REPLIES.test(message);
}

/** Whether an error, or the error that caused it (a task not queued, say), is Redis being unavailable. */
export function causedByRedisOutage(error: unknown): boolean {
  return isRedisUnavailable(error) || isRedisUnavailable((error as { cause?: unknown } | null)?.cause);
}

/** The error a client is answered when Redis is unavailable: 503 UNAVAILABLE with Retry-After. */
export function redisUnavailable(cause?: unknown): ServiceUnavailableError {
  return new ServiceUnavailableError('the task store (Redis) is unavailable; retry shortly', 1, { cause });
}

/** Ping with a deadline, for readiness probes. */
export async function pingRedis(redis: RedisClient, timeoutMs = 1000): Promise<boolean> {
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

/**
 * Deletes every key under `prefix:` (SCAN + UNLINK, never KEYS): tests, benchmarks, tear-down. On a
 * Cluster, SCAN only sees the node it runs on, so every master is scanned, and keys are unlinked
 * one by one (a prefix without a hash tag spreads its keys over several slots of a node).
 */
export async function deleteKeysWithPrefix(redis: RedisClient, prefix: string): Promise<void> {
  if (redis instanceof Cluster) {
    // Until the client has the slot map, it knows no masters (and would scan nothing).
    if (!(await redisReady(redis, 10_000))) throw new Error('deleteKeysWithPrefix: the cluster is not ready');
    for (const node of redis.nodes('master')) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await Promise.all(keys.map((key) => node.unlink(key)));
      } while (cursor !== '0');
    }
    return;
  }
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
}

/**
 * Resolves true once the connection is ready, false if it is not within `timeoutMs`. A `requests`
 * connection refuses commands until then (it has no offline queue), so processes wait for it at
 * start-up, briefly, before they serve.
 */
export function redisReady(redis: RedisClient, timeoutMs: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ready: boolean) => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      resolve(ready);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    redis.on('ready', onReady);
  });
}
