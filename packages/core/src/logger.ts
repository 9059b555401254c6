import winston from 'winston';

export type Logger = winston.Logger;

/** Fields whose values are user data or secrets: never written to logs unless LOG_REDACT=false. */
const REDACTED_KEYS = new Set([
  'prompt',
  'messages',
  'content',
  'text',
  'output',
  'authorization',
  'apiKey',
  'api_key',
  'password',
  'token',
]);

function redact(value: unknown, depth: number): unknown {
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((item) => redact(item, depth + 1));
  const copy: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    copy[key] = REDACTED_KEYS.has(key) ? '[redacted]' : redact(inner, depth + 1);
  }
  return copy;
}

const redactFormat = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (key === 'message' || key === 'level') continue;
    info[key] = REDACTED_KEYS.has(key) ? '[redacted]' : redact(info[key], 0);
  }
  return info;
});

export interface LoggerOptions {
  service: string;
  level?: string;
  /** Defaults to true: prompts, outputs and credentials are redacted. */
  redact?: boolean;
}

/** A winston JSON logger; child loggers carry `taskId`, `step` and the like as fields. */
export function createLogger(options: LoggerOptions): Logger {
  const formats = [winston.format.timestamp(), winston.format.errors({ stack: true })];
  if (options.redact !== false) formats.push(redactFormat());
  formats.push(winston.format.json());
  return winston.createLogger({
    level: options.level ?? 'info',
    defaultMeta: { service: options.service },
    format: winston.format.combine(...formats),
    transports: [new winston.transports.Console({ stderrLevels: ['error'] })],
  });
}
