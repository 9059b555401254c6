import type { IncomingMessage } from 'node:http';
import cors, { type CorsOptions } from 'cors';
import type { RequestHandler } from 'express';
import helmet from 'helmet';
import type { ServerOptions } from 'socket.io';
import { quote, z } from '@mageagent/core';

/** What the api's browser-facing headers are built from. */
export interface SecurityHeadersOptions {
  /**
   * Origins (`scheme://host[:port]`, exactly as browsers send `Origin`) whose pages may call the
   * api. Empty: none, and no CORS header is ever sent.
   */
  corsOrigins: readonly string[];
  /** `Strict-Transport-Security: max-age` in seconds; 0: the header is not sent. */
  hstsMaxAgeSeconds: number;
}

/** Request headers a browser page may send: credentials, resumption and idempotency. */
export const CORS_ALLOWED_HEADERS = ['Authorization', 'X-API-Key', 'Idempotency-Key', 'Last-Event-ID', 'Content-Type'];
/** Response headers a browser page may read beyond the CORS-safelisted ones. */
export const CORS_EXPOSED_HEADERS = ['X-Task-Id', 'Location', 'Retry-After', 'Idempotent-Replayed', 'X-Request-Id', 'X-Should-Retry'];
/** The methods of the api's routes (it has no PUT, PATCH or DELETE). */
const CORS_METHODS = ['GET', 'HEAD', 'POST'];
/** How long a browser may reuse a preflight's answer (Chrome caps it at 2 hours, Firefox at 24). */
const PREFLIGHT_MAX_AGE_SECONDS = 600;

/**
 * `CORS_ORIGINS`: comma-separated exact origins. Each must be what a browser sends as `Origin`
 * (no path, no trailing slash, no wildcard, not `null`), so a typo fails start-up instead of
 * silently matching nothing; letters are lower-cased as browsers send them.
 */
export const CorsOriginsSchema = z
  .string()
  .default('')
  .transform((text, context) => {
    const origins: string[] = [];
    for (const entry of text
      .split(',')
      .map((part) => part.trim())
      .filter((part) => part !== '')) {
      // The URL parser keeps `*` in a host name, so a pattern like https://*.example.com would
      // parse as an origin no browser ever sends: refused, as the documentation says.
      const origin = entry.includes('*') ? undefined : originOf(entry);
      if (origin === undefined || origin !== entry.toLowerCase()) {
        context.addIssue({ code: 'custom', message: `"${quote(entry)}" is not an origin like https://app.example.com or http://localhost:5173` });
        continue;
      }
      if (!origins.includes(origin)) origins.push(origin);
    }
    return origins;
  });

