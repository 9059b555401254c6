import { createHmac } from 'node:crypto';
import { ConfigError } from '@mageagent/core';

/**
 * Where a tenant's webhook signing secret comes from. Each tenant signs with its own secret, so a
 * receiver that trusts one tenant's webhooks cannot be sent a forged one by another tenant.
 *
 * A secret is in the Standard Webhooks form, `whsec_` + base64 of 24 to 64 random bytes, which is
 * what the receiver passes to `new Webhook(secret)` to verify. Deliberately left out: rotation
 * (several secrets at once) and storage; an implementation backed by the api-keys file or a vault
 * answers the same question.
 */
export interface WebhookSecrets {
  /**
   * The tenant's signing secret, or undefined when it has none: its deliveries are then recorded as
   * failed (and not retried) rather than sent unsigned.
   */
  secretFor(tenant: string): string | undefined;
}

const SECRET_PREFIX = 'whsec_';
/** Key lengths the Standard Webhooks spec allows. */
const MIN_KEY_BYTES = 24;
const MAX_KEY_BYTES = 64;

/**
 * A tenant's secret derived from the deployment's master secret: `whsec_` + base64(HMAC-SHA256(master,
 * tenant)). Knowing one tenant's secret tells nothing about another's, and nothing needs storing: the
 * operator gives each tenant its own (the same function, run once), and every worker derives it again.
 */
export function deriveWebhookSecret(master: string, tenant: string): string {
  return SECRET_PREFIX + createHmac('sha256', master).update(tenant, 'utf8').digest('base64');
}

/** Whether a string is a usable Standard Webhooks secret (`whsec_` + base64 of 24 to 64 bytes). */
export function isWebhookSecret(secret: string): boolean {
  if (!secret.startsWith(SECRET_PREFIX)) return false;
  const encoded = secret.slice(SECRET_PREFIX.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) || encoded.length % 4 !== 0) return false;
  const bytes = Buffer.from(encoded, 'base64').length;
  return bytes >= MIN_KEY_BYTES && bytes <= MAX_KEY_BYTES;
}

export interface DerivedWebhookSecretsOptions {
  /** The master secret (WEBHOOK_SECRET); tenants without an explicit secret get one derived from it. */
  master?: string;
  /** Secrets given per tenant (e.g. by the api-keys file); they win over derived ones. */
  explicit?: ReadonlyMap<string, string>;
}

/** The default WebhookSecrets: a tenant's explicit secret, else one derived from the master secret. */
export class DerivedWebhookSecrets implements WebhookSecrets {
  private readonly master: string | undefined;
  private readonly explicit: ReadonlyMap<string, string>;

  constructor(options: DerivedWebhookSecretsOptions) {
    this.master = options.master || undefined;
    this.explicit = options.explicit ?? new Map();
    // A malformed secret is a configuration mistake; found at start-up, not at the first delivery.
    // The message names the tenant, never the secret.
    const malformed = [...this.explicit].filter(([, secret]) => !isWebhookSecret(secret)).map(([tenant]) => tenant);
    if (malformed.length > 0) {
      throw new ConfigError(`webhook secrets of tenant(s) ${malformed.join(', ')} are not whsec_ + base64 of ${MIN_KEY_BYTES}-${MAX_KEY_BYTES} bytes`);
    }
  }

  secretFor(tenant: string): string | undefined {
    const explicit = this.explicit.get(tenant);
    if (explicit !== undefined) return explicit;
    return this.master === undefined ? undefined : deriveWebhookSecret(this.master, tenant);
  }
}
