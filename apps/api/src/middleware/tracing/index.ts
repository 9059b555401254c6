import type { RequestHandler } from 'express';
import { context, propagation, trace } from '@opentelemetry/api';
import { SpanKind, SpanStatusCode, tracer, tracingActive } from '@mageagent/core';
import { routeTemplateOf } from '../access-log';

const UNTRACED_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * A SERVER span per request, the parent of everything the request does (a task's creation span,
 * and through the job's trace context the worker's task span). It continues a caller's W3C
 * `traceparent` when one is sent. Named and tagged with the route template, never the URL (ids,
 * queries), and it records no header or body: no key, no prompt.
 *
 * Ends when the response ends or the client goes (`close`), so an SSE stream is one span over
 * its whole length. 5xx answers are errors; 4xx are the client's (OpenTelemetry's HTTP conventions).
 * Not traced: /healthz, /readyz and /metrics; nothing at all without a tracing SDK.
 */
export function serverSpans(): RequestHandler {
  return (req, res, next) => {
    // Without an SDK every span is a no-op: skip the work. Probes and scrapes come every few
    // seconds from machines; their spans would only be noise.
    if (!tracingActive() || UNTRACED_PATHS.has(req.path)) return next();
    const parent = propagation.extract(context.active(), req.headers);
    const span = tracer().startSpan(
      req.method,
      {
        kind: SpanKind.SERVER,
        attributes: { 'http.request.method': req.method, 'url.scheme': req.protocol, 'network.protocol.version': req.httpVersion },
      },
      parent,
    );
    res.once('close', () => {
      const route = routeTemplateOf(req);
      if (route !== null) {
        span.updateName(`${req.method} ${route}`);
        span.setAttribute('http.route', route);
      }
      const tenant: unknown = (res.locals.caller as { principal?: { tenant?: unknown } } | undefined)?.principal?.tenant;
      if (typeof tenant === 'string') span.setAttribute('mageagent.tenant', tenant);
      if (res.headersSent) {
        span.setAttribute('http.response.status_code', res.statusCode);
        if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: String(res.statusCode) });
      } else {
        // The client left before it was answered.
        span.setAttribute('error.type', 'client_closed');
      }
      span.end();
    });
    context.with(trace.setSpan(parent, span), next);
  };
}
