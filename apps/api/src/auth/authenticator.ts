import type { IncomingHttpHeaders } from 'node:http';
import { OPEN_MODE_PRINCIPAL, UnauthorizedError, type QuotaLimits } from '@mageagent/core';
import type { Caller } from '../task-service';
import { presentedKeyOf } from './presented-key';

/** Where keys are looked up: the keys file's registry, or a test's. */
export interface KeyDirectory {
  /** The caller a presented key stands for (its principal and limits), or undefined when no key matches. */
  identify(presentedKey: string, defaults: QuotaLimits): Caller | undefined;
  /** The tenant's own webhook signing secret, when the directory has one. */
  webhookSecretOf?(tenant: string): string | undefined;
}

/**
 * Who a request or socket is. With keys configured, a key must be presented (`Authorization:
 * Bearer <key>` or `X-API-Key`; sockets: `auth: { token }`) and must match; without (open mode),
 * every caller is the one tenant `default` with every scope, and the api listens on loopback only.
 */
export class Authenticator {
  constructor(
    private readonly directory: KeyDirectory | undefined,
    private readonly defaults: QuotaLimits,
  ) {}

  get openMode(): boolean {
    return this.directory === undefined;
  }

  fromHeaders(headers: IncomingHttpHeaders): Caller {
    if (this.directory === undefined) return { principal: OPEN_MODE_PRINCIPAL, limits: this.defaults };
    return this.identify(presentedKey(headers));
  }

  /** A socket's handshake: `auth: { token }`, else the same headers as HTTP (non-browser clients). */
  fromHandshake(auth: unknown, headers: IncomingHttpHeaders): Caller {
    if (this.directory === undefined) return { principal: OPEN_MODE_PRINCIPAL, limits: this.defaults };
    const token = (auth as { token?: unknown } | null | undefined)?.token;
    if (token !== undefined) {
      if (typeof token !== 'string' || token === '') throw new UnauthorizedError('auth.token must be an API key string');
      return this.identify(token);
    }
    return this.identify(presentedKey(headers));
  }

  private identify(key: string): Caller {
    const caller = this.directory?.identify(key, this.defaults);
    // The same answer for a key nobody issued and one since revoked: neither says which.
    if (caller === undefined) throw new UnauthorizedError('the API key is not valid');
    return caller;
  }
}

/** The key a request presents (see presentedKeyOf), or the 401 that says what is wrong. */
function presentedKey(headers: IncomingHttpHeaders): string {
  const presented = presentedKeyOf(headers);
  if (presented.status === 'missing') throw new UnauthorizedError();
  if (presented.status === 'malformed') throw new UnauthorizedError(presented.problem);
  return presented.key;
}
