import { PayloadTooLargeError, ValidationError, type MageError } from '@mageagent/core';

/**
 * Errors the HTTP layer raises before a handler runs, as typed errors: body-parser marks its own
 * with a `type`, and express gives other client mistakes (a path that does not URI-decode) a 4xx
 * `status`. Each API surface then answers them in its own shape.
 */
export function fromHttpLayer(error: unknown): MageError | undefined {
  const { type, status, statusCode } = (error ?? {}) as { type?: unknown; status?: unknown; statusCode?: unknown };
  if (type === 'entity.too.large') return new PayloadTooLargeError('request body is larger than the configured limit');
  if (type === 'entity.parse.failed') return new ValidationError('request body is not valid JSON (content-type: application/json)');
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
    return new ValidationError('request body encoding is not supported; send UTF-8 JSON');
  }
  const code = status ?? statusCode;
  if (typeof code === 'number' && code >= 400 && code < 500) return new ValidationError('malformed request URL or body');
  return undefined;
}
