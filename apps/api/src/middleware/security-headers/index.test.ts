/**
 * Security headers and CORS over real HTTP, and Socket.io's origin check over real websockets and
 * polling, on servers built the way the api builds its own.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { Server as SocketServer } from 'socket.io';
import { io as connectSocket } from 'socket.io-client';
import WebSocket from 'ws';
import { CorsOriginsSchema, securityHeaders, socketOriginOptions, type SecurityHeadersOptions } from './index';

const APP_ORIGIN = 'https://app.example.com';
const OTHER_ORIGIN = 'https://evil.example.net';

interface TestServer {
  url: string;
  close(): Promise<void>;
}

/** An express app behind the middleware, with a JSON route, an SSE route and a POST, plus Socket.io. */
async function startServer(options: SecurityHeadersOptions): Promise<TestServer> {
  const app = express();
  app.use(securityHeaders(options));
  app.use(express.json());
  app.get('/tasks/:id', (req, res) => {
    res.json({ id: req.params.id });
  });
  app.post('/tasks', (_req, res) => {
    res.status(202).location('/tasks/1').setHeader('x-task-id', '1');
    res.json({ id: '1' });
  });
  app.get('/tasks/:id/stream', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
    res.end('event: status\ndata: {}\n\n');
  });
  app.use((_req, res) => {
    res.status(404).json({ error: { code: 'NOT_FOUND', message: 'no route' } });
  });
  const server = createServer(app);
  const io = new SocketServer(server, { serveClient: false, ...socketOriginOptions(options) });
  io.on('connection', (socket) => socket.emit('hello'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      io.close();
      (server as Server).closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const corsHeadersOf = (response: Response) => [...response.headers.keys()].filter((name) => name.startsWith('access-control-')).sort();

describe('CORS_ORIGINS', () => {
  const parse = (text: string | undefined) => CorsOriginsSchema.safeParse(text);

  test('exact origins, comma-separated, deduplicated; unset is none', () => {
    expect(parse(undefined)).toEqual({ success: true, data: [] });
    expect(parse(' ')).toEqual({ success: true, data: [] });
    expect(parse('https://app.example.com, http://localhost:5173,https://APP.example.com')).toEqual({
      success: true,
      data: ['https://app.example.com', 'http://localhost:5173'],
    });
  });

  test.each([
    '*',
    'https://*.example.com',
    'http://localhost:*',
    'null',
    'app.example.com',
    'https://app.example.com/',
    'https://app.example.com/ui',
    'file:///tmp',
    'https://user@app.example.com',
  ])('%s is refused at start-up', (entry) => {
    expect(parse(`https://ok.example.com,${entry}`).success).toBe(false);
  });
});

describe('helmet, for a JSON and SSE api', () => {
  let server: TestServer;
  beforeAll(async () => (server = await startServer({ corsOrigins: [], hstsMaxAgeSeconds: 0 })));
  afterAll(() => server.close());

  test('JSON, SSE and error responses carry the headers; no HSTS unless asked for', async () => {
    for (const path of ['/tasks/1', '/tasks/1/stream', '/nope']) {
      const response = await fetch(`${server.url}${path}`);
      await response.arrayBuffer();
      expect(response.headers.get('content-security-policy')).toBe("default-src 'none';frame-ancestors 'none'");
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('x-frame-options')).toBe('DENY');
      expect(response.headers.get('referrer-policy')).toBe('no-referrer');
      expect(response.headers.get('cross-origin-resource-policy')).toBe('same-origin');
      expect(response.headers.get('strict-transport-security')).toBeNull();
      expect(response.headers.get('x-powered-by')).toBeNull();
      // Nothing of a task is kept by a browser or a proxy; the stream keeps its own (below).
      if (!path.endsWith('/stream')) expect(response.headers.get('cache-control')).toBe('no-store');
      // Document-only and obsolete headers are not sent.
      for (const absent of [
        'cross-origin-opener-policy',
        'origin-agent-cluster',
        'x-dns-prefetch-control',
        'x-download-options',
        'x-permitted-cross-domain-policies',
        'x-xss-protection',
      ]) {
        expect(response.headers.get(absent)).toBeNull();
      }
    }
  });

  test('the SSE route keeps its own headers and body', async () => {
    const response = await fetch(`${server.url}/tasks/1/stream`);
    expect(response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(response.headers.get('cache-control')).toBe('no-cache');
    expect(await response.text()).toBe('event: status\ndata: {}\n\n');
  });

  test('HSTS when HSTS_MAX_AGE_SECONDS is set: that max-age, nothing domain-wide', async () => {
    const withHsts = await startServer({ corsOrigins: [], hstsMaxAgeSeconds: 31_536_000 });
    try {
      const response = await fetch(`${withHsts.url}/tasks/1`);
      expect(response.headers.get('strict-transport-security')).toBe('max-age=31536000');
    } finally {
      await withHsts.close();
    }
  });

  test('no origin configured: no CORS header for anyone, preflights not answered', async () => {
    const simple = await fetch(`${server.url}/tasks/1`, { headers: { origin: APP_ORIGIN } });
    expect(corsHeadersOf(simple)).toEqual([]);
    expect(simple.headers.get('vary')).toBeNull();
    const preflight = await fetch(`${server.url}/tasks`, {
      method: 'OPTIONS',
      headers: { origin: APP_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
    });
    expect(preflight.status).toBe(404);
    expect(corsHeadersOf(preflight)).toEqual([]);
  });
});

describe('CORS from CORS_ORIGINS', () => {
  let server: TestServer;
  beforeAll(async () => (server = await startServer({ corsOrigins: [APP_ORIGIN, 'http://localhost:5173'], hstsMaxAgeSeconds: 0 })));
  afterAll(() => server.close());

  test('an allowed origin gets itself back and the headers it needs to read', async () => {
    const response = await fetch(`${server.url}/tasks`, { method: 'POST', headers: { origin: APP_ORIGIN, 'content-type': 'application/json' }, body: '{}' });
    expect(response.status).toBe(202);
    expect(response.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(response.headers.get('access-control-allow-credentials')).toBeNull();
    expect(response.headers.get('access-control-expose-headers')).toBe('X-Task-Id,Location,Retry-After,Idempotent-Replayed,X-Request-Id,X-Should-Retry');
    expect(response.headers.get('vary')).toBe('Origin');
  });

  test('SSE streams to an allowed origin carry CORS headers (EventSource is cors-mode)', async () => {
    const response = await fetch(`${server.url}/tasks/1/stream`, { headers: { origin: 'http://localhost:5173' } });
    expect(response.headers.get('access-control-allow-origin')).toBe('http://localhost:5173');
    expect(await response.text()).toContain('event: status');
  });

  test('a preflight from an allowed origin is answered 204 with methods, headers and max-age', async () => {
    const response = await fetch(`${server.url}/tasks/1/stream`, {
      method: 'OPTIONS',
      headers: { origin: APP_ORIGIN, 'access-control-request-method': 'GET', 'access-control-request-headers': 'last-event-id,authorization' },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    expect(response.headers.get('access-control-allow-methods')).toBe('GET,HEAD,POST');
    expect(response.headers.get('access-control-allow-headers')).toBe('Authorization,X-API-Key,Idempotency-Key,Last-Event-ID,Content-Type');
    expect(response.headers.get('access-control-max-age')).toBe('600');
  });

  test.each([OTHER_ORIGIN, 'https://app.example.com.evil.example.net', 'null', 'HTTPS://APP.EXAMPLE.COM'])(
    'another origin (%s) gets no CORS header at all, and no preflight answer',
    async (origin) => {
      const simple = await fetch(`${server.url}/tasks/1`, { headers: { origin } });
      expect(simple.status).toBe(200);
      expect(corsHeadersOf(simple)).toEqual([]);
      expect(simple.headers.get('vary')).toBe('Origin');
      const preflight = await fetch(`${server.url}/tasks`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST' } });
      expect(preflight.status).toBe(404);
      expect(corsHeadersOf(preflight)).toEqual([]);
    },
  );

  test('a request without Origin (curl, servers) is served as before, without CORS headers', async () => {
    const response = await fetch(`${server.url}/tasks/1`);
    expect(response.status).toBe(200);
    expect(corsHeadersOf(response)).toEqual([]);
  });
});

/** Connects with the given Origin; resolves 'connected' or the handshake error's message. */
function handshake(url: string, origin: string | undefined, transport: 'websocket' | 'polling'): Promise<string> {
  const socket = connectSocket(url, {
    transports: [transport],
    reconnection: false,
    timeout: 5000,
    ...(origin !== undefined && { extraHeaders: { origin } }),
  });
  return new Promise<string>((resolve) => {
    socket.once('hello', () => resolve('connected'));
    socket.once('connect_error', (error: Error & { description?: unknown }) => resolve(`refused: ${error.message}`));
  }).finally(() => socket.disconnect());
}

describe('Socket.io handshakes', () => {
  let server: TestServer;
  beforeAll(async () => (server = await startServer({ corsOrigins: [APP_ORIGIN], hstsMaxAgeSeconds: 0 })));
  afterAll(() => server.close());

  test.each(['websocket', 'polling'] as const)("%s: an allowed Origin, no Origin and the api's own host connect", async (transport) => {
    expect(await handshake(server.url, APP_ORIGIN, transport)).toBe('connected');
    expect(await handshake(server.url, undefined, transport)).toBe('connected');
    expect(await handshake(server.url, server.url, transport)).toBe('connected');
  });

  test.each(['websocket', 'polling'] as const)('%s: another Origin is refused', async (transport) => {
    expect(await handshake(server.url, OTHER_ORIGIN, transport)).toMatch(/^refused/);
    expect(await handshake(server.url, 'null', transport)).toMatch(/^refused/);
  });

  test('the raw websocket upgrade from another Origin is answered 400, the polling handshake 403', async () => {
    const upgradeStatus = (origin: string) =>
      new Promise<number>((resolve, reject) => {
        const websocket = new WebSocket(`${server.url.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`, { origin });
        websocket.once('unexpected-response', (_request, response) => {
          resolve(response.statusCode ?? 0);
          websocket.terminate();
        });
        websocket.once('open', () => {
          resolve(101);
          websocket.close();
        });
        websocket.once('error', reject);
      });
    expect(await upgradeStatus(OTHER_ORIGIN)).toBe(400);
    expect(await upgradeStatus(APP_ORIGIN)).toBe(101);
    const polling = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: OTHER_ORIGIN } });
    expect(polling.status).toBe(403);
    expect(corsHeadersOf(polling)).toEqual([]);
    const allowed = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: APP_ORIGIN } });
    expect(allowed.status).toBe(200);
    expect(allowed.headers.get('access-control-allow-origin')).toBe(APP_ORIGIN);
    await allowed.text();
  });

  test('with no origin configured, only Origin-less and same-host handshakes connect', async () => {
    const closed = await startServer({ corsOrigins: [], hstsMaxAgeSeconds: 0 });
    try {
      expect(await handshake(closed.url, APP_ORIGIN, 'websocket')).toMatch(/^refused/);
      expect(await handshake(closed.url, undefined, 'websocket')).toBe('connected');
      expect(await handshake(closed.url, closed.url, 'websocket')).toBe('connected');
      const polling = await fetch(`${closed.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: closed.url } });
      expect(corsHeadersOf(polling)).toEqual([]);
      await polling.text();
    } finally {
      await closed.close();
    }
  });
});
