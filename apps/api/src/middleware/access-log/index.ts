import type { Request, RequestHandler, Response } from 'express';
import { validate as isUuid } from 'uuid';
import type { Logger } from '@mageagent/core';

export interface AccessLogOptions {
  /** The service's logger: lines are written while its level lets `level` through, and carry its `service`. */
  logger: Logger;
  /**
   * The lines' level. `info` by default, not winston's `http`: LOG_LEVEL defaults to `info`, and an
   * access log that a default deployment drops is one nobody has when it is needed.
   * `ACCESS_LOG=false` turns it off without hiding the rest of `info`.
   */
  level?: string;
  /** Where the lines go: stdout unless given, where the logger's console transport writes too. */
  output?: { write(text: string): unknown };
}

/**
 * One line per request. Only what describes the exchange, never what was exchanged: no body, no
 * query string, no header (so no Authorization, X-API-Key or Idempotency-Key), no prompt or output.
 */
export interface AccessLogLine {
  method: string;
  /** The route's template (`/tasks/:id`, `/v1/chat/completions`); null when no route matched (404s, and requests refused before routing: 413, draining 503). */
  route: string | null;
  /** The status sent; 499 when the client went away before any was. */
  status: number;
  /** From the request's arrival until its response ended or its client left: a stream's whole life. */
  durationMs: number;
  /** Bytes written to the connection for this response, headers included. */
  bytesSent: number;
  /** The authenticated caller's (`res.locals.caller.principal`); absent when the request never reached authentication. */
  tenant?: string;
  keyId?: string;
  taskId?: string;
  /** The client left before the response ended (a stream it closed, a call it gave up on). */
  aborted?: true;
}

/** nginx's status for a client that closed the connection before it was answered; log tools know it. */
const CLIENT_CLOSED_REQUEST = 499;

/**
 * Logs each request once, when its response has ended or its client has gone (`close` comes in
 * both cases, after `finish` when there is one), so an SSE stream is one line at its end.
 *
 * A line is written as JSON straight to the output, shaped like the logger's own lines (`level`,
 * `message`, `service`, `timestamp` and the fields), not through winston: winston's stream and
 * format pipeline costs about 20 µs a line (measured), a tenth of what the api spends on a
 * POST /tasks; this costs about 5. Its fields need no redaction: they are chosen, not copied.
 */
export function accessLog(options: AccessLogOptions): RequestHandler {
  const level = options.level ?? 'info';
  const output = options.output ?? process.stdout;
  const service: unknown = options.logger.defaultMeta?.service;
  const prefix = `{"level":${JSON.stringify(level)},"message":"request"${typeof service === 'string' ? `,"service":${JSON.stringify(service)}` : ''},"timestamp":"`;
  return (req, res, next) => {
    if (!options.logger.isLevelEnabled(level)) return next();
    const startedAt = performance.now();
    // The connection's count, not the response's: streams and res.write() are counted too, for free.
    const bytesBefore = req.socket.bytesWritten;
    res.once('close', () => {
      const line = accessLogLine(req, res, performance.now() - startedAt, req.socket.bytesWritten - bytesBefore);
      output.write(`${prefix}${new Date().toISOString()}",${JSON.stringify(line).slice(1)}\n`);
    });
    next();
  };
}

function accessLogLine(req: Request, res: Response, elapsedMs: number, bytesSent: number): AccessLogLine {
  const route = routeTemplateOf(req);
  const principal = principalOf((res.locals.caller as { principal?: unknown } | undefined)?.principal);
  const taskId = taskIdOf(req, res, route);
  return {
    method: req.method,
    route,
    status: res.headersSent ? res.statusCode : CLIENT_CLOSED_REQUEST,
    durationMs: Math.round(elapsedMs * 10) / 10,
    bytesSent,
    ...principal,
    ...(taskId !== undefined && { taskId }),
    ...(!res.writableFinished && { aborted: true }),
  };
}

/**
 * `req.baseUrl + req.route.path`, as express 5 leaves them once a route handled the request: a
 * router's routes keep their mount path (`/v1` + `/chat/completions`), and a route whose handler
 * failed is still the route (a `GET /tasks/:id` answered 404 is `/tasks/:id`). A route declared
 * for several paths cannot say which one matched: they are all given, joined by `|`.
 */
export function routeTemplateOf(req: Request): string | null {
  const route: unknown = req.route;
  if (typeof route !== 'object' || route === null || !('path' in route)) return null;
  const { path } = route;
  // Express matches paths whatever their case, and req.baseUrl keeps the caller's spelling of the
  // mount (`/V1`); every mount here is lower case, so the template is too: a caller's spelling must
  // not make a new metric series, span name or log value.
  const base = req.baseUrl.toLowerCase();
  const prefix = (template: unknown) => `${base}${String(template)}`;
  return Array.isArray(path) ? path.map(prefix).join('|') : prefix(path);
}

/** The caller's tenant and key id, if authentication set a principal. */
function principalOf(value: unknown): { tenant?: string; keyId?: string } {
  if (typeof value !== 'object' || value === null) return {};
  const { tenant, keyId } = value as { tenant?: unknown; keyId?: unknown };
  return { ...(typeof tenant === 'string' && { tenant }), ...(typeof keyId === 'string' && { keyId }) };
}

/**
 * The task a request concerns: what the handler recorded (`res.locals.taskId`, a new task's id),
 * the `X-Task-Id` it answered with, or the `:id` of a `/tasks/:id…` route when it is a task id at all
 * (a malformed id is client input, not worth a log field). The id is read from the URL, not
 * `req.params`: once an error handler has run, express has replaced the route's params with its own.
 */
function taskIdOf(req: Request, res: Response, route: string | null): string | undefined {
  const recorded: unknown = res.locals.taskId ?? res.getHeader('x-task-id');
  if (typeof recorded === 'string') return recorded;
  if (!route?.startsWith('/tasks/:id')) return undefined;
  const segment = req.originalUrl.split(/[/?#]/, 3)[2];
  return segment !== undefined && isUuid(segment) ? segment : undefined;
}
