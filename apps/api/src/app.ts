import express, { type ErrorRequestHandler, type Request, type Response } from 'express';
import { isMageError, NotFoundError, quote, ServiceUnavailableError, toErrorBody } from '@mageagent/core';
import { pingRedis } from '@mageagent/tasks';
import { openaiFacade } from './openai/router';
import { hostsHandler } from './hosts';
import { asClientError } from './http-errors';
import { accessLog } from './middleware/access-log';
import { securityHeaders } from './middleware/security-headers';
import type { ApiServices } from './services';
import { streamTask } from './sse';
import { cancelTask, createTask, parseResumePoint, requireTaskId } from './tasks-service';

/** The task's links, so clients need not build URLs. */
function links(taskId: string) {
  return {
    self: `/tasks/${taskId}`,
    stream: `/tasks/${taskId}/stream`,
    events: `/tasks/${taskId}/events`,
    cancel: `/tasks/${taskId}/cancel`,
  };
}

export function createApp(services: ApiServices): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
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
  app.use(express.json({ limit: services.config.bodyLimitBytes }));

  // The hot path first: express tries routes in order.
  app.post('/tasks', async (req, res) => {
    const task = await createTask(services, req.body);
    res.locals.taskId = task.id;
    res
      .status(202)
      .location(`/tasks/${task.id}`)
      .json({ id: task.id, status: task.status, pattern: task.pattern, createdAt: task.createdAt, links: links(task.id) });
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });

  app.get('/readyz', async (_req, res) => {
    const redis = await pingRedis(services.redis);
    res.status(redis ? 200 : 503).json({ status: redis ? 'ready' : 'unavailable', checks: { redis } });
  });

  app.get('/patterns', (_req, res) => {
    res.json({ default: services.defaultPattern, patterns: services.patterns.list() });
  });

  app.get('/hosts', hostsHandler(services.hosts));

  app.get('/tasks/:id', async (req, res) => {
    const task = await services.store.require(requireTaskId(req.params.id));
    res.json({ ...task, links: links(task.id) });
  });

  app.get('/tasks/:id/events', async (req, res) => {
    const taskId = requireTaskId(req.params.id);
    const afterSeq = parseResumePoint(req.query.after);
    const [task, events] = await Promise.all([services.store.require(taskId), services.store.readEvents(taskId, afterSeq)]);
    res.json({ taskId, status: task.status, events });
  });

  app.get('/tasks/:id/stream', (req: Request, res: Response) => streamTask(services, req, res));

  app.post('/tasks/:id/cancel', async (req, res) => {
    const task = await cancelTask(services, requireTaskId(req.params.id));
    res.json({ ...task, links: links(task.id) });
  });

  app.use('/v1', ...openaiFacade(services));

  app.use((req, _res, next) => next(new NotFoundError(`no route for ${quote(req.method, 16)} ${quote(req.path)}`)));
  app.use(errorHandler(services));
  return app;
}

function errorHandler(services: ApiServices): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    const mapped = asClientError(error);
    const status = isMageError(mapped) ? mapped.httpStatus : 500;
    // An outage is logged once by the connection, not once per request it costs.
    if (status >= 500 && !(mapped instanceof ServiceUnavailableError)) {
      services.logger.error('request failed', { method: req.method, path: quote(req.path), error: String(error), stack: (error as Error).stack });
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    if (mapped instanceof ServiceUnavailableError) res.setHeader('retry-after', String(mapped.retryAfterSeconds));
    res.status(status).json({ error: toErrorBody(mapped) });
  };
}
