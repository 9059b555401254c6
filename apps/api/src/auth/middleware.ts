import type { RequestHandler, Response } from 'express';
import { ForbiddenError, type Scope } from '@mageagent/core';
import type { Caller } from '../task-service';
import type { PendingRequestCount } from '../quotas/request-rate';
import type { ApiServices } from '../services';

/** The routes whose request is counted with the task it creates (see PendingRequestCount). */
const TASK_CREATING_PATHS = new Set(['/tasks', '/v1/chat/completions']);

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
 *
 * The routes that create tasks (`POST /tasks`, `POST /v1/chat/completions`) are counted with the
 * task they create, in the same Redis call, instead (see PendingRequestCount; a key already past
 * its limit is refused here, from memory).
 */
export function authenticate(services: ApiServices): RequestHandler {
  return async (req, res, next) => {
    const caller = services.auth.fromHeaders(req.headers);
    res.locals.caller = caller;
    if (req.method === 'POST' && TASK_CREATING_PATHS.has(req.path)) {
      res.locals.requestCount = services.rateLimits.pending(caller.principal, caller.limits);
      if (res.locals.requestCount !== undefined) return next();
    }
    await services.rateLimits.consume(caller.principal, caller.limits);
    next();
  };
}

/** The request's count when it waits for the task it creates (set by `authenticate`; see PendingRequestCount). */
export function pendingCountOf(res: Response): PendingRequestCount | undefined {
  return res.locals.requestCount as PendingRequestCount | undefined;
}

/** A route only keys with `scope` may use (403 FORBIDDEN for a valid key without it). */
export function requireScope(scope: Scope): RequestHandler {
  return (_req, res, next) => {
    const { principal } = callerOf(res);
    if (!principal.scopes.includes(scope)) throw new ForbiddenError(`this key (${principal.keyId}) does not have the "${scope}" scope`);
    next();
  };
}
