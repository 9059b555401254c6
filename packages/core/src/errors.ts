import { boundDetails, quote } from './quote';

/**
 * Typed errors with stable codes. Every error a client can see is one of these;
 * anything else is reported as INTERNAL without its message or stack.
 */
export const ErrorCodes = [
  'VALIDATION_FAILED',
  'NOT_FOUND',
  'CONFLICT',
  'PAYLOAD_TOO_LARGE',
  'UNAUTHORIZED',
  'FORBIDDEN',
  'RATE_LIMITED',
  'QUEUE_FULL',
  'IDEMPOTENCY_CONFLICT',
  'UNAVAILABLE',
  'MODEL_UNAVAILABLE',
  'MODEL_TIMEOUT',
  'MODEL_ERROR',
  'TASK_TIMEOUT',
  'CANCELLED',
  'CONFIG_INVALID',
  'INTERNAL',
] as const;
export type ErrorCode = (typeof ErrorCodes)[number];

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: unknown;
}

export interface MageErrorOptions {
  details?: unknown;
  retryable?: boolean;
  cause?: unknown;
}

/** Base class: a code, the HTTP status it maps to, and whether a retry may succeed. */
export class MageError extends Error {
  override readonly name: string = 'MageError';
  readonly details?: unknown;
  readonly retryable: boolean;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly httpStatus: number,
    options: MageErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.details = options.details;
    this.retryable = options.retryable ?? false;
  }

  /** The client-facing body; details and message are bounded so input is never echoed at full size. */
  toBody(): ErrorBody {
    const message = quote(this.message, MESSAGE_MAX_CHARS);
    return this.details === undefined ? { code: this.code, message } : { code: this.code, message, details: boundDetails(this.details) };
  }
}

/** Longest error message a client is sent; messages quote input only in short excerpts anyway. */
const MESSAGE_MAX_CHARS = 1024;

export class ValidationError extends MageError {
  override readonly name = 'ValidationError';
  constructor(message: string, details?: unknown) {
    super('VALIDATION_FAILED', message, 400, { details });
  }
}

export class NotFoundError extends MageError {
  override readonly name = 'NotFoundError';
  constructor(message: string) {
    super('NOT_FOUND', message, 404);
  }
}

export class ConflictError extends MageError {
  override readonly name = 'ConflictError';
  constructor(message: string, details?: unknown) {
    super('CONFLICT', message, 409, { details });
  }
}

export class PayloadTooLargeError extends MageError {
  override readonly name = 'PayloadTooLargeError';
  constructor(message: string, details?: unknown) {
    super('PAYLOAD_TOO_LARGE', message, 413, { details });
  }
}

/** No credentials, malformed ones, or a key nobody issued (or one since revoked). */
export class UnauthorizedError extends MageError {
  override readonly name = 'UnauthorizedError';
  constructor(message = 'a valid API key is required: Authorization: Bearer <key> (or X-API-Key)') {
    super('UNAUTHORIZED', message, 401);
  }
}

/** A valid key without the scope the route needs. */
export class ForbiddenError extends MageError {
  override readonly name = 'ForbiddenError';
  constructor(message: string) {
    super('FORBIDDEN', message, 403);
  }
}

/** A quota of the caller's key is used up for now: retry after `retryAfterSeconds`. */
export class RateLimitedError extends MageError {
  override readonly name = 'RateLimitedError';
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
    details?: unknown,
  ) {
    super('RATE_LIMITED', message, 429, { retryable: true, details });
  }
}

/**
 * A request past its key's requests per minute, wherever it was counted (the api's limiter, or a
 * new task's creation script): `msBeforeNext` is what is left of the key's window.
 */
export class RequestRateExceededError extends RateLimitedError {
  constructor(
    readonly limit: number,
    readonly msBeforeNext: number,
  ) {
    const retryAfterSeconds = Math.max(1, Math.ceil(msBeforeNext / 1000));
    super(`this key may make ${limit} requests a minute; retry in ${retryAfterSeconds} s`, retryAfterSeconds, { quota: 'requestsPerMinute', limit });
  }
}

