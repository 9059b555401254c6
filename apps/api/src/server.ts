import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { Server as SocketServer } from 'socket.io';
import { createApp } from './app';
import { socketOriginOptions } from './middleware/security-headers';
import type { ApiServices } from './services';
import { attachSocketHandlers, type ApiSocketServer } from './socket';

/** The HTTP server with the express app and Socket.io, not yet listening. */
export function createApiServer(services: ApiServices): { server: Server; io: ApiSocketServer } {
  const server = createServer(createApp(services));
  answerMalformedRequests(server);
  // Long-lived SSE responses must not be cut by Node's request timeout.
  server.requestTimeout = 0;
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
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable || error.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
    const [status, reason] = tooLarge ? [431, 'Request Header Fields Too Large'] : [400, 'Bad Request'];
    const body = JSON.stringify({
      error: tooLarge
        ? { code: 'VALIDATION_FAILED', message: 'request headers (or URL) are larger than the server accepts' }
        : { code: 'VALIDATION_FAILED', message: 'malformed HTTP request' },
    });
    socket.end(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}
