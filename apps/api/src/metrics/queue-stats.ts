/** The job states /queue/stats and mageagent_queue_jobs report, as BullMQ names them. */
export const QUEUE_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

/** `GET /queue/stats`: job counts by state, and the backlog an autoscaler scales workers on. */
export type QueueStats = Record<QueueState, number> & { backlog: number };

/** What counts jobs: BullMQ's `Queue.getJobCounts` has this shape. */
export interface JobCounter {
  getJobCounts(...types: QueueState[]): Promise<Record<string, number>>;
}

/**
 * Work not yet done: jobs waiting (plain or by priority; every task job has a priority, so they
 * are `prioritized`) and running. Delayed jobs (retries in backoff) are left out: they cannot
 * start yet, so more workers would not help them.
 */
export function queueStatsOf(counts: Record<string, number | undefined>): QueueStats {
  const stats = Object.fromEntries(QUEUE_STATES.map((state) => [state, Math.max(0, Number(counts[state] ?? 0) || 0)])) as Record<QueueState, number>;
  return { ...stats, backlog: stats.waiting + stats.prioritized + stats.active };
}

export interface QueueStatsCacheOptions {
  /** Answers this recent are reused: scrapes and autoscalers polling together cost Redis one count. */
  ttlMs: number;
  /** A count that takes longer fails (the scrape goes on without queue gauges). */
  timeoutMs: number;
  now?: () => number;
}

/**
 * Job counts for scrapes and /queue/stats, cached for `ttlMs` and shared by concurrent callers.
 * A failed count (Redis unreachable or slow) rejects, and `redisUp` turns false until a count
 * succeeds again; the last good stats are kept (`lastGood`) but never passed off as current.
 */
export class QueueStatsCache {
  private cached: { stats: QueueStats; at: number } | undefined;
  private pending: Promise<QueueStats> | undefined;
  private up = true;
  private readonly now: () => number;

  constructor(
    private readonly counter: JobCounter,
    private readonly options: QueueStatsCacheOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  /** Whether the last count succeeded (mageagent_redis_up). */
  get redisUp(): boolean {
    return this.up;
  }

  get lastGood(): { stats: QueueStats; at: number } | undefined {
    return this.cached;
  }

  get(): Promise<QueueStats> {
    if (this.cached !== undefined && this.up && this.now() - this.cached.at < this.options.ttlMs) return Promise.resolve(this.cached.stats);
    this.pending ??= this.count().finally(() => {
      this.pending = undefined;
    });
    return this.pending;
  }

  private async count(): Promise<QueueStats> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const counts = await Promise.race([
        this.counter.getJobCounts(...QUEUE_STATES),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`queue counts took longer than ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
        }),
      ]);
      const stats = queueStatsOf(counts);
      this.cached = { stats, at: this.now() };
      this.up = true;
      return stats;
    } catch (error) {
      this.up = false;
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }
}
