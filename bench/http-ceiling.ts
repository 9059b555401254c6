/**
 * The HTTP ceiling reference: an express 5 route that parses and validates the same
 * POST /tasks body as the api and answers 202 — no Redis. What the api could reach if
 * enqueuing were free.
 */
import type { AddressInfo } from 'node:net';
import express from 'express';
import { v7 as uuidv7 } from 'uuid';
import { CreateTaskRequestSchema, ValidationError, zodIssuesToDetails } from '@mageagent/core';

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.use(express.json({ limit: 1_048_576 }));
app.post('/tasks', (req, res) => {
  const parsed = CreateTaskRequestSchema.safeParse(req.body);
  if (!parsed.success) {
    const error = new ValidationError('invalid task request', zodIssuesToDetails(parsed.error));
    res.status(400).json({ error: error.toBody() });
    return;
  }
  const id = uuidv7();
  res
    .status(202)
    .location(`/tasks/${id}`)
    .json({ id, status: 'queued', pattern: parsed.data.pattern ?? 'primary', createdAt: new Date().toISOString(), links: { self: `/tasks/${id}` } });
});
const server = app.listen(0, '127.0.0.1', () => {
  process.send?.({ type: 'ready', service: 'http-ceiling', port: (server.address() as AddressInfo).port });
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
