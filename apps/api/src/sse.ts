import type { Request, Response } from 'express';
import type { TaskEvent } from '@mageagent/core';
import { callerOf } from './auth/middleware';
import type { ApiServices } from './services';
import { clientLeft } from './http-errors';
import { parseResumePoint } from './task-service';

/** An open SSE response, as shutdown sees it. */
export interface OpenStream {
  /** The key that opened it: streams of a revoked key are ended. */
  keyId: string;
  /** Ends the stream with a `reconnect` event: the client should reconnect with Last-Event-ID. */
  endWithReconnect(reason: string): void;
}

/** Open SSE responses, so shutdown can tell them to reconnect elsewhere. */
export const openStreams = new Set<OpenStream>();

/** How soon an EventSource reconnects after the server ends a stream (the `retry:` field). */
const RECONNECT_AFTER_MS = 1000;

function formatEvent(event: TaskEvent): string {
  return `id: ${event.seq}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * The last frame of a stream the server ends before the task did. It carries no `id:`, so the
 * client's Last-Event-ID stays the last task event it received and a reconnect resumes there.
 */
function formatReconnect(taskId: string, lastEventId: number, reason: string): string {
  return `event: reconnect\ndata: ${JSON.stringify({ taskId, lastEventId, retryMs: RECONNECT_AFTER_MS, reason })}\n\n`;
}

/**
 * `GET /tasks/:id/stream`: the task's events as SSE. Resumes after `Last-Event-ID` or
 * `?after=`, replays a finished task's log and closes after the terminal status. A Redis outage
 * does not end the stream (pings go on; the events resume when Redis is back); a stream the
 * server must end early (shutdown, the task expired) ends with a `reconnect` event.
 */
export async function streamTask(services: ApiServices, req: Request, res: Response): Promise<void> {
  const afterSeq = parseResumePoint(req.get('last-event-id') ?? req.query.after);
  const { principal } = callerOf(res);
  const task = await services.tasks.get(principal, req.params.id);
  const taskId = task.id;
  // The client may have left already (during authentication or the lookup): its 'close' has fired.
  if (clientLeft(req, res)) return;

  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  // HEAD: the headers say what a GET would stream; there is no body to keep open.
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  // Tells EventSource how soon to reconnect after the server ends a stream.
  res.write(`retry: ${RECONNECT_AFTER_MS}\n\n`);

  const ping = setInterval(() => res.write(': ping\n\n'), services.config.ssePingMs);
  let finalFrame = '';
  const stream: OpenStream = {
    keyId: principal.keyId,
    endWithReconnect: (reason) => {
      finalFrame = formatReconnect(taskId, follow.lastSeq, reason);
      follow.close();
    },
  };
  openStreams.add(stream);
  const follow = services.tasks.follow(task, {
    afterSeq,
    resyncMs: services.config.ssePingMs,
    onEvent: (event) => res.write(formatEvent(event)),
    onEnd: (reason, error) => {
      clearInterval(ping);
      openStreams.delete(stream);
      if (reason === 'error') {
        services.logger.warn('stream ended on error', { taskId, error: String(error) });
        finalFrame = formatReconnect(taskId, follow.lastSeq, 'the server could not go on following the task');
      }
      res.end(finalFrame);
    },
  });
  res.once('close', () => follow.close());
}
