import { isTerminal, type TaskEvent } from '@mageagent/core';
import type { TaskEventBus } from './event-bus';
import type { TaskStore } from './task-store';

export interface FollowOptions {
  /** Deliver only events with a seq greater than this (resume point). */
  afterSeq?: number;
  onEvent: (event: TaskEvent) => void;
  /** Called once, after the terminal status event was delivered or on error. */
  onEnd?: (reason: 'terminal' | 'closed' | 'error', error?: unknown) => void;
}

export interface TaskFollow {
  /** Stops following; onEnd is called with 'closed' unless it already ended. */
  close(): void;
  readonly lastSeq: number;
}

/**
 * Delivers a task's events exactly once and in seq order: subscribes to live events
 * first, then replays the log after the resume point, dropping duplicates and filling
 * any gap (a live event that skips ahead, or a subscriber reconnect) from the log.
 */
export async function followTask(
  store: TaskStore,
  bus: TaskEventBus,
  taskId: string,
  options: FollowOptions,
): Promise<TaskFollow> {
  let lastSeq = options.afterSeq ?? 0;
  let ended = false;
  let replaying = true;
  const pending: TaskEvent[] = [];
  // Serialises deliveries that need a log read, so order holds across async gaps.
  let chain: Promise<void> = Promise.resolve();

  const end = (reason: 'terminal' | 'closed' | 'error', error?: unknown) => {
    if (ended) return;
    ended = true;
    unsubscribe();
    stopReconnect();
    options.onEnd?.(reason, error);
  };

  const deliver = (event: TaskEvent) => {
    if (ended || event.seq <= lastSeq) return;
    lastSeq = event.seq;
    options.onEvent(event);
    if (event.type === 'status' && isTerminal(event.status)) end('terminal');
  };

  const backfill = (untilSeq: number) =>
    store.readEvents(taskId, lastSeq, untilSeq).then((events) => events.forEach(deliver));

  const onLive = (event: TaskEvent) => {
    if (replaying) {
      pending.push(event);
      return;
    }
    if (event.seq === lastSeq + 1 && chainDepth === 0) {
      deliver(event);
      return;
    }
    enqueue(async () => {
      if (event.seq > lastSeq + 1) await backfill(event.seq - 1);
      deliver(event);
    });
  };

  /** Deliveries waiting in the chain; the direct path is taken only when none are. */
  let chainDepth = 0;
  const enqueue = (work: () => Promise<void>) => {
    chainDepth += 1;
    chain = chain
      .then(() => (ended ? undefined : work()))
      .catch((error: unknown) => end('error', error))
      .finally(() => {
        chainDepth -= 1;
      });
  };

  const unsubscribe = await bus.subscribe(taskId, onLive);
  const stopReconnect = bus.onReconnect(() => enqueue(() => backfill(-1)));

  try {
    await backfill(-1);
    // Resumed at or past the terminal event: nothing more will ever come.
    if (!ended) {
      const head = await store.head(taskId);
      if (!head) end('error', new Error(`task ${taskId} is gone`));
      else if (isTerminal(head.status) && lastSeq >= head.lastSeq) end('terminal');
    }
  } catch (error) {
    end('error', error);
  }
  replaying = false;
  for (const event of pending.splice(0)) onLive(event);

  return {
    close: () => end('closed'),
    get lastSeq() {
      return lastSeq;
    },
  };
}