/** The same Idempotency-Key was used with a different request body. */
export class IdempotencyConflictError extends MageError {
  override readonly name = 'IdempotencyConflictError';
  constructor(message: string) {
    super('IDEMPOTENCY_CONFLICT', message, 422);
  }
}

/**
 * A dependency of this service (Redis) cannot be reached right now: answered at once, with a
 * `Retry-After`, rather than after hanging until the client gives up. Retrying later will work.
 */
export class ServiceUnavailableError extends MageError {
  override readonly name = 'ServiceUnavailableError';
  constructor(
    message: string,
    /** Seconds after which a retry may succeed; sent as the `Retry-After` header. */
    readonly retryAfterSeconds = 1,
    options: MageErrorOptions = {},
  ) {
    super('UNAVAILABLE', message, 503, { retryable: true, ...options });
  }
}

/**
 * More tasks wait in the queue than the GPU hosts can reach soon (`MAX_QUEUED_TASKS`): refused
 * now rather than accepted for hours, like Ollama's OLLAMA_MAX_QUEUE.
 */
export class QueueFullError extends MageError {
  override readonly name = 'QueueFullError';
  readonly retryAfterSeconds: number;
  constructor(message: string, retryAfterSeconds = 5) {
    super('QUEUE_FULL', message, 503, { retryable: true });
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export interface ModelUnavailableErrorOptions extends MageErrorOptions {
  /** See ModelUnavailableError.retryAfterMs. */
  retryAfterMs?: number;
}

/** The model server could not be reached, or answered 5xx/429: worth retrying. */
export class ModelUnavailableError extends MageError {
  override readonly name = 'ModelUnavailableError';
  /**
   * How long the server asked to be left alone before the next try, in milliseconds (0 = retry at
   * once), from its `retry-after-ms` or `Retry-After` header; undefined when it sent neither or
   * sent something unreadable. A lower bound on the caller's wait: retry loops wait at least this.
   */
  readonly retryAfterMs?: number;

  constructor(message: string, options: ModelUnavailableErrorOptions = {}) {
    const { retryAfterMs, ...rest } = options;
    super('MODEL_UNAVAILABLE', message, 503, { retryable: true, ...rest });
    this.retryAfterMs = retryAfterMs;
  }
}

/** No first token, or no completion, within the model's configured timeout. */
export class ModelTimeoutError extends MageError {
  override readonly name = 'ModelTimeoutError';
  constructor(message: string, options: MageErrorOptions = {}) {
    super('MODEL_TIMEOUT', message, 504, { retryable: true, ...options });
  }
}

/** The model server rejected the request (4xx) or answered something unusable: final. */
export class ModelResponseError extends MageError {
  override readonly name = 'ModelResponseError';
  constructor(message: string, options: MageErrorOptions = {}) {
    super('MODEL_ERROR', message, 502, { retryable: false, ...options });
  }
}

export class TaskTimeoutError extends MageError {
  override readonly name = 'TaskTimeoutError';
  constructor(timeoutMs: number) {
    super('TASK_TIMEOUT', `task did not finish within ${timeoutMs} ms`, 504, { details: { timeoutMs } });
  }
}

export class CancelledError extends MageError {
  override readonly name = 'CancelledError';
  constructor(message = 'task was cancelled') {
    super('CANCELLED', message, 409);
  }
}

export class ConfigError extends MageError {
  override readonly name = 'ConfigError';
  constructor(message: string, details?: unknown) {
    super('CONFIG_INVALID', message, 500, { details });
  }
}

export function isMageError(error: unknown): error is MageError {
  return error instanceof MageError;
}

/** Whether an error is worth retrying; unknown errors (network, Redis blips) are. */
export function isRetryable(error: unknown): boolean {
  return isMageError(error) ? error.retryable : true;
}

/** The client-safe body of any error: known errors as they are, anything else as INTERNAL. */
export function toErrorBody(error: unknown): ErrorBody {
  if (isMageError(error)) return error.toBody();
  return { code: 'INTERNAL', message: 'internal error' };
}
