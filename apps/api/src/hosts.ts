import { Router } from 'express';
import type { HostStatsReader } from '@mageagent/models';

/** `GET /hosts`: each GPU host's models, memory, leases, waiters, health and recent busy fraction. */
export function hostsRouter(reader: HostStatsReader): Router {
  const router = Router();
  router.get('/hosts', async (_req, res) => {
    res.json({ hosts: await reader.read() });
  });
  return router;
}
