import type { Server, Socket } from 'socket.io';
import { toErrorBody, ValidationError, z, zodIssuesToDetails } from '@mageagent/core';
import { followTask, type TaskFollow } from '@mageagent/tasks';
import type { ApiServices } from './services';
import { requireTaskId } from './tasks-service';

const SubscribeSchema = z.strictObject({
  taskId: z.string(),
  after: z.number().int().min(0).optional(),
});
const UnsubscribeSchema = z.strictObject({ taskId: z.string() });

type Ack = (answer: unknown) => void;

function parse<T>(schema: z.ZodType<T>, payload: unknown): T {
  const parsed = schema.safeParse(payload);
  if (!parsed.success) throw new ValidationError('invalid payload', zodIssuesToDetails(parsed.error));
  return parsed.data;
}

/**
 * Socket.io: `subscribe-task {taskId, after?}` acks with the task snapshot (or an error) and then
 * emits the task's events as `task-update`, the same objects SSE sends; `unsubscribe-task` stops.
 */
export function attachSocketHandlers(io: Server, services: ApiServices): void {
  io.on('connection', (socket: Socket) => {
    const follows = new Map<string, Promise<TaskFollow>>();

    const reply = (ack: unknown, answer: unknown) => {
      if (typeof ack === 'function') (ack as Ack)(answer);
    };

    socket.on('subscribe-task', async (payload: unknown, ack?: unknown) => {
      try {
        const { taskId: rawId, after } = parse(SubscribeSchema, payload);
        const taskId = requireTaskId(rawId);
        const task = await services.store.require(taskId);
        if (!follows.has(taskId) && follows.size >= services.config.socketMaxSubscriptions) {
          throw new ValidationError(`a socket may follow at most ${services.config.socketMaxSubscriptions} tasks`);
        }
        await follows.get(taskId)?.then((follow) => follow.close());
        reply(ack, { task });
        const follow = followTask(services.store, services.bus, taskId, {
          afterSeq: after ?? 0,
          onEvent: (event) => socket.emit('task-update', event),
          onEnd: () => follows.delete(taskId),
        });
        follows.set(taskId, follow);
      } catch (error) {
        reply(ack, { error: toErrorBody(error) });
      }
    });

    socket.on('unsubscribe-task', async (payload: unknown, ack?: unknown) => {
      try {
        const { taskId } = parse(UnsubscribeSchema, payload);
        const follow = follows.get(taskId);
        follows.delete(taskId);
        (await follow)?.close();
        reply(ack, { ok: true });
      } catch (error) {
        reply(ack, { error: toErrorBody(error) });
      }
    });

    socket.on('disconnect', () => {
      for (const follow of follows.values()) void follow.then((active) => active.close());
      follows.clear();
    });
  });
}
