import type { Request, Response } from 'express';
import type { TaskEvent } from '@mageagent/core';
import { followTask } from '@mageagent/tasks';
import type { ApiServices } from './services';
import { parseResumePoint, requireTaskId } from './tasks-service';

/** Open SSE responses, so shutdown can tell them to reconnect elsewhere. */
export const openStreams = new Set<Response>();

function formatEvent(event: TaskEvent): string {
  return `id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * `GET /tasks/:id/stream`: the task's events as SSE. Resumes after `Last-Event-ID` or
 * `?after=`, replays a finished task's log and closes after the terminal status.
 */
export async function streamTask(services: ApiServices, req: Request, res: Response): Promise<void> {
  const taskId = requireTaskId(req.params.id);
  const afterSeq = parseResumePoint(req.get('last-event-id') ?? req.query.after);
  await services.store.require(taskId);

  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  // Tells EventSource how soon to reconnect after the server ends a stream on shutdown.
  res.write('retry: 1000\n\n');
  openStreams.add(res);

  const ping = setInterval(() => res.write(': ping\n\n'), services.config.ssePingMs);
  // The client may leave while the log is being replayed: note it now, act once following.
  let clientGone = false;
  res.once('close', () => {
    clientGone = true;
  });
  const follow = await followTask(services.store, services.bus, taskId, {
    afterSeq,
    onEvent: (event) => res.write(formatEvent(event)),
    onEnd: (reason, error) => {
      clearInterval(ping);
      openStreams.delete(res);
      if (reason === 'error') services.logger.warn('stream ended on error', { taskId, error: String(error) });
      res.end();
    },
  });
  if (clientGone) follow.close();
  else res.once('close', () => follow.close());
}
