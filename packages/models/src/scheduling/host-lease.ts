import type { Cluster, Redis } from 'ioredis';
import type { TaskPriority } from '@mageagent/core';

/**
 * The GPU-host lease on Redis: per host, at most `limit` holders, handed out to waiters by
 * priority and then arrival, across every worker process and pod.
 *
 * Why not redis-semaphore's Semaphore: it grants to whichever contender retries first (its
 * acquire is a poll loop of `retryInterval`), so it has no priority order, no aging, no FIFO,
 * and a handoff costs up to one retry interval of idle GPU. The queue and the handoff are the
 * point here, so the lease is these four small scripts; redis-semaphore's Mutex is used where
 * plain mutual exclusion is all that is needed (one health prober at a time, host-health.ts).
 *
 * Per host (the host name is a hash tag, so one script may touch all of them in Redis Cluster):
 * - `holders`   ZSET lease id → expiry (ms, Redis clock). Holders renew; a dead one expires.
 * - `waiters`   ZSET waiter id → order (µs): arrival + a priority offset. Lowest first.
 * - `deadlines` ZSET waiter id → heartbeat deadline (ms). A waiter whose process died is dropped.
 * - `owners`    HASH id → JSON {owner, worker, priority}, for GET /hosts.
 * - `grants`    HASH id → grant time (ms), for held time and busy accounting.
 * - `busy`      HASH ring of BUSY_RING_SECONDS fields `second % ring` → "second:busyMs".
 * - `grants` channel: the ids just granted, space-separated, so waiting processes start at once.
 *
 * Every time comes from Redis TIME, so pods with skewed clocks agree on expiry and order.
 */

/** Seconds kept in the busy ring; more than the one-minute window so a full minute is always there. */
export const BUSY_RING_SECONDS = 64;
/** The window `busyFraction` is computed over. */
export const BUSY_WINDOW_MS = 60_000;

/** Redis key and channel names of the host scheduler. */
export class HostKeys {
  constructor(readonly prefix: string) {}

  private base(host: string): string {
    return `${this.prefix}:host:{${host}}`;
  }

  holders(host: string): string {
    return `${this.base(host)}:holders`;
  }

  waiters(host: string): string {
    return `${this.base(host)}:waiters`;
  }

  deadlines(host: string): string {
    return `${this.base(host)}:deadlines`;
  }

  owners(host: string): string {
    return `${this.base(host)}:owners`;
  }

  grants(host: string): string {
    return `${this.base(host)}:grants`;
  }

  busy(host: string): string {
    return `${this.base(host)}:busy`;
  }

  /** JSON HostHealthRecord written by whichever pod probed last. */
  health(host: string): string {
    return `${this.base(host)}:health`;
  }

  /** redis-semaphore's Mutex prepends `mutex:`, so the key it writes is `mutex:<this>`. */
  probeLock(host: string): string {
    return `${this.base(host)}:probe`;
  }

  /** Pub/sub channel carrying the ids of leases just granted on a host. */
  grantChannel(host: string): string {
    return `${this.base(host)}:grants`;
  }

  /** The host of a grant channel, or undefined for any other channel. */
  hostOfGrantChannel(channel: string): string | undefined {
    const match = /^(.*):host:\{(.+)\}:grants$/.exec(channel);
    return match !== null && match[1] === this.prefix ? match[2] : undefined;
  }

  /** The six keys every script takes, in the order the scripts expect. */
  scriptKeys(host: string): string[] {
    return [this.holders(host), this.waiters(host), this.deadlines(host), this.owners(host), this.grants(host), this.busy(host)];
  }
}

const PRELUDE = `
local holders, waiters, deadlines, owners, grants, busy = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local clock = redis.call('TIME')
local nowMs = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local nowUs = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local function forget(id)
  redis.call('ZREM', waiters, id)
  redis.call('ZREM', deadlines, id)
  redis.call('HDEL', owners, id)
  redis.call('HDEL', grants, id)
end

-- Leases whose holder stopped renewing, waiters whose process stopped heartbeating.
local function sweep()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', holders, '-inf', nowMs)) do
    redis.call('ZREM', holders, id)
    forget(id)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', nowMs)) do
    forget(id)
  end
end

-- Free slots go to the head waiters. A granted lease first expires when its waiter's heartbeat
-- would have, so a waiter that died just before its turn blocks the host for at most one TTL
-- after its last sign of life; a live one renews at once. The caller (except) learns from the
-- reply, the others from the channel.
local function handOut(limit, ttl, channel, except)
  local free = limit - redis.call('ZCARD', holders)
  if free <= 0 then return end
  local heads = redis.call('ZRANGE', waiters, 0, free - 1)
  local told = {}
  for _, id in ipairs(heads) do
    local expiry = redis.call('ZSCORE', deadlines, id) or (nowMs + ttl)
    redis.call('ZREM', waiters, id)
    redis.call('ZREM', deadlines, id)
    redis.call('ZADD', holders, expiry, id)
    redis.call('HSET', grants, id, nowMs)
    if id ~= except then told[#told + 1] = id end
  end
  if #told > 0 then redis.call('PUBLISH', channel, table.concat(told, ' ')) end
end
`;

