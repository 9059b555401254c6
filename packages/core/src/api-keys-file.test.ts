import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError } from '@mageagent/core';
import { parseApiKeysFile, readApiKeysFile } from './api-keys-file';
import { generateApiKey, generateWebhookSecret, sha256Hex } from './key-material';

const DIGEST_A = sha256Hex('key a');
const DIGEST_B = sha256Hex('key b');

/** The ConfigError message of a text that must be refused. */
function problemOf(text: string): string {
  try {
    parseApiKeysFile(text, 'keys.yaml');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  throw new Error('the file was accepted');
}

const twoKeys = (secondEntry: string) => `keys:
  - { id: a, sha256: ${DIGEST_A}, tenant: acme, scopes: [tasks] }
${secondEntry}
`;

describe('parseApiKeysFile', () => {
  it('reads YAML and JSON', () => {
    const yaml = parseApiKeysFile(
      `keys:
  - id: acme-ci
    sha256: ${DIGEST_A}
    tenant: acme
    app: ci
    scopes: [tasks, admin]
    limits: { requestsPerMinute: 600, maxActiveTasks: 50, maxPromptBytes: 200000 }
tenants:
  acme: { webhookSecret: ${generateWebhookSecret()} }
`,
      'keys.yaml',
    );
    expect(yaml.file.keys[0]).toEqual({
      id: 'acme-ci',
      sha256: DIGEST_A,
      tenant: 'acme',
      app: 'ci',
      scopes: ['tasks', 'admin'],
      limits: { requestsPerMinute: 600, maxActiveTasks: 50, maxPromptBytes: 200000 },
    });
    expect(yaml.warnings).toEqual([]);

    const json = parseApiKeysFile(JSON.stringify({ keys: [{ id: 'b', sha256: DIGEST_B, tenant: 'beta', scopes: ['tasks'] }] }), 'keys.json');
    expect(json.file.keys.map((entry) => entry.id)).toEqual(['b']);
  });

  it('names the file, the entry by index and id, and the field', () => {
    expect(problemOf(twoKeys(`  - { id: b, sha256: abc123, tenant: beta, scopes: [tasks] }`))).toBe(
      'keys.yaml: invalid API keys file: keys[1] (id "b").sha256: must be the SHA-256 of the key: 64 lowercase hex digits (npm run keys -- hash <key>)',
    );
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_B.toUpperCase()}, tenant: beta, scopes: [tasks] }`))).toContain(
      'keys[1] (id "b").sha256: must be the SHA-256 of the key',
    );
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_B}, tenant: "be ta", scopes: [tasks] }`))).toContain(
      'keys[1] (id "b").tenant: must be 1 to 64 characters of A-Z a-z 0-9 _ . -',
    );
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_B}, tenant: beta, app: "${'x'.repeat(65)}", scopes: [tasks] }`))).toContain(
      'keys[1] (id "b").app: must be 1 to 64 characters',
    );
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_B}, scopes: [tasks] }`))).toContain('keys[1] (id "b").tenant: Invalid input');
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_B}, tenant: beta, scopes: [tasks], key: oops }`))).toContain(
      'keys[1] (id "b"): Unrecognized key: "key"',
    );
  });

  it('names an entry by index alone when its id is itself bad', () => {
    expect(problemOf(twoKeys(`  - { id: "no spaces", sha256: ${DIGEST_B}, tenant: beta, scopes: [tasks] }`))).toBe(
      'keys.yaml: invalid API keys file: keys[1].id: must be 1 to 64 characters of A-Z a-z 0-9 _ . -',
    );
  });

  it('refuses a key pasted where its SHA-256 belongs, without repeating it', () => {
    const key = generateApiKey();
    const message = problemOf(twoKeys(`  - { id: b, sha256: ${key}, tenant: beta, scopes: [tasks] }`));
    expect(message).toContain('keys[1] (id "b").sha256: holds a key, not its SHA-256');
    expect(message).toContain('treat that key as exposed');
    expect(message).not.toContain(key.slice(4));
  });

  it('refuses duplicate ids and duplicate keys, pointing at the first', () => {
    expect(problemOf(twoKeys(`  - { id: a, sha256: ${DIGEST_B}, tenant: beta, scopes: [tasks] }`))).toBe(
      'keys.yaml: invalid API keys file: keys[1] (id "a").id: is also the id of keys[0]',
    );
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_A}, tenant: beta, scopes: [tasks] }`))).toBe(
      'keys.yaml: invalid API keys file: keys[1] (id "b").sha256: is the same key as keys[0]',
    );
  });

  it('wants scopes to be a non-empty set of known scopes', () => {
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_B}, tenant: beta, scopes: [] }`))).toContain(
      'keys[1] (id "b").scopes: must list at least one of tasks, admin',
    );
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_B}, tenant: beta, scopes: [tasks, root] }`))).toContain(
      'keys[1] (id "b").scopes.1: Invalid option: expected one of "tasks"|"admin"',
    );
    expect(problemOf(twoKeys(`  - { id: b, sha256: ${DIGEST_B}, tenant: beta, scopes: [tasks, tasks] }`))).toContain(
      'keys[1] (id "b").scopes: lists a scope twice',
    );
  });

  it('wants limits to be positive integers it knows', () => {
    const withLimits = (limits: string) => twoKeys(`  - { id: b, sha256: ${DIGEST_B}, tenant: beta, scopes: [tasks], limits: ${limits} }`);
    expect(problemOf(withLimits('{ requestsPerMinute: 0 }'))).toContain('keys[1] (id "b").limits.requestsPerMinute: Too small');
    expect(problemOf(withLimits('{ maxActiveTasks: 2.5 }'))).toContain('keys[1] (id "b").limits.maxActiveTasks: Invalid input: expected int');
    expect(problemOf(withLimits('{ maxPromptBytes: "200kB" }'))).toContain('keys[1] (id "b").limits.maxPromptBytes: Invalid input');
    expect(problemOf(withLimits('{ requestsPerHour: 10 }'))).toContain('keys[1] (id "b").limits: Unrecognized key: "requestsPerHour"');
  });

  it('lists every problem at once', () => {
    const message = problemOf(`keys:
  - { id: a, sha256: nope, tenant: acme, scopes: [] }
  - { id: a, sha256: ${DIGEST_B}, tenant: beta, scopes: [tasks] }
`);
    expect(message).toContain('keys[0] (id "a").sha256');
    expect(message).toContain('keys[0] (id "a").scopes');
    expect(message).toContain('keys[1] (id "a").id: is also the id of keys[0]');
  });

  it('checks webhook secrets are Standard Webhooks secrets, without repeating them', () => {
    const withSecret = (secret: string) => `keys:
  - { id: a, sha256: ${DIGEST_A}, tenant: acme, scopes: [tasks] }
tenants:
  acme: { webhookSecret: "${secret}" }
`;
    expect(parseApiKeysFile(withSecret(generateWebhookSecret()), 'keys.yaml').warnings).toEqual([]);
    const unprefixed = Buffer.alloc(32, 7).toString('base64');
    expect(problemOf(withSecret(unprefixed))).toBe(
      'keys.yaml: invalid API keys file: tenants.acme.webhookSecret: must be whsec_ followed by base64 (npm run keys -- webhook-secret)',
    );
    expect(problemOf(withSecret(`whsec_${Buffer.alloc(16, 7).toString('base64')}`))).toContain(
      'tenants.acme.webhookSecret: must decode to 24 to 64 bytes (it has 16)',
    );
    const truncated = generateWebhookSecret().slice(0, -3);
    const message = problemOf(withSecret(truncated));
    expect(message).toContain('tenants.acme.webhookSecret: must be whsec_ followed by base64');
    expect(message).not.toContain(truncated.slice(6));
    expect(problemOf(withSecret(unprefixed).replace('acme: {', '"ac me": {'))).toContain('tenants.(invalid name)');
  });

  it('reports a YAML syntax error by line and column without quoting the file', () => {
    const secret = generateWebhookSecret();
    const message = problemOf(`keys: []\ntenants:\n  acme: { webhookSecret: "${secret} }\n`);
    expect(message).toMatch(/^keys\.yaml: not valid YAML or JSON at line \d+, column \d+: /);
    expect(message).not.toContain(secret.slice(6));
  });

  it('warns about a file that lets no one in, and a tenant section without keys', () => {
    expect(parseApiKeysFile('keys: []', 'keys.yaml').warnings).toEqual(['no keys: every request will be refused']);
    const { warnings } = parseApiKeysFile(`keys:\n  - { id: a, sha256: ${DIGEST_A}, tenant: acme, scopes: [tasks] }\ntenants:\n  acme-typo: {}\n`, 'keys.yaml');
    expect(warnings).toEqual(['tenants.acme-typo has no key in keys (a misspelt tenant?)']);
  });

  it('names a file it cannot read, and reads one it can', () => {
    const directory = mkdtempSync(path.join(tmpdir(), 'api-keys-file-'));
    try {
      const file = path.join(directory, 'keys.yaml');
      expect(() => readApiKeysFile(file)).toThrow(`cannot read API keys file ${file}: ENOENT`);
      writeFileSync(file, `keys:\n  - { id: a, sha256: ${DIGEST_A}, tenant: acme, scopes: [tasks] }\n  - { id: b }\n`);
      expect(() => readApiKeysFile(file)).toThrow(`${file}: invalid API keys file: keys[1] (id "b").sha256`);
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
