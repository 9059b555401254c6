import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { classifyAddress } from './address-policy';
import { checkWebhookTarget, precheckWebhookTarget } from './target';

const strict = { allowPrivate: false };
const lenient = { allowPrivate: true };

test.each([
  ['8.8.8.8', 'public'],
  ['2606:4700:4700::1111', 'public'],
  ['64:ff9b::808:808', 'public'], // NAT64 of 8.8.8.8
  ['127.0.0.1', 'private'],
  ['127.255.0.9', 'private'],
  ['::1', 'private'],
  ['10.1.2.3', 'private'],
  ['172.16.0.1', 'private'],
  ['192.168.1.1', 'private'],
  ['100.64.0.1', 'private'],
  ['169.254.1.1', 'private'],
  ['fe80::1', 'private'],
  ['fd12:3456::1', 'private'],
  ['::ffff:127.0.0.1', 'private'],
  ['::ffff:10.0.0.1', 'private'],
  ['64:ff9b::7f00:1', 'private'], // NAT64 of 127.0.0.1
  ['169.254.169.254', 'forbidden'],
  ['::ffff:169.254.169.254', 'forbidden'],
  ['fd00:ec2::254', 'forbidden'],
  ['100.100.100.200', 'forbidden'],
  ['0.0.0.0', 'forbidden'],
  ['::', 'forbidden'],
  ['255.255.255.255', 'forbidden'],
  ['224.0.0.1', 'forbidden'],
  ['ff02::1', 'forbidden'],
  ['192.0.2.1', 'forbidden'],
  ['::7f00:1', 'forbidden'], // IPv4-compatible
  ['2002:7f00:1::1', 'forbidden'], // 6to4
])('%s is %s', (address, kind) => {
  expect(classifyAddress(address).kind).toBe(kind);
});

test('the precheck refuses literal private addresses in every notation the URL parser accepts, and localhost names', () => {
  const refused = [
    'http://127.0.0.1/hook',
    'http://2130706433/',
    'http://0x7f.1/',
    'http://0177.0.0.1/',
    'http://127.1:8080/',
    'http://[::1]/',
    'http://[0:0:0:0:0:0:0:1]/',
    'http://[::ffff:127.0.0.1]/',
    'http://[::ffff:7f00:1]/',
    'https://10.0.0.8/',
    'http://169.254.169.254/latest/meta-data/',
    'http://[fd00:ec2::254]/',
    'http://localhost:3000/',
    'http://LOCALHOST./',
    'http://api.localhost/',
    'ftp://example.com/',
    'not a url',
  ];
  for (const url of refused) expect({ url, allowed: precheckWebhookTarget(url, strict).allowed }).toEqual({ url, allowed: false });
  for (const url of ['https://example.com/hook', 'http://8.8.8.8/', 'http://[2606:4700:4700::1111]/', 'http://localhost.example.com/']) {
    expect({ url, allowed: precheckWebhookTarget(url, strict).allowed }).toEqual({ url, allowed: true });
  }
  expect(precheckWebhookTarget('http://127.0.0.1/', strict)).toMatchObject({ reason: '127.0.0.1 is a loopback address; private targets are not allowed' });
});

test('allowing private targets allows private ranges, never metadata, unspecified or multicast addresses', () => {
  for (const url of ['http://127.0.0.1/', 'http://[::1]/', 'http://10.0.0.1/', 'http://localhost/', 'http://169.254.1.1/']) {
    expect({ url, allowed: precheckWebhookTarget(url, lenient).allowed }).toEqual({ url, allowed: true });
  }
  for (const url of ['http://169.254.169.254/', 'http://[::ffff:a9fe:a9fe]/', 'http://0.0.0.0/', 'http://224.0.0.1/', 'http://100.100.100.200/']) {
    expect({ url, allowed: precheckWebhookTarget(url, lenient).allowed }).toEqual({ url, allowed: false });
  }
});

test('the full check resolves the host and judges every address it resolves to', async () => {
  expect(await checkWebhookTarget('http://127.0.0.1:9/hook', strict)).toMatchObject({ allowed: false, retryable: false });
  expect(await checkWebhookTarget('http://localhost:9/hook', strict)).toMatchObject({ allowed: false, retryable: false });
  // This machine's own name goes through the resolver (no name rule knows it); here /etc/hosts maps it
  // to 127.0.0.1, elsewhere it may be the host's address: the verdict must follow what it resolves to.
  const name = hostname();
  const resolved = await lookup(name, { all: true });
  const check = await checkWebhookTarget(`http://${name}:9/hook`, strict);
  const allPublic = resolved.every(({ address }) => classifyAddress(address).kind === 'public');
  expect(check.allowed).toBe(allPublic);
  if (!check.allowed) {
    // The kind of address, not the address: the reason is recorded where the tenant reads it.
    expect(check.reason).toMatch(new RegExp(`^${name} resolves to a `));
    expect(check.reason).not.toContain(check.address);
    expect(resolved.map(({ address }) => address)).toContain(check.address);
  }

  const allowed = await checkWebhookTarget('http://localhost:9/hook', lenient);
  expect(allowed.allowed).toBe(true);
  if (allowed.allowed) expect(allowed.addresses.map((address) => classifyAddress(address.address).kind)).toContain('private');
  expect(await checkWebhookTarget('http://[::1]:9/', lenient)).toMatchObject({ allowed: true, addresses: [{ address: '::1', family: 6 }] });
});

test('a name that does not resolve is refused for now, retryably', async () => {
  expect(await checkWebhookTarget('http://no-such-host.invalid/', strict)).toMatchObject({
    allowed: false,
    retryable: true,
    reason: expect.stringMatching(/could not resolve no-such-host.invalid/),
  });
});