/**
 * Enqueue-or-heartbeat, then hand out free slots. Idempotent: a waiter calls it on arrival and
 * again as its heartbeat; a lost reply is harmless.
 * ARGV: id, limit, ttlMs, order offset (µs), owner JSON, channel.
 * Returns {granted 0|1, ms until the earliest lease expires or -1}.
 */
const ACQUIRE = `${PRELUDE}
local id, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
sweep()
if not redis.call('ZSCORE', holders, id) then
  if not redis.call('ZSCORE', waiters, id) then
    redis.call('ZADD', waiters, nowUs + tonumber(ARGV[4]), id)
    redis.call('HSET', owners, id, ARGV[5])
  end
  redis.call('ZADD', deadlines, nowMs + ttl, id)
  handOut(limit, ttl, ARGV[6], id)
else
  -- Granted while this caller missed the grant message: its lease still expires at its old
  -- heartbeat deadline, but the caller will count a full TTL from now, so make that true.
  redis.call('ZADD', holders, 'XX', nowMs + ttl, id)
end
local granted = 0
if redis.call('ZSCORE', holders, id) then granted = 1 end
local first = redis.call('ZRANGE', holders, 0, 0, 'WITHSCORES')
local nextExpiry = -1
if first[2] then nextExpiry = tonumber(first[2]) - nowMs end
return {granted, nextExpiry}
`;

/**
 * Extends a held lease. A lease still in the set was never handed to anyone else (handOut only
 * fills slots after sweep removed expired ones), so extending it is safe even past its expiry.
 * KEYS: holders. ARGV: id, ttlMs. Returns 1, or 0 when the lease is gone (lost).
 */
const RENEW = `
local clock = redis.call('TIME')
local nowMs = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', nowMs + tonumber(ARGV[2]), ARGV[1])
return 1
`;

/**
 * Gives up a lease or leaves the queue (the same thing: whichever it is now), records the
 * held time as busy, and hands the slot on.
 * ARGV: id, limit, ttlMs, channel. Returns 1 when a lease was held.
 */
const RELEASE = `${PRELUDE}
local function recordBusy(fromMs, toMs)
  fromMs = math.max(fromMs, toMs - ${BUSY_RING_SECONDS - 1} * 1000)
  local second = math.floor(fromMs / 1000)
  while second * 1000 < toMs do
    local spent = math.min(toMs, second * 1000 + 1000) - math.max(fromMs, second * 1000)
    local field = second % ${BUSY_RING_SECONDS}
    local entry = redis.call('HGET', busy, field)
    if entry then
      local colon = string.find(entry, ':', 1, true)
      if tonumber(string.sub(entry, 1, colon - 1)) == second then spent = spent + tonumber(string.sub(entry, colon + 1)) end
    end
    redis.call('HSET', busy, field, second .. ':' .. spent)
    second = second + 1
  end
  redis.call('PEXPIRE', busy, ${BUSY_RING_SECONDS * 2000})
end

local id = ARGV[1]
local grantedAt = redis.call('HGET', grants, id)
local held = redis.call('ZREM', holders, id)
if held == 1 and grantedAt then recordBusy(tonumber(grantedAt), nowMs) end
forget(id)
sweep()
handOut(tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], '')
return held
`;

/** Read-only view for GET /hosts. Returns {now, {id, expiry, owner JSON, grantedAt}..., live waiters, busy ring}. */
const INSPECT = `${PRELUDE}
local live = redis.call('ZRANGEBYSCORE', holders, '(' .. nowMs, '+inf', 'WITHSCORES')
local leases = {}
for i = 1, #live, 2 do
  leases[#leases + 1] = live[i]
  leases[#leases + 1] = live[i + 1]
  leases[#leases + 1] = redis.call('HGET', owners, live[i]) or ''
  leases[#leases + 1] = redis.call('HGET', grants, live[i]) or ''
end
return {nowMs, leases, redis.call('ZCOUNT', deadlines, '(' .. nowMs, '+inf'), redis.call('HGETALL', busy)}
`;

type ScriptedRedis = (Redis | Cluster) & {
  hostLeaseAcquire(...args: Array<string | number>): Promise<[number, number]>;
  hostLeaseRenew(holders: string, id: string, ttlMs: number): Promise<number>;
  hostLeaseRelease(...args: Array<string | number>): Promise<number>;
  hostLeaseInspect(...keys: string[]): Promise<[number, string[], number, string[]]>;
};

/** Who asked for a lease, stored beside it for GET /hosts. */
export interface LeaseOwner {
  /** The task the call is for. */
  owner?: string;
  /** The worker process (host:pid). */
  worker: string;
  priority: TaskPriority;
}

