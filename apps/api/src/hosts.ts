import type { RequestHandler } from 'express';
import type { HostStatsReader } from '@mageagent/models';

/** `GET /hosts`: each GPU host's models, memory, leases, waiters, health and recent busy fraction. */
export function hostsHandler(reader: HostStatsReader): RequestHandler {
  return async (_req, res) => {
    res.json({ hosts: await reader.read() });
  };
}
