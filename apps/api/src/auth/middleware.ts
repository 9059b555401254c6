import type { RequestHandler, Response } from 'express';
import { ForbiddenError, type Scope } from '@mageagent/core';
import type { Caller } from '../task-service';
import type { ApiServices } from '../services';

/** The authenticated caller of a request (set by `authenticate`). */
export function callerOf(res: Response): Caller {
  const caller = res.locals.caller as Caller | undefined;
  if (caller === undefined) throw new Error('authenticate() did not run for this route');
  return caller;
}

/**
 * Authenticates every request that reaches it (401 on a missing, malformed or unknown key) and
 * counts it against its key's requests per minute (429 + Retry-After), before the body is read:
 * a caller without a valid key costs no parsing.
 */
export function authenticate(services: ApiServices): RequestHandler {
  return async (req, res, next) => {
    const caller = services.auth.fromHeaders(req.headers);
    res.locals.caller = caller;
    await services.rateLimits.consume(caller.principal, caller.limits);
    next();
  };
}

/** A route only keys with `scope` may use (403 FORBIDDEN for a valid key without it). */
export function requireScope(scope: Scope): RequestHandler {
  return (_req, res, next) => {
    const { principal } = callerOf(res);
    if (!principal.scopes.includes(scope)) throw new ForbiddenError(`this key (${principal.keyId}) does not have the "${scope}" scope`);
    next();
  };
}
