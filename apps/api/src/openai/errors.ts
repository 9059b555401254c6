import {
  CancelledError,
  isMageError,
  ModelResponseError,
  ModelTimeoutError,
  ModelUnavailableError,
  quote,
  TaskTimeoutError,
  type TaskErrorInfo,
  type z,
} from '@mageagent/core';
import { fromDependency, fromHttpLayer, retryAfterOf } from '../http-errors';

/** OpenAI's error body: what every OpenAI client knows how to read. */
export interface OpenAIErrorBody {
  message: string;
  /** `invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error` or `server_error`. */
  type: string;
  /** The request field at fault, in OpenAI's notation (`messages[0].content`), when there is one. */
  param: string | null;
  /** A stable machine-readable code (`model_not_found`, `task_timeout`, ...), when there is one. */
  code: string | null;
}

/**
 * An error the facade answers in OpenAI's shape. `retryable` becomes OpenAI's `x-should-retry`
 * header, which the official SDKs obey before their own status rules: without it they would retry
 * a task that timed out (504) or was cancelled (409) and start the same work again.
 */
export class OpenAIFacadeError extends Error {
  override readonly name = 'OpenAIFacadeError';
  readonly body: OpenAIErrorBody;

  constructor(
    readonly status: number,
    message: string,
    fields: { param?: string | null; code?: string | null; type?: string } = {},
    readonly retryable?: boolean,
    /** Seconds after which a retry may succeed, sent as `Retry-After` (a dependency that is down). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    // Messages and params may quote the request: bounded, so an error never echoes it whole.
    this.body = {
      message: quote(message, 1024),
      type: fields.type ?? errorTypeOf(status),
      param: fields.param == null ? null : quote(fields.param, 256),
      code: fields.code ?? null,
    };
  }
}

/** The OpenAI error type OpenAI itself uses for a status. */
export function errorTypeOf(status: number): string {
  if (status >= 500) return 'server_error';
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 429) return 'rate_limit_error';
  return 'invalid_request_error';
}

export const invalidRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new OpenAIFacadeError(400, message, { param, code });

/** OpenAI's answer to an unknown model (404 `model_not_found`), listing the models that do exist. */
export function modelNotFound(model: string, available: string[], param: string | null = 'model'): OpenAIFacadeError {
  return new OpenAIFacadeError(404, `The model \`${quote(model)}\` does not exist. Available models: ${available.join(', ')}.`, {
    param,
    code: 'model_not_found',
  });
}

/** `messages.0.content` → `messages[0].content`, as OpenAI names parameters. */
export function paramPath(path: ReadonlyArray<PropertyKey>): string {
  return path.reduce<string>((joined, key) => {
    if (typeof key === 'number') return `${joined}[${key}]`;
    return joined === '' ? quote(String(key)) : `${joined}.${quote(String(key))}`;
  }, '');
}

/** The first zod issue as OpenAI words it; OpenAI reports one problem per answer, so do we. */
export function fromZodError(error: z.ZodError): OpenAIFacadeError {
  const issue = error.issues[0];
  if (issue === undefined) return invalidRequest('Invalid request body.');
  const param = paramPath(issue.path) || null;
  const others = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more problem${error.issues.length > 2 ? 's' : ''})` : '';
  if (issue.code === 'invalid_type' && issue.input === undefined && param !== null) {
    return invalidRequest(`Missing required parameter: '${param}'.${others}`, param, 'missing_required_parameter');
  }
  const where = param === null ? 'the request body' : `'${param}'`;
  if (issue.code === 'too_big' && (issue.origin === 'string' || issue.origin === 'array')) {
    // OpenAI's words and codes for a string or array over its limit; the length, never the value.
    const [kind, article] = issue.origin === 'string' ? ['string', 'a'] : ['array', 'an'];
    const got = typeof issue.input === 'string' || Array.isArray(issue.input) ? `, but got ${article} ${kind} with length ${issue.input.length} instead` : '';
    return invalidRequest(
      `Invalid ${where}: ${kind} too long. Expected ${article} ${kind} with maximum length ${issue.maximum}${got}.${others}`,
      param,
      `${kind}_above_max_length`,
    );
  }
  const code = issue.code === 'invalid_type' ? 'invalid_type' : 'invalid_value';
  return invalidRequest(`Invalid value for ${where}: ${quote(issue.message, 256)}.${others}`, param, code);
}

/**
 * The HTTP status of a task error code, read from core's typed errors so the facade answers with
 * the same status the rest of the API would (MODEL_UNAVAILABLE 503, TASK_TIMEOUT 504, ...).
 */
const STATUS_BY_TASK_ERROR_CODE = new Map<string, number>(
  [new ModelUnavailableError(''), new ModelTimeoutError(''), new ModelResponseError(''), new TaskTimeoutError(0), new CancelledError()].map((error) => [
    error.code,
    error.httpStatus,
  ]),
);

/** A failed or cancelled task's error, as the facade answers it. */
export function fromTaskError(error: TaskErrorInfo): OpenAIFacadeError {
  const status = STATUS_BY_TASK_ERROR_CODE.get(error.code) ?? 500;
  return new OpenAIFacadeError(status, error.message, { code: error.code.toLowerCase() }, error.retryable);
}

/** Any error → the facade's answer; errors the facade does not know become a bare 500 (no message, no stack). */
export function toOpenAIError(error: unknown): OpenAIFacadeError {
  if (error instanceof OpenAIFacadeError) return error;
  const httpError = fromHttpLayer(error);
  if (httpError?.code === 'PAYLOAD_TOO_LARGE') {
    return new OpenAIFacadeError(413, 'The request body is larger than this server accepts.', { code: 'request_too_large' });
  }
  if (httpError) return invalidRequest(`The ${httpError.message}.`);
  const unavailable = fromDependency(error);
  if (unavailable) return new OpenAIFacadeError(503, unavailable.message, { code: 'unavailable' }, true, unavailable.retryAfterSeconds);
  // What OpenAI's own clients expect for these: `invalid_api_key` makes the SDKs raise an AuthenticationError.
  if (isMageError(error) && error.code === 'UNAUTHORIZED') {
    return new OpenAIFacadeError(401, error.message, { code: 'invalid_api_key', type: 'invalid_request_error' }, false);
  }
  if (isMageError(error)) {
    const retryAfter = retryAfterOf(error);
    if (retryAfter !== undefined) return new OpenAIFacadeError(error.httpStatus, error.message, { code: error.code.toLowerCase() }, true, retryAfter);
  }
  if (isMageError(error)) {
    return new OpenAIFacadeError(error.httpStatus, error.message, { code: error.code.toLowerCase() }, error.httpStatus >= 500 ? error.retryable : undefined);
  }
  return new OpenAIFacadeError(500, 'The server had an error while processing your request.', { code: 'internal' });
}
