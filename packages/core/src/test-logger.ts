import { PassThrough } from 'node:stream';
import winston from 'winston';
import { createLogger, type Logger, type LoggerOptions } from './logger';

/** Test support: a stream that keeps the JSON lines written to it. */
export interface CapturedOutput {
  stream: PassThrough;
  /** Everything written so far, as printed. */
  raw(): string;
  /** The lines written so far, parsed (as `Line`: the test knows what it logged). */
  lines<Line extends object = Record<string, unknown>>(): Line[];
}

export function capturedOutput(): CapturedOutput {
  const stream = new PassThrough();
  let raw = '';
  stream.on('data', (chunk: Buffer) => (raw += chunk.toString()));
  return {
    stream,
    raw: () => raw,
    lines: <Line extends object>() =>
      raw
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Line),
  };
}

/** Test support: a logger made by createLogger whose lines are kept instead of printed. */
export interface CapturedLogger extends Omit<CapturedOutput, 'stream'> {
  logger: Logger;
}

export function capturedLogger(options: Partial<LoggerOptions> = {}): CapturedLogger {
  const logger = createLogger({ service: 'test', ...options });
  const { stream, raw, lines } = capturedOutput();
  logger.clear().add(new winston.transports.Stream({ stream }));
  return { logger, raw, lines };
}
