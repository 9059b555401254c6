import type { Redis } from 'ioredis';
import type { Logger, TaskEvent } from '@mageagent/core';
import { TaskKeys } from './keys';

export type TaskEventListener = (event: TaskEvent) => void;

interface ChannelEntry {
  listeners: Set<TaskEventListener>;
  /** Resolves once Redis has confirmed the SUBSCRIBE. */
  ready: Promise<unknown>;
}

/**
 * One Redis subscriber connection per process, fanned out in-process to every SSE
 * response and socket. Channels are reference-counted: the first listener of a task
 * subscribes, the last one to leave unsubscribes. The number of Redis connections
 * therefore does not grow with the number of clients.
 */
export class TaskEventBus {
  private readonly channels = new Map<string, ChannelEntry>();
  private readonly reconnectListeners = new Set<() => void>();
  private hasBeenReady = false;

  constructor(
    private readonly subscriber: Redis,
    private readonly keys: TaskKeys,
    private readonly logger?: Logger,
  ) {
    subscriber.on('message', (channel: string, message: string) => this.dispatch(channel, message));
    // ioredis re-subscribes by itself after a reconnect; events published while it was
    // away are in the log, so followers re-read it.
    subscriber.on('ready', () => {
      if (this.hasBeenReady) for (const listener of this.reconnectListeners) listener();
      this.hasBeenReady = true;
    });
  }

  /** Channels currently subscribed (for metrics and tests). */
  get subscribedChannels(): number {
    return this.channels.size;
  }

  /** Starts delivering a task's live events to `listener`; resolves once the subscription is active. */
  async subscribe(taskId: string, listener: TaskEventListener): Promise<() => void> {
    const channel = this.keys.eventChannel(taskId);
    let entry = this.channels.get(channel);
    if (!entry) {
      entry = { listeners: new Set(), ready: this.subscriber.subscribe(channel) };
      this.channels.set(channel, entry);
    }
    entry.listeners.add(listener);
    await entry.ready;
    return () => this.remove(channel, listener);
  }

  /** Called after the subscriber connection comes back from an outage. */
  onReconnect(listener: () => void): () => void {
    this.reconnectListeners.add(listener);
    return () => this.reconnectListeners.delete(listener);
  }

  private remove(channel: string, listener: TaskEventListener): void {
    const entry = this.channels.get(channel);
    if (!entry || !entry.listeners.delete(listener) || entry.listeners.size > 0) return;
    this.channels.delete(channel);
    // Commands on one connection run in order, so a SUBSCRIBE issued after this
    // UNSUBSCRIBE (a new listener arriving) still ends subscribed.
    this.subscriber.unsubscribe(channel).catch((error: unknown) => {
      this.logger?.warn('unsubscribe failed', { channel, error: String(error) });
    });
  }

  private dispatch(channel: string, message: string): void {
    const entry = this.channels.get(channel);
    if (!entry) return;
    let event: TaskEvent;
    try {
      event = JSON.parse(message) as TaskEvent;
    } catch {
      this.logger?.warn('dropped an unparseable event', { channel });
      return;
    }
    for (const listener of entry.listeners) {
      try {
        listener(event);
      } catch (error) {
        this.logger?.error('event listener threw', { channel, error: String(error) });
      }
    }
  }
}
