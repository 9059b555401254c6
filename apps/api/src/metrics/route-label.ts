import type { Request } from 'express';
import { routeTemplateOf } from '../middleware/access-log';

/** The label of requests no route matched (404s, and 401s refused before routing). */
export const UNMATCHED_ROUTE = 'unmatched';

/**
 * The `route` label of a request: the express route pattern that handled it (`/tasks/:id`,
 * `/v1/chat/completions`), never the raw URL, whose ids would make one time series per task.
 * Requests under one of `mounts` (a mounted app such as bull-board, whose pages and static files
 * are of no interest one by one) are labelled `<mount>/*`; anything else no route matched is
 * `unmatched`. Call it when the response ends: express sets `req.route` as it dispatches.
 */
export function routeLabel(req: Request, mounts: readonly string[] = []): string {
  // Express matches paths whatever their case: so do the mounts here (`/ADMIN/Queues` is the board).
  const path = (req.originalUrl.split('?')[0] ?? '').toLowerCase();
  for (const mount of mounts) if (path === mount || path.startsWith(`${mount}/`)) return `${mount}/*`;
  return routeTemplateOf(req) || UNMATCHED_ROUTE;
}
