import express, { type ErrorRequestHandler, type Request, type RequestHandler, type Response } from 'express';
import { isMageError, NotFoundError, quote, ServiceUnavailableError, taskLinks, toErrorBody, ValidationError } from '@mageagent/core';
import { pingRedis } from '@mageagent/tasks';
import { basicAuthForBoard, boardContentSecurityPolicy, BULL_BOARD_PATH, bullBoardRouter } from './admin/bull-board';
import { authenticate, callerOf, pendingCountOf, requireScope } from './auth/middleware';
import { hostsHandler } from './hosts';
import { asClientError, declaresBodyOver, retryAfterOf } from './http-errors';
import { idempotencyKeyOf } from './idempotency';
import { accessLog } from './middleware/access-log';
import { securityHeaders } from './middleware/security-headers';
import { metricsRoute, queueStatsRoute } from './metrics/endpoints';
import { serverSpans } from './middleware/tracing';
import { openaiFacade } from './openai/router';
import type { ApiServices } from './services';
import { streamTask } from './sse';
import { parseResumePoint } from './task-service';

export function createApp(services: ApiServices): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Tracing first: the request's span is the parent of all it does (a no-op unless tracing is on).
  app.use(serverSpans());
  // Before everything, so refusals (401, 413, draining 503s) are timed and counted too.
  app.use(services.metrics.httpMiddleware([BULL_BOARD_PATH]));
  // First of all, so every answer is logged and carries the headers: errors, 413s and draining 503s
  // too (a browser reads an error body only if it has its CORS headers).
  if (services.config.accessLog) app.use(accessLog({ logger: services.logger }));
  app.use(securityHeaders({ corsOrigins: services.config.corsOrigins, hstsMaxAgeSeconds: services.config.hstsMaxAgeSeconds }));
  // A stopping api no longer listens, but clients may still send on keep-alive connections they
  // hold (an SSE client reconnecting at once, say): they are told to go elsewhere, and the
  // connection is closed, so nothing new starts here while it drains.
  app.use((req, res, next) => {
    if (!services.lifecycle.draining || req.path === '/healthz') return next();
    res.setHeader('connection', 'close');
    next(new ServiceUnavailableError('the server is shutting down; retry, another instance will answer', 1));
  });

  // HTTP/1.1 requires Host (RFC 9112 §3.2); Node's own check answers a bare 400, so it is done here.
  app.use((req, _res, next) => {
    if (req.httpVersion === '1.1' && req.headers.host === undefined) throw new ValidationError('an HTTP/1.1 request needs a Host header');
    next();
  });

  // Probes answer without a key: orchestrators have none.
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const redis = await pingRedis(services.redis);
    res.status(redis ? 200 : 503).json({ status: redis ? 'ready' : 'unavailable', checks: { redis } });
  });

  // The queue dashboard is opened in a browser: it may present its key by HTTP Basic (see basicAuthForBoard).
  app.use(BULL_BOARD_PATH, basicAuthForBoard(), boardContentSecurityPolicy());

  // Everything else needs a valid key (in open mode everyone is the one tenant), before the body is read.
  app.use(authenticate(services));
  app.use(refuseDeclaredOversizeBodies(services.config.bodyLimitBytes));
  app.use(express.json({ limit: services.config.bodyLimitBytes }));
  const tasksScope = requireScope('tasks');

  // The hot path first: express tries routes in order.
  app.post('/tasks', tasksScope, async (req, res) => {
    const count = pendingCountOf(res);
    const { task, replayed } = await services.tasks.create(callerOf(res), req.body, idempotencyKeyOf(req), count);
    // A replay created nothing, so nothing counted it yet.
    await count?.now();
    if (replayed) res.setHeader('idempotent-replayed', 'true');
    res.locals.taskId = task.id;
    res
      .status(202)
      .location(`/tasks/${task.id}`)
      .json({ id: task.id, status: task.status, pattern: task.pattern, createdAt: task.createdAt, links: taskLinks(task.id) });
  });

  app.get('/tasks', tasksScope, async (req, res) => {
    const { tasks, nextCursor } = await services.tasks.list(callerOf(res).principal, req.query);
    res.json({ tasks: tasks.map((task) => ({ ...task, links: taskLinks(task.id) })), nextCursor });
  });

  app.get('/tasks/:id', tasksScope, async (req, res) => {
    const task = await services.tasks.get(callerOf(res).principal, req.params.id);
    res.json({ ...task, links: taskLinks(task.id) });
  });

  app.get('/tasks/:id/events', tasksScope, async (req, res) => {
    const afterSeq = parseResumePoint(req.query.after);
    const { task, events } = await services.tasks.events(callerOf(res).principal, req.params.id, afterSeq);
    res.json({ taskId: task.id, status: task.status, events });
  });

  app.get('/tasks/:id/stream', tasksScope, (req: Request, res: Response) => streamTask(services, req, res));

  app.post('/tasks/:id/cancel', tasksScope, async (req, res) => {
    const task = await services.tasks.cancel(callerOf(res).principal, req.params.id);
    res.json({ ...task, links: taskLinks(task.id) });
  });

  // Any valid key may see what this service runs and on what.
  app.get('/patterns', (_req, res) => {
    res.json({ default: services.defaultPattern, patterns: services.patterns.list() });
  });
  app.get('/hosts', hostsHandler(services.hosts));

  // Operators only: metrics, the queue's counts and its dashboard. A scraper without a key uses
  // the METRICS_PORT listener instead.
  const adminScope = requireScope('admin');
  app.get('/metrics', adminScope, metricsRoute(services.metrics));
  app.get('/queue/stats', adminScope, queueStatsRoute(services.queueStats));
  app.use(BULL_BOARD_PATH, adminScope, bullBoardRouter(services.dashboardQueues));

  app.use('/v1', ...openaiFacade(services));

  app.use((req, _res, next) => next(new NotFoundError(`no route for ${quote(req.method, 16)} ${quote(req.path)}`)));
  app.use(errorHandler(services));
  return app;
}

