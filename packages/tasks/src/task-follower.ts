import { isTerminal, type TaskEvent } from '@mageagent/core';
import type { TaskEventBus } from './event-bus';
import { isRedisUnavailable } from './redis';
import type { TaskStore } from './task-store';

export type FollowEndReason = 'terminal' | 'closed' | 'error';

export interface FollowOptions {
  /** Deliver only events with a seq greater than this (resume point). */
  afterSeq?: number;
  onEvent: (event: TaskEvent) => void;
  /**
   * Called once: after the terminal status event was delivered, on close(), or with 'error' when
   * following cannot go on (the task expired, or Redis answered with something other than an
   * outage). An outage is never an end: the follow waits for Redis and resumes where it was.
   */
  onEnd?: (reason: FollowEndReason, error?: unknown) => void;
  /**
   * How often the follow compares its position with the record and fetches anything it lacks.
   * Pub/sub can lose a message (a subscriber that reconnects, a publish that races a resubscribe);
   * the check makes every follow converge on the log whatever was lost. 0 = never.
   */
  resyncMs?: number;
  /** First and longest wait between attempts while Redis is unreachable. */
  retryMs?: { first: number; max: number };
}

export interface TaskFollow {
  /** Stops following; onEnd is called with 'closed' unless it already ended. */
  close(): void;
  /** The seq of the last event delivered. */
  readonly lastSeq: number;
  /**
   * Resolves once the log up to the moment of subscribing has been delivered (or the follow has
   * ended). Never rejects.
   */
  readonly ready: Promise<void>;
}

const DEFAULT_RESYNC_MS = 15_000;
const DEFAULT_RETRY_MS = { first: 100, max: 2_000 };

/**
 * Delivers a task's events exactly once and in seq order: subscribes to live events
 * first, then replays the log after the resume point, dropping duplicates and filling
 * any gap (a live event that skips ahead, a subscriber reconnect, a periodic check) from
 * the log. While Redis is unreachable it waits and retries; it never throws.
 */
export function followTask(store: TaskStore, bus: TaskEventBus, taskId: string, options: FollowOptions): TaskFollow {
  const follower = new TaskFollower(store, bus, taskId, options);
  follower.start();
  return follower;
}

class TaskFollower implements TaskFollow {
  private delivered: number;
  private ended = false;
  private replaying = true;
  private readonly pending: TaskEvent[] = [];
  /** Serialises the work that reads the log, so deliveries keep their order across awaits. */
  private chain: Promise<void> = Promise.resolve();
  /** Work waiting in the chain; a live event is delivered directly only when none is. */
  private queued = 0;
  private unsubscribe: (() => void) | undefined;
  private stopReconnect: (() => void) | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  ready: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: TaskStore,
    private readonly bus: TaskEventBus,
    private readonly taskId: string,
    private readonly options: FollowOptions,
  ) {
    this.delivered = options.afterSeq ?? 0;
  }

  get lastSeq(): number {
    return this.delivered;
  }

  start(): void {
    this.ready = this.begin();
  }

  close(): void {
    this.end('closed');
  }

  private async begin(): Promise<void> {
    // Live first, then the log: an event published in between arrives live and is deduplicated.
    await this.retrying(async () => {
      this.unsubscribe = await this.bus.subscribe(this.taskId, (event) => this.onLive(event));
      // close() may have come while the SUBSCRIBE was in flight.
      if (this.ended) this.unsubscribe();
    });
    await this.retrying(() => this.catchUp());
    this.replaying = false;
    for (const event of this.pending.splice(0)) this.onLive(event);
    if (this.ended) return;
    this.stopReconnect = this.bus.onReconnect(() => this.enqueue(() => this.catchUp()));
    const resyncMs = this.options.resyncMs ?? DEFAULT_RESYNC_MS;
    if (resyncMs > 0) {
      this.resyncTimer = setInterval(() => {
        if (this.queued === 0) this.enqueue(() => this.catchUp());
      }, resyncMs);
      this.resyncTimer.unref();
    }
  }

  /** Delivers everything the log has beyond what was delivered; ends the follow at the terminal event. */
  private async catchUp(): Promise<void> {
    const head = await this.store.head(this.taskId);
    if (this.ended) return;
    if (!head) {
      this.end('error', new Error(`task ${this.taskId} is gone`));
      return;
    }
    if (head.lastSeq > this.delivered) await this.backfill(head.lastSeq);
    // Resumed at or past the terminal event: nothing more will ever come.
    if (isTerminal(head.status) && this.delivered >= head.lastSeq) this.end('terminal');
  }

  private async backfill(untilSeq: number): Promise<void> {
    const events = await this.store.readEvents(this.taskId, this.delivered, untilSeq);
    for (const event of events) this.deliver(event);
  }

  private onLive(event: TaskEvent): void {
    if (this.ended) return;
    if (this.replaying) {
      this.pending.push(event);
      return;
    }
    if (event.seq === this.delivered + 1 && this.queued === 0) {
      this.deliver(event);
      return;
    }
    this.enqueue(async () => {
      if (event.seq > this.delivered + 1) await this.backfill(event.seq - 1);
      this.deliver(event);
    });
  }

  private deliver(event: TaskEvent): void {
    if (this.ended || event.seq <= this.delivered) return;
    this.delivered = event.seq;
    this.options.onEvent(event);
    if (event.type === 'status' && isTerminal(event.status)) this.end('terminal');
  }

  private enqueue(work: () => Promise<void>): void {
    this.queued += 1;
    this.chain = this.chain
      .then(() => this.retrying(work))
      .finally(() => {
        this.queued -= 1;
      });
  }

  /**
   * Runs `work` until it succeeds or the follow ends. While Redis is unreachable it waits (with
   * backoff, woken early by close()) and tries again; any other failure ends the follow.
   */
  private async retrying(work: () => Promise<void>): Promise<void> {
    const retry = this.options.retryMs ?? DEFAULT_RETRY_MS;
    let delayMs = retry.first;
    while (!this.ended) {
      try {
        await work();
        return;
      } catch (error) {
        if (!isRedisUnavailable(error)) {
          this.end('error', error);
          return;
        }
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
      delayMs = Math.min(delayMs * 2, retry.max);
    }
  }

  private end(reason: FollowEndReason, error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.resyncTimer);
    this.unsubscribe?.();
    this.stopReconnect?.();
    this.wake?.();
    this.pending.length = 0;
    this.options.onEnd?.(reason, error);
  }
}
