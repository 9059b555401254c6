import type { Server, Socket } from 'socket.io';
import { ForbiddenError, toErrorBody, ValidationError, z, zodIssuesToDetails, type ClientToServerEvents, type ServerToClientEvents } from '@mageagent/core';
import type { TaskFollow } from '@mageagent/tasks';
import { asClientError } from './http-errors';
import type { ApiServices } from './services';
import type { Caller } from './task-service';

/** What the server keeps per connection: the caller its handshake authenticated. */
export interface ApiSocketData {
  caller: Caller;
}

export type ApiSocketServer = Server<ClientToServerEvents, ServerToClientEvents, Record<string, never>, ApiSocketData>;
type ApiSocket = Socket<ClientToServerEvents, ServerToClientEvents, Record<string, never>, ApiSocketData>;

const SubscribeSchema = z.strictObject({
  taskId: z.string().max(64),
  after: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
});
const UnsubscribeSchema = z.strictObject({ taskId: z.string().max(64) });

type Ack = (answer: unknown) => void;

function parse<T>(schema: z.ZodType<T>, payload: unknown): T {
  const parsed = schema.safeParse(payload);
  if (!parsed.success) throw new ValidationError('invalid payload', zodIssuesToDetails(parsed.error));
  return parsed.data;
}

/**
 * An event's payload and acknowledgement callback. Socket.io passes the callback last, whatever
 * came before it: a client that sent no payload (or extra arguments) is still answered, with the
 * validation error.
 */
function payloadAndAck(args: unknown[]): [payload: unknown, ack: unknown] {
  const last = args.at(-1);
  if (typeof last !== 'function') return [args[0], undefined];
  return [args.length > 1 ? args[0] : undefined, last];
}

/** The error a socket client is acked with: the documented shape, whatever went wrong. */
const errorAnswer = (error: unknown) => ({ error: toErrorBody(asClientError(error)) });

/**
 * Socket.io: the handshake authenticates the connection (`auth: { token: <API key> }`, or the
 * HTTP headers); `subscribe-task {taskId, after?}` acks with the task snapshot (or an error) and
 * then emits the task's events as `task-update`, the same objects SSE sends; `unsubscribe-task`
 * stops. Another tenant's task is answered like an unknown one. A subscription the server has to
 * drop before the task ends (the task expired) is announced with `task-unsubscribed {taskId, after,
 * reason}`: subscribe again with that `after` to resume. A Redis outage drops nothing: the events
 * resume when Redis is back. On one connection an event is sent once: subscribing again to a task
 * the socket follows continues where it was (to replay, unsubscribe first).
 */
export function attachSocketHandlers(io: ApiSocketServer, services: ApiServices): void {
  io.use((socket, next) => {
    try {
      socket.data.caller = services.auth.fromHandshake(socket.handshake.auth, socket.handshake.headers);
      next();
    } catch (error) {
      // socket.io-client raises this as `connect_error`, with `data` holding the documented body.
      const refusal = new Error('unauthorized') as Error & { data?: unknown };
      refusal.data = toErrorBody(error);
      next(refusal);
    }
  });

  io.on('connection', (socket: ApiSocket) => {
    const follows = new Map<string, TaskFollow>();
    const { caller } = socket.data;

    const reply = (ack: unknown, answer: unknown) => {
      if (typeof ack === 'function') (ack as Ack)(answer);
    };

    socket.on('subscribe-task', async (...args: unknown[]) => {
      const [payload, ack] = payloadAndAck(args);
      try {
        const { taskId, after } = parse(SubscribeSchema, payload);
        if (!caller.principal.scopes.includes('tasks')) throw new ForbiddenError(`this key (${caller.principal.keyId}) does not have the "tasks" scope`);
        await services.rateLimits.consume(caller.principal, caller.limits);
        const task = await services.tasks.get(caller.principal, taskId);
        if (socket.disconnected) return;
        if (!follows.has(task.id) && follows.size >= services.config.socketMaxSubscriptions) {
          throw new ValidationError(`a socket may follow at most ${services.config.socketMaxSubscriptions} tasks`);
        }
        // Subscribing again to a task this socket already follows continues where that follow is:
        // what it sent is received or on its way on this very connection, so it is never sent twice.
        const previous = follows.get(task.id);
        previous?.close();
        reply(ack, { task });
        const follow = services.tasks.follow(task, {
          afterSeq: Math.max(after ?? 0, previous?.lastSeq ?? 0),
          onEvent: (event) => socket.emit('task-update', event),
          onEnd: (reason, error) => {
            if (follows.get(task.id) === follow) follows.delete(task.id);
            if (reason !== 'error') return;
            services.logger.warn('socket subscription ended on error', { taskId: task.id, error: String(error) });
            socket.emit('task-unsubscribed', { taskId: task.id, after: follow.lastSeq, reason: 'the server could not go on following the task' });
          },
        });
        follows.set(task.id, follow);
      } catch (error) {
        reply(ack, errorAnswer(error));
      }
    });

    socket.on('unsubscribe-task', (...args: unknown[]) => {
      const [payload, ack] = payloadAndAck(args);
      try {
        const { taskId } = parse(UnsubscribeSchema, payload);
        const follow = follows.get(taskId);
        follows.delete(taskId);
        follow?.close();
        reply(ack, { ok: true });
      } catch (error) {
        reply(ack, errorAnswer(error));
      }
    });

    socket.on('disconnect', () => {
      for (const follow of follows.values()) follow.close();
      follows.clear();
    });
  });
}