function errorHandler(services: ApiServices): ErrorRequestHandler {
  return async (failure: unknown, req, res, _next) => {
    // A request still to be counted is counted now: past its key's limit, its answer is the 429.
    const count = pendingCountOf(res);
    const error = count === undefined ? failure : await count.answerFor(failure);
    const mapped = asClientError(error);
    const status = isMageError(mapped) ? mapped.httpStatus : 500;
    const retryAfter = retryAfterOf(mapped);
    // An outage or a full queue is not a fault of this process; outages are logged once by the connection.
    if (status >= 500 && retryAfter === undefined) {
      services.logger.error('request failed', { method: req.method, path: quote(req.path), error: String(error), stack: (error as Error).stack });
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    if (retryAfter !== undefined) res.setHeader('retry-after', String(retryAfter));
    res.status(status).json({ error: toErrorBody(mapped) });
  };
}

/**
 * A body whose declared Content-Length is over the limit gets its 413 at once. (body-parser
 * refuses it too, but answers only once the whole body has been read.) The connection is not
 * closed: Node reads and drops the rest of the body after the answer, so a client still sending
 * it gets the 413 rather than a reset, and a client that never sends it is cut off by the request
 * timeout. A client that sent `Expect: 100-continue` is never asked for the body (server.ts).
 */
function refuseDeclaredOversizeBodies(limit: number): RequestHandler {
  return (req, _res, next) => {
    if (!declaresBodyOver(req, limit)) return next();
    const declared = Number(req.headers['content-length']);
    // body-parser's own error, so every error handler (the /v1 facade's too) answers it as usual.
    next(Object.assign(new Error('request entity too large'), { type: 'entity.too.large', status: 413, expose: true, limit, length: declared }));
  };
}
