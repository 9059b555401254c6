/**
 * Test support: an ApiKeyRegistry in a process of its own, so a test can send it a real SIGHUP
 * (jest gives tests a stand-in `process` whose listeners no signal reaches, so a SIGHUP sent in a
 * test would end the test runner). Usage: `node --import tsx test-registry-process.ts <keys file>`.
 * Writes `ready`, then answers each key read on stdin with its entry's id, or `-`, on stdout;
 * logs JSON lines on stderr.
 */
import { createInterface } from 'node:readline';
import { ApiKeyRegistry, type ApiKeysLog } from './api-keys';

const file = process.argv[2];
if (file === undefined) throw new Error('usage: test-registry-process.ts <keys file>');

const logLine = (level: string) => (message: string, fields: Record<string, unknown>) => {
  process.stderr.write(`${JSON.stringify({ level, message, ...fields })}\n`);
};
const log: ApiKeysLog = { info: logLine('info'), warn: logLine('warn'), error: logLine('error') };

const registry = ApiKeyRegistry.load(file, log);
// Only the signal reloads: a file change would reload too, and hide whether SIGHUP did.
registry.watch({ debounceMs: 3_600_000 });
createInterface({ input: process.stdin }).on('line', (key) => {
  process.stdout.write(`${registry.authenticate(key)?.id ?? '-'}\n`);
});
process.stdout.write('ready\n');
