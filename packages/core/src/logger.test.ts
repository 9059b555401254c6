import { execFile } from 'node:child_process';
import path from 'node:path';
import { parseEnv, RedisEnv, logOptionsOf } from './env';
import { z } from 'zod';
import { REDACTED } from './logger';
import { capturedLogger } from './test-logger';

const API_KEY = 'mak_live_0123456789abcdefghij';
const BEARER = `Bearer ${API_KEY}`;
const PROMPT = 'Summarise the quarterly report for ACME';
const OUTPUT = 'ACME grew 12% this quarter';

/** Everything a careless caller might log about a request. */
const requestLog = {
  headers: { authorization: BEARER, 'x-api-key': API_KEY, 'Idempotency-Key': 'retry-1', 'content-type': 'application/json' },
  apiKey: API_KEY,
  key: { id: 'key_1', sha256: 'a'.repeat(64), webhookSecret: 'whsec_abc' },
  redisUrl: 'redis://mageagent:hunter2-password@redis:6379/0',
  error: `model server refused: ${BEARER} is not valid`,
  body: { prompt: PROMPT },
  task: { input: { messages: [{ role: 'user', content: PROMPT }] }, result: { content: OUTPUT, usage: { totalTokens: 12 } }, metadata: { team: 'a' } },
  prompt: PROMPT,
  output: OUTPUT,
};

describe('credentials are never logged', () => {
  test.each([false, true])('LOG_PROMPTS=%s: no key, Authorization value, password, hash or webhook secret reaches the output', (logPrompts) => {
    const { logger, raw, lines } = capturedLogger({ logPrompts });
    logger.info(`calling with ${BEARER}`, requestLog);
    const text = raw();
    expect(text).not.toContain(API_KEY);
    expect(text).not.toContain('hunter2');
    expect(text).not.toContain('a'.repeat(64));
    expect(text).not.toContain('whsec_abc');
    const [line] = lines();
    expect(line).toMatchObject({
      message: `calling with Bearer ${REDACTED}`,
      headers: { authorization: REDACTED, 'x-api-key': REDACTED, 'Idempotency-Key': 'retry-1', 'content-type': 'application/json' },
      apiKey: REDACTED,
      key: { id: 'key_1', sha256: REDACTED, webhookSecret: REDACTED },
      redisUrl: `redis://mageagent:${REDACTED}@redis:6379/0`,
      error: `model server refused: Bearer ${REDACTED} is not valid`,
    });
  });

  test('an Error logged as a field keeps its message and stack, scrubbed', () => {
    const { logger, raw, lines } = capturedLogger({ logPrompts: true });
    logger.error('request failed', { error: new Error(`upstream said 401 to Basic ${Buffer.from('user:pass-word').toString('base64')}`) });
    expect(raw()).not.toContain(Buffer.from('user:pass-word').toString('base64'));
    expect(lines()[0]).toMatchObject({ error: { name: 'Error', message: `upstream said 401 to Basic ${REDACTED}` } });
  });

  test('a credential hidden deeper than the walk goes no further', () => {
    const { logger, raw } = capturedLogger({ logPrompts: true });
    let nested: Record<string, unknown> = { note: API_KEY.replace('mak_', 'plain_') };
    for (let depth = 0; depth < 12; depth += 1) nested = { inner: nested };
    logger.info('deep', { nested });
    expect(raw()).toContain('[too deep]');
    expect(raw()).not.toContain('plain_live');
  });
});

describe('prompts and outputs', () => {
  test('are redacted by default, wherever they sit', () => {
    const { logger, raw, lines } = capturedLogger();
    logger.info('task', requestLog);
    expect(raw()).not.toContain(PROMPT);
    expect(raw()).not.toContain(OUTPUT);
    expect(lines()[0]).toMatchObject({
      body: REDACTED,
      prompt: REDACTED,
      output: REDACTED,
      task: { input: REDACTED, result: { content: REDACTED, usage: { totalTokens: 12 } }, metadata: { team: 'a' } },
    });
  });

  test('are logged with LOG_PROMPTS=true', () => {
    const { logger, lines } = capturedLogger({ logPrompts: true });
    logger.info('task', requestLog);
    expect(lines()[0]).toMatchObject({
      body: { prompt: PROMPT },
      prompt: PROMPT,
      output: OUTPUT,
      task: { input: { messages: [{ role: 'user', content: PROMPT }] }, result: { content: OUTPUT } },
    });
  });

  test('field names match without case or separators; look-alikes do not', () => {
    const { logger, lines } = capturedLogger();
    logger.info('x', { Prompt: PROMPT, REASONING_CONTENT: 'thinking', maxTokens: 5, keyId: 'key_1', tenant: 't', contentLength: 10 });
    expect(lines()[0]).toMatchObject({ Prompt: REDACTED, REASONING_CONTENT: REDACTED, maxTokens: 5, keyId: 'key_1', tenant: 't', contentLength: 10 });
  });
});

describe('LOG_PROMPTS and the deprecated LOG_REDACT', () => {
  const LogEnv = z.object({ LOG_LEVEL: RedisEnv.LOG_LEVEL, LOG_PROMPTS: RedisEnv.LOG_PROMPTS, LOG_REDACT: RedisEnv.LOG_REDACT });
  const optionsFor = (env: NodeJS.ProcessEnv) => logOptionsOf(parseEnv(LogEnv, env));

  test.each<[NodeJS.ProcessEnv, boolean, number]>([
    [{}, false, 0],
    [{ LOG_PROMPTS: 'true' }, true, 0],
    [{ LOG_PROMPTS: 'false' }, false, 0],
    [{ LOG_REDACT: 'false' }, true, 1],
    [{ LOG_REDACT: 'true' }, false, 1],
    [{ LOG_REDACT: 'false', LOG_PROMPTS: 'false' }, false, 1],
  ])('%j: logPrompts %s, %d deprecation warnings', (env, logPrompts, warnings) => {
    const options = optionsFor(env);
    expect(options.logPrompts).toBe(logPrompts);
    expect(options.deprecations).toHaveLength(warnings);
  });

  test('a bad value fails at start-up', () => {
    expect(() => optionsFor({ LOG_PROMPTS: 'yes' })).toThrow(/LOG_PROMPTS/);
  });

  test('a process started with LOG_REDACT=false warns once, logs prompts and still redacts credentials', async () => {
    const script = [
      "const { createLogger, logOptionsOf, parseEnv, RedisEnv, z } = require('./src/index.ts');",
      'const env = parseEnv(z.object(RedisEnv), process.env);',
      "const logger = createLogger({ service: 'child', ...logOptionsOf(env) });",
      `logger.info('task', { prompt: ${JSON.stringify(PROMPT)}, authorization: ${JSON.stringify(BEARER)} });`,
    ].join('\n');
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', '--eval', script],
        { cwd: path.join(__dirname, '..'), env: { PATH: process.env.PATH, LOG_REDACT: 'false' } },
        (error, out) => (error ? reject(error) : resolve(out)),
      );
    });
    const lines = stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.filter((line) => String(line.message).startsWith('LOG_REDACT is deprecated'))).toHaveLength(1);
    expect(lines.at(-1)).toMatchObject({ message: 'task', prompt: PROMPT, authorization: REDACTED });
    expect(stdout).not.toContain(API_KEY);
  }, 20_000);
});
