import type { IncomingMessage, ServerResponse } from 'node:http';
import { isMageError, PayloadTooLargeError, ServiceUnavailableError, ValidationError, type MageError } from '@mageagent/core';
import { isRedisUnavailable, redisUnavailable, TaskNotQueuedError } from '@mageagent/tasks';

/**
 * Errors the HTTP layer raises before a handler runs, as typed errors: body-parser marks its own
 * with a `type`, and express gives other client mistakes (a path that does not URI-decode) a 4xx
 * `status`. Each API surface then answers them in its own shape.
 */
export function fromHttpLayer(error: unknown): MageError | undefined {
  const { type, status, statusCode } = (error ?? {}) as { type?: unknown; status?: unknown; statusCode?: unknown };
  if (type === 'entity.too.large') return new PayloadTooLargeError('request body is larger than the configured limit');
  if (type === 'entity.parse.failed') {
    // body-parser refuses valid JSON that is not an object or array (`null`, `"x"`, `1`) the same way.
    return new ValidationError(
      isJson((error as { body?: unknown }).body)
        ? 'request body must be a JSON object (content-type: application/json)'
        : 'request body is not valid JSON (content-type: application/json)',
    );
  }
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
    return new ValidationError('request body encoding is not supported; send UTF-8 JSON');
  }
  const code = status ?? statusCode;
  if (typeof code === 'number' && code >= 400 && code < 500) return new ValidationError('malformed request URL or body');
  return undefined;
}

/**
 * A dependency that is down, as the client should hear it: Redis unreachable (or a task that
 * could not be queued because of it) is a 503 with Retry-After, not a 500.
 */
export function fromDependency(error: unknown): ServiceUnavailableError | undefined {
  if (error instanceof ServiceUnavailableError) return error;
  const cause = error instanceof TaskNotQueuedError ? error.cause : error;
  return isRedisUnavailable(cause) ? redisUnavailable(error) : undefined;
}

/** Any error as the typed error a client is answered with (anything unknown stays as it is: a 500). */
export function asClientError(error: unknown): unknown {
  return fromHttpLayer(error) ?? fromDependency(error) ?? error;
}

/** Seconds after which retrying may succeed, for errors that know (503 UNAVAILABLE, QUEUE_FULL, 429). */
export function retryAfterOf(error: unknown): number | undefined {
  const seconds = (error as { retryAfterSeconds?: unknown } | null)?.retryAfterSeconds;
  return isMageError(error) && typeof seconds === 'number' ? seconds : undefined;
}

/** Whether a request's Content-Length declares a body over `limit` bytes (absent or malformed: no). */
export function declaresBodyOver(req: IncomingMessage, limit: number): boolean {
  return Number(req.headers['content-length']) > limit;
}

/**
 * Whether the client of a request has gone: its socket is closed (and 'close' has been emitted,
 * possibly before a handler could listen for it, while an earlier middleware awaited).
 */
export function clientLeft(req: IncomingMessage, res: ServerResponse): boolean {
  return res.destroyed || req.socket.destroyed;
}

function isJson(text: unknown): boolean {
  if (typeof text !== 'string') return false;
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
