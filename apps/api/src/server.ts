import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { Server as SocketServer } from 'socket.io';
import { createApp } from './app';
import { declaresBodyOver } from './http-errors';
import { socketOriginOptions } from './middleware/security-headers';
import type { ApiServices } from './services';
import { attachSocketHandlers, type ApiSocketServer } from './socket';

/** The HTTP server with the express app and Socket.io, not yet listening. */
export function createApiServer(services: ApiServices): { server: Server; io: ApiSocketServer } {
  const { requestTimeoutMs } = services.config;
  const server = createServer(
    {
      // A client gets this long to send its whole request, body included: a body sent slowly or
      // never finished would otherwise hold its connection (and a file descriptor) for ever. Node
      // bounds only the receiving of the request, so SSE streams and long /v1 calls are not cut.
      requestTimeout: requestTimeoutMs,
      headersTimeout: Math.min(20_000, requestTimeoutMs),
      // How often Node looks for requests past those limits (30 s by default, which would let a
      // slow request live twice its limit).
      connectionsCheckingInterval: Math.min(1_000, requestTimeoutMs),
      // Node would answer an HTTP/1.1 request without Host with a bare 400; the app answers it in
      // the documented shape instead (see createApp).
      requireHostHeader: false,
    },
    createApp(services),
  );
  answerMalformedRequests(server);
  refuseOversizeUploadsBeforeTheyStart(server, services.config.bodyLimitBytes);
  server.keepAliveTimeout = 65_000;
  // CORS for the polling transport and an Origin check on every handshake, from CORS_ORIGINS.
  const io: ApiSocketServer = new SocketServer(server, { ...socketOriginOptions({ corsOrigins: services.config.corsOrigins }), serveClient: false });
  attachSocketHandlers(io, services);
  services.metrics.openSockets = () => io.of('/').sockets.size;
  return { server, io };
}

/**
 * Requests Node's HTTP parser refuses before express sees them (headers or URL too large, bad
 * framing) get the documented error shape instead of Node's bare status line.
 */
function answerMalformedRequests(server: Server): void {
  // An `Expect` other than 100-continue (which Node answers itself): Node's own answer is a bare 417.
  server.on('checkExpectation', (_req, res) => {
    const body = JSON.stringify({ error: { code: 'VALIDATION_FAILED', message: 'unsupported Expect header (only 100-continue is)' } });
    res.writeHead(417, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
  });
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    // A response already under way on this connection (a request whose body never finished, say)
    // cannot be followed by another status line: the connection is closed, as Node itself does.
    const responding = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
    if (!socket.writable || error.code === 'ECONNRESET' || responding) {
      socket.destroy();
      return;
    }
    const [status, reason, message] =
      error.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large', 'request headers (or URL) are larger than the server accepts']
        : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'Request Timeout', 'the request (headers and body) was not received in time']
          : [400, 'Bad Request', 'malformed HTTP request'];
    const body = JSON.stringify({ error: { code: 'VALIDATION_FAILED', message } });
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

/**
 * `Expect: 100-continue` with a `Content-Length` over the body limit: the client is not told to
 * send the body, and the app answers its 413 (see refuseDeclaredOversizeBodies) before a byte of
 * it is sent. Node would otherwise send `100 Continue` itself, first.
 */
function refuseOversizeUploadsBeforeTheyStart(server: Server, bodyLimitBytes: number): void {
  server.on('checkContinue', (req, res) => {
    if (!declaresBodyOver(req, bodyLimitBytes)) res.writeContinue();
    server.emit('request', req, res);
  });
}
