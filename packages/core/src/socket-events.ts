import type { ErrorBody } from './errors';
import type { TaskEvent, TaskRecord } from './schemas';

/** `subscribe-task`: follow a task's events, after `after` (its seq) when resuming. */
export interface SubscribeTaskPayload {
  taskId: string;
  after?: number;
}

export type SubscribeTaskAnswer = { task: TaskRecord } | { error: ErrorBody };
export type UnsubscribeTaskAnswer = { ok: true } | { error: ErrorBody };

/** Events a Socket.io client sends (socket.io's typed events: `io<ServerToClientEvents, ClientToServerEvents>`). */
export interface ClientToServerEvents {
  'subscribe-task': (payload: SubscribeTaskPayload, ack?: (answer: SubscribeTaskAnswer) => void) => void;
  'unsubscribe-task': (payload: { taskId: string }, ack?: (answer: UnsubscribeTaskAnswer) => void) => void;
}

/** Events the server sends. */
export interface ServerToClientEvents {
  /** One of the followed task's events, the same object SSE sends. */
  'task-update': (event: TaskEvent) => void;
  /** The server stopped following a task before its end: subscribe again with `after`. */
  'task-unsubscribed': (info: { taskId: string; after: number; reason: string }) => void;
  /** The api is stopping; the connection drops next, and socket.io-client reconnects. */
  'server-shutdown': (info: { reason: string; reconnect: true }) => void;
}

/** What the server keeps per connection: who authenticated it. */
export interface SocketData {
  principal: import('./identity').Principal;
}
