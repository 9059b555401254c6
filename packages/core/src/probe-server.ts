import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

/** A running probe server (see startProbeServer). */
export interface ProbeServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** Writes a whole answer that no cache may keep. */
export function sendNoStore(res: ServerResponse, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', ...headers });
  res.end(body);
}

/** An answer in the documented error shape. */
export function sendError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  sendNoStore(res, status, JSON_CONTENT_TYPE, JSON.stringify({ error: { code, message } }), headers);
}

/**
 * A bare node:http server for probes and scrapes: the worker's health port and the api's metrics
 * port. Neither needs express (nothing but a few fixed GET paths, no routes to forget to guard).
 * GET and HEAD only (405 otherwise); a path it does not serve is a 404 that names the ones it does;
 * a handler that throws is a 500 that says nothing of the error. A client that sends nothing cannot
 * hold a socket for Node's 5-minute default. Resolves once listening (rejects if the port is taken).
 */
export async function startProbeServer(options: {
  port: number;
  host: string;
  routes: Record<string, (res: ServerResponse) => Promise<void> | void>;
  /** Called when the server is closed (e.g. to stop a monitor the routes read). */
  onClose?: () => void;
}): Promise<ProbeServer> {
  const served = Object.keys(options.routes).join(', ');
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendError(res, 405, 'VALIDATION_FAILED', 'only GET and HEAD are served here', { allow: 'GET, HEAD' });
      return;
    }
    const route = Object.hasOwn(options.routes, path) ? options.routes[path] : undefined;
    if (route === undefined) {
      sendError(res, 404, 'NOT_FOUND', `this port serves ${served} only`);
      return;
    }
    Promise.resolve()
      .then(() => route(res))
      .catch(() => {
        if (res.headersSent) res.end();
        else sendError(res, 500, 'INTERNAL', 'could not answer');
      });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        options.onClose?.();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