/** A lease as GET /hosts shows it. */
export interface LeaseView extends LeaseOwner {
  id: string;
  /** ms the lease has been held. */
  heldMs: number;
  /** ms until it expires unless renewed. */
  expiresInMs: number;
}

export interface HostLeaseSnapshot {
  leases: LeaseView[];
  /** Waiters whose process is alive. */
  waiters: number;
  /** Fraction of the last minute's generation slots that were leased (0..1). */
  busyFraction: number;
}

/** Order offset per priority, in aging windows: a low call that waited two windows goes before a new high one. */
const PRIORITY_WINDOWS: Record<TaskPriority, number> = { high: 0, normal: 1, low: 2 };

/** The four scripts, on one (auto-pipelined) commands connection. */
export class HostLeases {
  readonly keys: HostKeys;
  private readonly redis: ScriptedRedis;

  constructor(redis: Redis | Cluster, prefix: string) {
    this.keys = new HostKeys(prefix);
    if (!('hostLeaseAcquire' in redis)) {
      redis.defineCommand('hostLeaseAcquire', { numberOfKeys: 6, lua: ACQUIRE });
      redis.defineCommand('hostLeaseRenew', { numberOfKeys: 1, lua: RENEW });
      redis.defineCommand('hostLeaseRelease', { numberOfKeys: 6, lua: RELEASE });
      redis.defineCommand('hostLeaseInspect', { numberOfKeys: 6, lua: INSPECT });
    }
    this.redis = redis as ScriptedRedis;
  }

  /**
   * Joins the host's queue (or heartbeats), and takes a free slot when this waiter is at the head.
   * `agingMs` is the aging window: each priority step is worth that much waiting.
   */
  async acquire(
    host: string,
    id: string,
    request: { limit: number; ttlMs: number; agingMs: number; owner: LeaseOwner },
  ): Promise<{ granted: boolean; nextExpiryInMs: number | undefined }> {
    const offsetUs = PRIORITY_WINDOWS[request.owner.priority] * request.agingMs * 1000;
    const [granted, nextExpiry] = await this.redis.hostLeaseAcquire(
      ...this.keys.scriptKeys(host),
      id,
      request.limit,
      request.ttlMs,
      offsetUs,
      JSON.stringify(request.owner),
      this.keys.grantChannel(host),
    );
    return { granted: granted === 1, nextExpiryInMs: nextExpiry < 0 ? undefined : nextExpiry };
  }

  /** False when the lease is gone: it expired and was swept, or was released. */
  async renew(host: string, id: string, ttlMs: number): Promise<boolean> {
    return (await this.redis.hostLeaseRenew(this.keys.holders(host), id, ttlMs)) === 1;
  }

  /** Releases a lease or leaves the queue; true when a lease was held. */
  async release(host: string, id: string, request: { limit: number; ttlMs: number }): Promise<boolean> {
    const held = await this.redis.hostLeaseRelease(...this.keys.scriptKeys(host), id, request.limit, request.ttlMs, this.keys.grantChannel(host));
    return held === 1;
  }

  /** Leases held, live waiters and the busy fraction of the last minute, on the Redis clock. */
  async inspect(host: string, limit: number): Promise<HostLeaseSnapshot> {
    const [now, flat, waiters, ring] = await this.redis.hostLeaseInspect(...this.keys.scriptKeys(host));
    const leases: LeaseView[] = [];
    let liveBusyMs = 0;
    const windowStart = (Math.floor(now / 1000) - (BUSY_WINDOW_MS / 1000 - 1)) * 1000;
    for (let index = 0; index + 3 < flat.length; index += 4) {
      const grantedAt = Number(flat[index + 3]) || now;
      liveBusyMs += now - Math.max(grantedAt, windowStart);
      leases.push({
        id: flat[index] ?? '',
        ...parseOwner(flat[index + 2] ?? ''),
        heldMs: now - grantedAt,
        expiresInMs: Number(flat[index + 1]) - now,
      });
    }
    let recordedBusyMs = 0;
    for (let index = 1; index < ring.length; index += 2) {
      const [second, busyMs] = (ring[index] ?? '').split(':').map(Number);
      if (second !== undefined && busyMs !== undefined && second * 1000 >= windowStart) recordedBusyMs += busyMs;
    }
    const capacityMs = Math.max(1, now - windowStart) * limit;
    const busyFraction = Math.min(1, (recordedBusyMs + liveBusyMs) / capacityMs);
    return { leases, waiters, busyFraction: Math.round(busyFraction * 1000) / 1000 };
  }
}

function parseOwner(text: string): LeaseOwner {
  try {
    const parsed = JSON.parse(text) as Partial<LeaseOwner>;
    return {
      ...(typeof parsed.owner === 'string' && { owner: parsed.owner }),
      worker: typeof parsed.worker === 'string' ? parsed.worker : 'unknown',
      priority: parsed.priority === 'high' || parsed.priority === 'low' ? parsed.priority : 'normal',
    };
  } catch {
    return { worker: 'unknown', priority: 'normal' };
  }
}
