import { trace } from '@opentelemetry/api';
import winston from 'winston';

export type Logger = winston.Logger;

/** What replaces a value the logs must not carry. */
export const REDACTED = '[redacted]';

/**
 * Field names are compared without case or separators, so `X-API-Key`, `x_api_key` and `apiKey`
 * are one name: `xapikey` and `apikey`.
 */
const normalisedName = (name: string): string => name.toLowerCase().replace(/[^a-z0-9]/g, '');

/** Credentials: never written, whatever LOG_PROMPTS says. */
const CREDENTIAL_NAMES = new Set([
  'authorization',
  'proxyauthorization',
  'cookie',
  'setcookie',
  'apikey',
  'xapikey',
  'apikeys',
  'password',
  'passwd',
  'secret',
  'secrets',
  'token',
  'credential',
  'credentials',
  'privatekey',
  // The stored hash of an API key: not the key, but what a key is looked up by; logs never need it.
  'sha256',
  'keyhash',
]);
/** Names that end like these are credentials too: `webhookSecret`, `accessToken`, `primaryApiKey`, `adminPassword`. */
const CREDENTIAL_SUFFIXES = ['secret', 'token', 'password', 'apikey', 'authorization', 'privatekey', 'keyhash'];

/** What users send and models answer: kept out of logs unless LOG_PROMPTS=true. */
const USER_DATA_NAMES = new Set([
  'prompt',
  'prompts',
  'messages',
  'content',
  'text',
  'input',
  'instructions',
  'output',
  'outputs',
  'completion',
  'delta',
  'answer',
  'reasoning',
  'reasoningcontent',
  'refusal',
  'arguments',
  'body',
  'rawbody',
]);

type FieldKind = 'credential' | 'userData' | 'plain';

/**
 * The kind of each field name seen, so a name is classified once. Bounded: logged objects may carry
 * client-chosen keys (metadata), and a cache must not grow with them.
 */
const fieldKinds = new Map<string, FieldKind>();
const FIELD_KIND_CACHE_SIZE = 2048;

function fieldKindOf(name: string): FieldKind {
  const known = fieldKinds.get(name);
  if (known !== undefined) return known;
  const normalised = normalisedName(name);
  const kind: FieldKind =
    CREDENTIAL_NAMES.has(normalised) || CREDENTIAL_SUFFIXES.some((suffix) => normalised.endsWith(suffix))
      ? 'credential'
      : USER_DATA_NAMES.has(normalised)
        ? 'userData'
        : 'plain';
  if (fieldKinds.size < FIELD_KIND_CACHE_SIZE) fieldKinds.set(name, kind);
  return kind;
}

/**
 * Credentials inside free text (an error quoting a request's headers, a URL with a password): an
 * HTTP authorization value, or the password of a URL's userinfo. Names do not help there.
 */
const AUTHORIZATION_IN_TEXT = /\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{8,}/gi;
const URL_PASSWORD_IN_TEXT = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)[^\s@/]+@/gi;

function scrubText(text: string): string {
  return text.replace(AUTHORIZATION_IN_TEXT, `$1$2${REDACTED}`).replace(URL_PASSWORD_IN_TEXT, `$1${REDACTED}@`);
}

/** Deeper than this, a value is replaced: logs carry records, not documents, and a credential must not hide below the walk. */
const MAX_DEPTH = 8;

function redactValue(value: unknown, depth: number, logPrompts: boolean): unknown {
  if (typeof value === 'string') return scrubText(value);
  if (value === null || typeof value !== 'object' || value instanceof Date) return value;
  if (depth >= MAX_DEPTH) return '[too deep]';
  if (Array.isArray(value)) return value.map((item) => redactValue(item, depth + 1, logPrompts));
  if (value instanceof Error) {
    return { name: value.name, message: scrubText(value.message), ...(value.stack !== undefined && { stack: scrubText(value.stack) }) };
  }
  const copy: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) copy[key] = redactField(key, inner, depth + 1, logPrompts);
  return copy;
}

function redactField(key: string, value: unknown, depth: number, logPrompts: boolean): unknown {
  const kind = fieldKindOf(key);
  if (kind === 'credential' || (kind === 'userData' && !logPrompts)) return REDACTED;
  return redactValue(value, depth, logPrompts);
}

/**
 * Applied to every log line. `message` is the developer's text, never a field to drop, but it is
 * scrubbed of credentials like any other string.
 */
function redactFormat(logPrompts: boolean): winston.Logform.Format {
  return winston.format((info) => {
    for (const key of Object.keys(info)) {
      if (key === 'level') continue;
      info[key] = key === 'message' ? redactValue(info[key], 0, logPrompts) : redactField(key, info[key], 0, logPrompts);
    }
    return info;
  })();
}

/**
 * `traceId` and `spanId` of the span active where the line was logged, so a log line leads to its
 * trace. Nothing when tracing is off (no span is ever active then).
 */
const traceContextFormat = winston.format((info) => {
  const spanContext = trace.getActiveSpan()?.spanContext();
  if (spanContext !== undefined && trace.isSpanContextValid(spanContext)) {
    info.traceId = spanContext.traceId;
    info.spanId = spanContext.spanId;
  }
  return info;
});

export interface LoggerOptions {
  service: string;
  level?: string;
  /**
   * Write prompts and outputs (`prompt`, `messages`, `content`, `text`, `output`, ...) to the logs:
   * LOG_PROMPTS=true, for development. Off by default. Credentials (`authorization`, API keys,
   * tokens, passwords, secrets) are redacted whatever this says.
   */
  logPrompts?: boolean;
  /** Deprecated settings in use: each is logged once, as a warning, when the logger is made. */
  deprecations?: readonly string[];
}

/** A winston JSON logger; child loggers carry `taskId`, `step` and the like as fields. */
export function createLogger(options: LoggerOptions): Logger {
  const logger = winston.createLogger({
    level: options.level ?? 'info',
    defaultMeta: { service: options.service },
    format: winston.format.combine(
      winston.format.timestamp(),
      traceContextFormat(),
      winston.format.errors({ stack: true }),
      redactFormat(options.logPrompts === true),
      winston.format.json(),
    ),
    transports: [new winston.transports.Console({ stderrLevels: ['error'] })],
  });
  for (const deprecation of options.deprecations ?? []) logger.warn(deprecation);
  return logger;
}