/** The serialised origin of an http(s) URL, or undefined for anything else (`null`, `file:`, junk). */
function originOf(value: string): string | undefined {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Helmet, set for an api that serves JSON and event streams and never a document:
 * - CSP `default-src 'none'; frame-ancestors 'none'`: a response opened as a page may load, run and
 *   frame nothing. CSP governs the document a response becomes, not the page that fetched it, so an
 *   EventSource or fetch() elsewhere is unaffected (their page's own `connect-src` rules those).
 * - `X-Frame-Options: DENY` for browsers older than `frame-ancestors`; `X-Content-Type-Options:
 *   nosniff`, so JSON is never sniffed into HTML; `Referrer-Policy: no-referrer`.
 * - `Cross-Origin-Resource-Policy: same-origin`: it applies to no-cors loads (`<img>`, `<script>`)
 *   only, so it stops other sites embedding responses without touching CORS fetches and
 *   EventSource, which are cors-mode.
 * - HSTS only when asked for: the api speaks plain HTTP, and TLS is the proxy's or ingress's; a
 *   browser ignores HSTS over plain HTTP (RFC 6797 §8.1), and a max-age pinned from here would
 *   outlive a deployment that drops TLS. `includeSubDomains` and `preload` decide for the whole
 *   domain, which is not the api's to decide, so they are never sent.
 * - helmet's other defaults are left out: they act on documents or on software long gone
 *   (Cross-Origin-Opener-Policy and Origin-Agent-Cluster on browsing contexts, DNS prefetching of a
 *   page's links, IE8 downloads, Flash and Acrobat policy files, the XSS auditor no browser has
 *   now), and every header is on every answer: measured on an express route like POST /tasks,
 *   the full set cost about 10 µs more server CPU a request than these five (of 120-140).
 *
 * And `Cache-Control: no-store` on every answer: tasks carry prompts and outputs, which no browser
 * or proxy cache should keep (what OWASP's REST security guidance asks of sensitive data). A route
 * that sets its own (event streams: `no-cache, no-transform`; the dashboard's assets) replaces it.
 *
 * Then CORS, from `corsOrigins` only: an allowed origin gets `Access-Control-Allow-Origin` with
 * itself (never `*`), the allowed and exposed headers, and an answered preflight; any other origin,
 * or none configured, gets no CORS header at all, so browsers on other origins are refused. No
 * credentials (cookies) are allowed: keys travel in headers. `Vary: Origin` is on every response
 * once origins are configured, so a cache never serves one origin's answer to another.
 */
export function securityHeaders(options: SecurityHeadersOptions): RequestHandler {
  const headers = helmet({
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    xFrameOptions: { action: 'deny' },
    strictTransportSecurity: options.hstsMaxAgeSeconds > 0 ? { maxAge: options.hstsMaxAgeSeconds, includeSubDomains: false, preload: false } : false,
    crossOriginOpenerPolicy: false,
    originAgentCluster: false,
    xDnsPrefetchControl: false,
    xDownloadOptions: false,
    xPermittedCrossDomainPolicies: false,
    xXssProtection: false,
  });
  const helmetHeaders: RequestHandler = (req, res, next) => {
    res.setHeader('cache-control', 'no-store');
    headers(req, res, next);
  };
  if (options.corsOrigins.length === 0) return helmetHeaders;

  const corsHeaders = cors({
    origin: listedOrigin(options.corsOrigins),
    methods: CORS_METHODS,
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    credentials: false,
    maxAge: PREFLIGHT_MAX_AGE_SECONDS,
    optionsSuccessStatus: 204,
  });
  return (req, res, next) => {
    helmetHeaders(req, res, (error?: unknown) => {
      if (error !== undefined) return next(error);
      res.vary('Origin');
      corsHeaders(req, res, next);
    });
  };
}

/**
 * Socket.io's options from the same origins: `cors` for the polling transport's HTTP requests (none
 * when no origin is configured), and `allowRequest` for every handshake, websockets included. CORS
 * does not apply to websockets, so without it any site a user visits could open a socket to the
 * api from that user's browser: a handshake whose `Origin` is neither allowed nor the api's own
 * host is refused (403 for polling, 400 for a websocket upgrade). Clients that are not browsers send
 * no `Origin` and are let through; authentication, not the origin, decides who they are.
 */
export function socketOriginOptions(options: Pick<SecurityHeadersOptions, 'corsOrigins'>): Pick<Partial<ServerOptions>, 'cors' | 'allowRequest'> {
  const allowed = new Set(options.corsOrigins);
  const allowRequest = (req: IncomingMessage, callback: (error: string | null | undefined, success: boolean) => void) => {
    const origin = req.headers.origin;
    // HTTP/1.1 requires Host (the server leaves that check to the app, which Socket.io bypasses).
    if (req.httpVersion === '1.1' && req.headers.host === undefined) callback('a Host header is required', false);
    else if (origin === undefined || allowed.has(origin) || isSameHost(origin, req.headers.host)) callback(null, true);
    else callback('origin not allowed', false);
  };
  if (allowed.size === 0) return { allowRequest };
  const socketCors: CorsOptions = {
    origin: listedOrigin(options.corsOrigins),
    methods: ['GET', 'POST'],
    allowedHeaders: ['Authorization', 'X-API-Key', 'Content-Type'],
    credentials: false,
    maxAge: PREFLIGHT_MAX_AGE_SECONDS,
  };
  return { cors: socketCors, allowRequest };
}

/**
 * cors's `origin` as a function rather than the list: given a list, cors still sends the rest of
 * its headers (Allow-Methods, Expose-Headers) and answers preflights for every origin; given
 * `false`, it sends nothing at all.
 */
function listedOrigin(origins: readonly string[]): NonNullable<CorsOptions['origin']> {
  const allowed = new Set(origins);
  return (origin, callback) => callback(null, origin !== undefined && allowed.has(origin) ? origin : false);
}

/**
 * A page served from the api's own host (through the same proxy, say) is not cross-origin. Its host
 * is compared, not its scheme: behind a TLS proxy the page is https and the api sees plain HTTP.
 */
function isSameHost(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    return new URL(origin).host === host.toLowerCase();
  } catch {
    return false;
  }
}
