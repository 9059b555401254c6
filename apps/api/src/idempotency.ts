import { createHash } from 'node:crypto';
import type { Request } from 'express';
import type { Cluster, Redis } from 'ioredis';
import { ValidationError } from '@mageagent/core';

/** How long an Idempotency-Key is remembered: a day, as Stripe and OpenAI do. */
export const IDEMPOTENCY_TTL_SECONDS = 24 * 3600;

/** What a key remembers: which request body it was first used with, and the task that made. */
interface Claim {
  bodyHash: string;
  taskId: string;
}

export type ClaimOutcome = { claimed: true } | { claimed: false; bodyHash: string; taskId: string };

/** Deletes the claim only while it is still the given task's: a failed creation gives its key back. */
const RELEASE = `
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value).taskId == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

type ScriptedRedis = (Redis | Cluster) & { mageReleaseIdempotency(key: string, taskId: string): Promise<number> };

/**
 * `Idempotency-Key` on task creation, per tenant: the first request with a key claims it (SET NX,
 * atomic across api replicas, so 20 concurrent duplicates make one task); later ones with the same
 * body get that task, with another body a conflict. A creation that fails releases its claim, so a
 * retry is not stuck with a task that never existed.
 */
export class IdempotencyKeys {
  private readonly redis: ScriptedRedis;

  constructor(
    redis: Redis | Cluster,
    private readonly prefix: string,
  ) {
    if (!('mageReleaseIdempotency' in redis)) redis.defineCommand('mageReleaseIdempotency', { numberOfKeys: 1, lua: RELEASE });
    this.redis = redis as ScriptedRedis;
  }

  /** The key as sent: 1–255 printable ASCII characters, or a 400. */
  static parse(value: string | undefined): string | undefined {
    if (value === undefined) return undefined;
    if (!/^[\x21-\x7e]{1,255}$/.test(value)) {
      throw new ValidationError('Idempotency-Key must be 1 to 255 printable ASCII characters, without spaces', [
        { path: 'headers.idempotency-key', message: 'invalid' },
      ]);
    }
    return value;
  }

  /**
   * A digest of the request body: the same JSON body, the same digest, whatever the order of its
   * objects' keys (as JSON says: an object is unordered) and its whitespace.
   */
  static bodyHash(body: unknown): string {
    return createHash('sha256')
      .update(JSON.stringify(body, sortedKeys) ?? '')
      .digest('base64url');
  }

  /**
   * The digest claims had before it was canonical (the body's keys in the order sent). A claim
   * lives 24 hours, so during an upgrade a retry may meet one written by the earlier version (or
   * by a replica not yet upgraded): it matches too. Can go once every api runs the canonical one.
   */
  static legacyBodyHash(body: unknown): string {
    return createHash('sha256')
      .update(JSON.stringify(body) ?? '')
      .digest('base64url');
  }

  async claim(tenant: string, key: string, claim: Claim): Promise<ClaimOutcome> {
    const name = this.keyName(tenant, key);
    // Twice at most: the claim we lost to may be released (its creation failed) before we read it.
    for (let round = 0; round < 2; round += 1) {
      if ((await this.redis.set(name, JSON.stringify(claim), 'EX', IDEMPOTENCY_TTL_SECONDS, 'NX')) === 'OK') return { claimed: true };
      const existing = await this.redis.get(name);
      if (existing !== null) {
        const parsed = JSON.parse(existing) as Claim;
        return { claimed: false, bodyHash: parsed.bodyHash, taskId: parsed.taskId };
      }
    }
    return { claimed: false, bodyHash: '', taskId: '' };
  }

  /** Whether the key still points at this task (its creation may have failed and released it). */
  async holds(tenant: string, key: string, taskId: string): Promise<boolean> {
    const existing = await this.redis.get(this.keyName(tenant, key));
    return existing !== null && (JSON.parse(existing) as Claim).taskId === taskId;
  }

  async release(tenant: string, key: string, taskId: string): Promise<void> {
    await this.redis.mageReleaseIdempotency(this.keyName(tenant, key), taskId);
  }

  private keyName(tenant: string, key: string): string {
    // Hashed: a client's key is arbitrary text, the Redis key stays short and predictable.
    return `${this.prefix}:idempotency:{${tenant}}:${createHash('sha256').update(key).digest('base64url')}`;
  }
}

/** A request's `Idempotency-Key`, checked (1–255 printable characters). */
export function idempotencyKeyOf(req: Request): string | undefined {
  return IdempotencyKeys.parse(req.get('idempotency-key'));
}

/** JSON.stringify's replacer for canonical JSON: every object with its keys sorted (by UTF-16 code units, as RFC 8785). */
function sortedKeys(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  return Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
