import type { TaskEvent } from '@mageagent/core';
import type { Socket } from 'socket.io-client';

/**
 * Collects every `task-update` a socket receives; `done` resolves at the first status event with
 * `status` (the task's end, for a test that waits for it).
 */
export function collectTaskUpdates(socket: Socket, status = 'completed'): { received: TaskEvent[]; done: Promise<void> } {
  const received: TaskEvent[] = [];
  const done = new Promise<void>((resolve) => {
    socket.on('task-update', (event: TaskEvent) => {
      received.push(event);
      if (event.type === 'status' && event.status === status) resolve();
    });
  });
  return { received, done };
}
