/**
 * Request headers as Node gives them (express `req.headers`, Socket.io `handshake.headers`):
 * names in lower case, a repeated header as an array or joined with ", ".
 */
export type RequestHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

/** Which header a key came in. */
export type KeyHeader = 'authorization' | 'x-api-key';

/**
 * What a request presented as its key:
 * - `present`: one well-formed key (it may still be unknown or revoked: see ApiKeyRegistry.authenticate);
 * - `missing`: neither header was sent;
 * - `malformed`: a header was sent but holds no usable key; `problem` says what is wrong, for the
 *   401's message, and never repeats anything the client sent.
 */
export type PresentedKey = { status: 'present'; key: string; header: KeyHeader } | { status: 'missing' } | { status: 'malformed'; problem: string };

type Present = Extract<PresentedKey, { status: 'present' }>;
type Malformed = Extract<PresentedKey, { status: 'malformed' }>;

/**
 * Longest key accepted. Issued keys have 47 characters; the bound only keeps absurd headers from
 * being hashed and compared.
 */
export const MAX_PRESENTED_KEY_CHARS = 512;

/** RFC 6750's b64token: what a bearer token may be made of. Issued keys (base64url) fit. */
const TOKEN_PATTERN = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * The key a request presents, from `Authorization: Bearer <key>` (scheme in any case) or
 * `X-API-Key: <key>`. Both may be sent if they agree. An `Authorization` header with another
 * scheme is malformed even next to an X-API-Key: whichever of the two the client meant, refusing
 * is the answer that cannot authenticate a request with a credential it did not mean to use.
 */
export function presentedKeyOf(headers: RequestHeaders): PresentedKey {
  const authorization = singleHeader(headers.authorization);
  const apiKeyHeader = singleHeader(headers['x-api-key']);
  if (authorization === undefined && apiKeyHeader === undefined) return { status: 'missing' };
  if (authorization === null) return malformed('Authorization was sent more than once');
  if (apiKeyHeader === null) return malformed('X-API-Key was sent more than once');

  const fromAuthorization = authorization === undefined ? undefined : bearerTokenOf(authorization);
  if (fromAuthorization?.status === 'malformed') return fromAuthorization;
  const fromApiKeyHeader = apiKeyHeader === undefined ? undefined : apiKeyHeaderTokenOf(apiKeyHeader);
  if (fromApiKeyHeader?.status === 'malformed') return fromApiKeyHeader;

  if (fromAuthorization && fromApiKeyHeader && fromAuthorization.key !== fromApiKeyHeader.key) {
    return malformed('Authorization and X-API-Key hold different keys: send one key, in one of them');
  }
  return fromAuthorization ?? fromApiKeyHeader ?? { status: 'missing' };
}

/** The header's one value; undefined when absent, null when sent more than once. */
function singleHeader(value: string | readonly string[] | undefined): string | undefined | null {
  if (value === undefined) return undefined;
  if (typeof value === 'string') return value;
  if (value.length === 0) return undefined;
  return value.length === 1 ? (value[0] as string) : null;
}

function bearerTokenOf(value: string): Present | Malformed {
  const match = /^(\S+)(?:[ \t]+(.*))?$/.exec(value.trim());
  if (!match) return malformed('Authorization is empty: send Authorization: Bearer <key>');
  const [, scheme, token] = match;
  if (token === undefined || token.trim() === '') {
    // A lone word is either the scheme without a key or a key without the scheme; either way, never echo it.
    return scheme?.toLowerCase() === 'bearer'
      ? malformed('Authorization: Bearer holds no key')
      : malformed('Authorization has no scheme: send Authorization: Bearer <key>');
  }
  if (scheme?.toLowerCase() !== 'bearer') return malformed('Authorization uses a scheme other than Bearer: send Authorization: Bearer <key>');
  return checkedToken(token.trim(), 'authorization', 'the Bearer token');
}

function apiKeyHeaderTokenOf(value: string): Present | Malformed {
  const token = value.trim();
  if (token === '') return malformed('X-API-Key is empty');
  if (/\s/.test(token)) return malformed('X-API-Key must hold the key alone, without a scheme or spaces');
  return checkedToken(token, 'x-api-key', 'X-API-Key');
}

function checkedToken(token: string, header: KeyHeader, what: string): Present | Malformed {
  if (token.length > MAX_PRESENTED_KEY_CHARS) return malformed(`${what} is longer than ${MAX_PRESENTED_KEY_CHARS} characters`);
  if (!TOKEN_PATTERN.test(token)) return malformed(`${what} holds characters no key has`);
  return { status: 'present', key: token, header };
}

const malformed = (problem: string): Malformed => ({ status: 'malformed', problem });
