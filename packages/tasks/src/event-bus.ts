import type { Cluster, Redis } from 'ioredis';
import type { Logger, TaskEvent } from '@mageagent/core';
import type { TaskKeys } from './keys';

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
 *
 * After the connection comes back from an outage, every channel is subscribed again and
 * confirmed before the reconnect listeners run, so a follower that then re-reads the log
 * cannot miss an event published between its read and the subscription.
 */
export class TaskEventBus {
  private readonly channels = new Map<string, ChannelEntry>();
  private readonly reconnectListeners = new Set<() => void>();
  private hasBeenReady = false;

  constructor(
    private readonly subscriber: Redis | Cluster,
    private readonly keys: TaskKeys,
    private readonly logger?: Logger,
  ) {
    subscriber.on('message', (channel: string, message: string) => this.dispatch(channel, message));
    subscriber.on('ready', () => {
      if (this.hasBeenReady) void this.afterReconnect();
      this.hasBeenReady = true;
    });
    this.hasBeenReady = subscriber.status === 'ready';
  }

  /** Channels currently subscribed (for metrics and tests). */
  get subscribedChannels(): number {
    return this.channels.size;
  }

  /** Listeners currently registered across every channel (for metrics and tests). */
  get listenerCount(): number {
    let count = 0;
    for (const entry of this.channels.values()) count += entry.listeners.size;
    return count;
  }

  /**
   * Starts delivering a task's live events to `listener`; resolves once the subscription is
   * active. When Redis refuses the SUBSCRIBE, the listener is not registered, the rejection says
   * why, and the next caller subscribes afresh rather than inheriting the failure.
   */
  async subscribe(taskId: string, listener: TaskEventListener): Promise<() => void> {
    const channel = this.keys.eventChannel(taskId);
    let entry = this.channels.get(channel);
    if (!entry) {
      const created: ChannelEntry = { listeners: new Set(), ready: this.subscriber.subscribe(channel) };
      created.ready.catch(() => {
        if (this.channels.get(channel) === created) this.channels.delete(channel);
      });
      entry = created;
      this.channels.set(channel, entry);
    }
    entry.listeners.add(listener);
    try {
      await entry.ready;
    } catch (error) {
      entry.listeners.delete(listener);
      throw error;
    }
    return () => this.remove(channel, listener);
  }

  /** Called after the subscriber connection came back from an outage and every channel is subscribed again. */
  onReconnect(listener: () => void): () => void {
    this.reconnectListeners.add(listener);
    return () => this.reconnectListeners.delete(listener);
  }

  private async afterReconnect(): Promise<void> {
    const channels = [...this.channels.keys()];
    // ioredis re-subscribes by itself, but does not say when that is done; a SUBSCRIBE of our own
    // on the same connection is answered after its re-subscription, and is harmless twice.
    if (channels.length > 0) {
      try {
        await this.subscriber.subscribe(...channels);
      } catch (error) {
        this.logger?.warn('re-subscribe after reconnect failed', { channels: channels.length, error: String(error) });
      }
    }
    for (const listener of this.reconnectListeners) {
      try {
        listener();
      } catch (error) {
        this.logger?.error('reconnect listener threw', { error: String(error) });
      }
    }
  }

  private remove(channel: string, listener: TaskEventListener): void {
    const entry = this.channels.get(channel);
    if (!entry?.listeners.delete(listener) || entry.listeners.size > 0) return;
    this.channels.delete(channel);
    // Commands on one connection run in order, so a SUBSCRIBE issued after this
    // UNSUBSCRIBE (a new listener arriving) still ends subscribed. During an outage the
    // subscriber's offline queue holds it until the connection is back.
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
