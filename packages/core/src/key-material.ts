import { hash, randomBytes } from 'node:crypto';

/**
 * What every key this service issues starts with, so a key is recognisable wherever it leaks
 * (a log, a commit, a paste): secret scanners can match on it, and the keys file can refuse one
 * pasted where its SHA-256 belongs.
 */
export const API_KEY_PREFIX = 'mak_';

/** Random bytes in a key: 256 bits, so guessing one is hopeless and hashing it once (no salt, no KDF) is enough. */
const API_KEY_RANDOM_BYTES = 32;

/** A new random API key: `mak_` + 32 bytes in base64url (43 characters). Shown once, never stored. */
export function generateApiKey(): string {
  return API_KEY_PREFIX + randomBytes(API_KEY_RANDOM_BYTES).toString('base64url');
}

/** The hex SHA-256 of a key: what the keys file stores instead of the key. */
export function sha256Hex(key: string): string {
  // One-shot (Node ≥ 20.12): a quarter of createHash's cost, and it runs on every keyed request.
  return hash('sha256', key, 'hex');
}

/** Bytes of a generated webhook signing secret: the Standard Webhooks spec asks for 24 to 64. */
const WEBHOOK_SECRET_BYTES = 32;

/** A new webhook signing secret in the Standard Webhooks form `whsec_<base64>`. */
export function generateWebhookSecret(): string {
  return `whsec_${randomBytes(WEBHOOK_SECRET_BYTES).toString('base64')}`;
}
