import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { postWebhook } from './post';
import { startTestReceiver } from './test-receiver';

const loopback = [{ address: '127.0.0.1', family: 4 }];

test('the connection goes to the checked address, whatever the name would resolve to now', async () => {
  const receiver = await startTestReceiver();
  try {
    // `.invalid` never resolves (RFC 6761): only the pinned address can have been used.
    const answer = await postWebhook({
      url: new URL(`http://receiver.invalid:${receiver.port}/hook`),
      addresses: loopback,
      body: '{"ok":true}',
      headers: { 'content-type': 'application/json' },
      timeoutMs: 2000,
    });
    expect(answer).toEqual({ status: 204 });
    expect(receiver.received).toHaveLength(1);
    expect(receiver.received[0]).toMatchObject({
      path: '/hook',
      body: '{"ok":true}',
      headers: { host: `receiver.invalid:${receiver.port}`, 'content-type': 'application/json', 'content-length': '11' },
    });
  } finally {
    await receiver.close();
  }
});

test('a redirect is the answer, never followed', async () => {
  const receiver = await startTestReceiver((request) => (request.path === '/hook' ? { status: 307, headers: { location: '/elsewhere' } } : 200));
  try {
    const answer = await postWebhook({ url: new URL(`${receiver.url}/hook`), addresses: loopback, body: '{}', headers: {}, timeoutMs: 2000 });
    expect(answer.status).toBe(307);
    expect(receiver.received.map((request) => request.path)).toEqual(['/hook']);
  } finally {
    await receiver.close();
  }
});

test('a receiver that does not answer in time fails the attempt with a timeout; a closed port with the connect error', async () => {
  const silent = createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as AddressInfo;
  try {
    const started = Date.now();
    await expect(postWebhook({ url: new URL(`http://127.0.0.1:${port}/`), addresses: loopback, body: '{}', headers: {}, timeoutMs: 200 })).rejects.toThrow(
      'no answer within 200 ms',
    );
    expect(Date.now() - started).toBeLessThan(2000);
  } finally {
    silent.closeAllConnections();
    await new Promise((resolve) => silent.close(resolve));
  }
  await expect(postWebhook({ url: new URL(`http://127.0.0.1:${port}/`), addresses: loopback, body: '{}', headers: {}, timeoutMs: 2000 })).rejects.toThrow(
    /ECONNREFUSED/,
  );
});
