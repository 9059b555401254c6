import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import type { RequestHandler } from 'express';

/** Where the queue dashboard is served on the api port (admin scope). */
export const BULL_BOARD_PATH = '/admin/queues';

/**
 * Bull-board's UI and its JSON API, read-only: the dashboard shows jobs, their states, data,
 * errors and logs, but cannot retry, promote, clean, pause or remove. Not a preference: the task
 * record in Redis, not the job, is what clients read, and every change to it goes through the
 * fenced transition script. A job removed or retried from the board would leave its task
 * `processing` or run it a second time behind the record's back; cancelling is POST /tasks/:id/cancel.
 */
export function bullBoardRouter(queues: readonly Queue[]): RequestHandler {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(BULL_BOARD_PATH);
  createBullBoard({
    queues: queues.map((queue) => new BullMQAdapter(queue, { readOnlyMode: true, allowRetries: false })),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'MageAgent queues' } },
  });
  return serverAdapter.getRouter() as RequestHandler;
}

/**
 * The board's pages, scripts and API calls are fetched by a browser, which cannot add an
 * `Authorization: Bearer` header to a navigation. On this path only, HTTP Basic is accepted as
 * well: any user name, the API key as the password. The browser asks for it once (the 401 carries
 * `WWW-Authenticate: Basic`) and sends it with every later request under the path. The key then
 * goes through the same authentication and admin-scope check as a Bearer key; over anything but
 * loopback, TLS (the ingress's) must protect it as it protects Bearer keys.
 */
export function basicAuthForBoard(): RequestHandler {
  return (req, res, next) => {
    res.setHeader('www-authenticate', 'Basic realm="MageAgent admin", charset="UTF-8"');
    const authorization = req.headers.authorization;
    if (typeof authorization === 'string' && /^basic\s+/i.test(authorization)) {
      const decoded = Buffer.from(authorization.replace(/^basic\s+/i, ''), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const key = colon >= 0 ? decoded.slice(colon + 1) : '';
      // An empty password is no key: the header is dropped so the answer is "no key" (401).
      if (key === '') delete req.headers.authorization;
      else req.headers.authorization = `Bearer ${key}`;
    }
    next();
  };
}

/**
 * CSP for the board's pages only (the rest of the api keeps `default-src 'none'`): its bundled
 * scripts, styles and fonts from this origin, inline styles (React style attributes and the
 * loading screen's `<style>`), images from this origin and data: URLs (icons), and its JSON API
 * through fetch. No inline or remote script: the one inline `<script>` is a JSON config block,
 * which browsers never execute. Its Google Fonts stylesheet is not allowed: the page falls back to
 * system fonts rather than calling out to a third party from an admin page.
 */
export function boardContentSecurityPolicy(): RequestHandler {
  const policy = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "font-src 'self' data:",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
  return (_req, res, next) => {
    res.setHeader('content-security-policy', policy);
    next();
  };
}
