/**
 * The host lease against a real Redis: several schedulers, each with its own connections,
 * stand for several worker processes.
 */
import { performance } from 'node:perf_hooks';
import { CancelledError, ModelUnavailableError, type TaskPriority } from '@mageagent/core';
import type { HostHealthView } from './host-health';
import type { HostLease, HostScheduler } from './host-scheduler';
import { SchedulingTestBed, sleep, until } from './test-support';

const bed = new SchedulingTestBed();
const { admin, leases } = bed;

afterEach(() => bed.closeSchedulers());
afterAll(() => bed.close());

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

test('never more holders than the limit under heavy contention from five processes', async () => {
  const host = bed.newHost();
  const pods = await Promise.all(Array.from({ length: 5 }, () => bed.scheduler({ [host]: 2 })));
  let inFlight = 0;
  let maxInFlight = 0;
  let completed = 0;
  await Promise.all(
    pods.flatMap((scheduler, podIndex) =>
      Array.from({ length: 16 }, async (_, index) => {
        const lease = await scheduler.acquire(host, { priority: (['high', 'normal', 'low'] as const)[(podIndex + index) % 3] });
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await sleep(Math.random() * 6);
        inFlight -= 1;
        completed += 1;
        await lease.release();
      }),
    ),
  );
  expect(completed).toBe(80);
  expect(maxInFlight).toBe(2);
  const snapshot = await leases.inspect(host, 2);
  expect(snapshot).toMatchObject({ leases: [], waiters: 0 });
  expect(await admin.exists(leases.keys.holders(host), leases.keys.waiters(host), leases.keys.owners(host))).toBe(0);
}, 20_000);

/** Queues labelled calls one after the other (each in Redis before the next), recording grant order. */
async function queueInOrder(host: string, calls: Array<[string, TaskPriority, HostScheduler]>, order: string[]): Promise<Array<Promise<void>>> {
  const done: Array<Promise<void>> = [];
  for (const [label, priority, scheduler] of calls) {
    const before = await bed.waitersOn(host);
    done.push(
      scheduler.acquire(host, { priority, owner: label }).then(async (lease) => {
        order.push(label);
        await lease.release();
      }),
    );
    await until(async () => (await bed.waitersOn(host)) === before + 1, `${label} to queue`);
  }
  return done;
}

test('waiters are served by priority, then in arrival order, across processes', async () => {
  const host = bed.newHost();
  const [a, b] = [await bed.scheduler({ [host]: 1 }), await bed.scheduler({ [host]: 1 })];
  const holder = await a.acquire(host);
  const order: string[] = [];
  const done = await queueInOrder(
    host,
    [
      ['low-1', 'low', a],
      ['normal-1', 'normal', b],
      ['high-1', 'high', a],
      ['normal-2', 'normal', a],
      ['high-2', 'high', b],
      ['low-2', 'low', b],
    ],
    order,
  );
  await holder.release();
  await Promise.all(done);
  expect(order).toEqual(['high-1', 'high-2', 'normal-1', 'normal-2', 'low-1', 'low-2']);
});

test('aging: a low call that waited two windows goes before new high ones; a fresh normal one does not', async () => {
  const host = bed.newHost();
  const scheduler = await bed.scheduler({ [host]: 1 }, { priorityAgingMs: 150 });
  const holder = await scheduler.acquire(host);
  const order: string[] = [];
  const done = await queueInOrder(host, [['old-low', 'low', scheduler]], order);
  await sleep(350);
  done.push(
    ...(await queueInOrder(
      host,
      [
        ['new-normal', 'normal', scheduler],
        ['new-high', 'high', scheduler],
      ],
      order,
    )),
  );
  await holder.release();
  await Promise.all(done);
  // old-low: t0 + 300; new-normal: ~t0 + 355 + 150; new-high: ~t0 + 360.
  expect(order).toEqual(['old-low', 'new-high', 'new-normal']);
});

test('an abort while waiting rejects at once with the signal reason and leaves the queue', async () => {
  const host = bed.newHost();
  const [a, b] = [await bed.scheduler({ [host]: 1 }), await bed.scheduler({ [host]: 1 })];
  const holder = await a.acquire(host);
  const controller = new AbortController();
  const waiting = b.acquire(host, { signal: controller.signal });
  await until(async () => (await bed.waitersOn(host)) === 1, 'the waiter to queue');
  const reason = new CancelledError('task was cancelled');
  const abortedAt = performance.now();
  controller.abort(reason);
  await expect(waiting).rejects.toBe(reason);
  // The alternative is waiting as long as the holder holds (forever here); the bench measures speed.
  expect(performance.now() - abortedAt).toBeLessThan(250);
  expect(b.waitingCount).toBe(0);
  await until(async () => (await bed.waitersOn(host)) === 0, 'the waiter to leave Redis');

  // An already-aborted signal never queues; the host still serves the next caller.
  await expect(b.acquire(host, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  const next = b.acquire(host);
  await holder.release();
  await (await next).release();
});

test('a holder that stops renewing frees the host when its TTL lapses, not later', async () => {
  const host = bed.newHost();
  // A process that took a lease and died: nobody renews it.
  const dead = await leases.acquire(host, 'dead-holder', {
    limit: 1,
    ttlMs: 400,
    agingMs: 60_000,
    owner: { worker: 'dead', priority: 'normal' },
  });
  const grantedDeadAt = performance.now();
  expect(dead.granted).toBe(true);
  const scheduler = await bed.scheduler({ [host]: 1 }, { leaseTtlMs: 400 });
  const lease = await scheduler.acquire(host);
  const freedAfter = performance.now() - grantedDeadAt;
  expect(freedAfter).toBeGreaterThanOrEqual(350);
  expect(freedAfter).toBeLessThan(400 + 80);
  await lease.release();
});

test('a live holder keeps its lease past the TTL by renewing', async () => {
  const host = bed.newHost();
  const [a, b] = [await bed.scheduler({ [host]: 1 }, { leaseTtlMs: 300 }), await bed.scheduler({ [host]: 1 }, { leaseTtlMs: 300 })];
  const holder = await a.acquire(host);
  let grantedAt = 0;
  const next = b.acquire(host).then((lease) => {
    grantedAt = performance.now();
    return lease;
  });
  await sleep(1000);
  expect(grantedAt).toBe(0);
  expect(holder.lost.aborted).toBe(false);
  const releasedAt = performance.now();
  await holder.release();
  await (await next).release();
  expect(grantedAt).toBeGreaterThanOrEqual(releasedAt);
});

test('a lease that Redis no longer has fires `lost` with a retryable error', async () => {
  const host = bed.newHost();
  const scheduler = await bed.scheduler({ [host]: 1 }, { leaseTtlMs: 300 });
  const lease = await scheduler.acquire(host);
  await admin.del(leases.keys.holders(host));
  await until(async () => lease.lost.aborted, 'the loss to be noticed', 1000);
  expect(lease.lost.reason).toBeInstanceOf(ModelUnavailableError);
  expect((lease.lost.reason as ModelUnavailableError).retryable).toBe(true);
  await lease.release();
});

test('a holder cut off from Redis gives the lease up once its TTL has passed unrenewed', async () => {
  const host = bed.newHost();
  const cutOff = bed.connection();
  const scheduler = await bed.scheduler({ [host]: 1 }, { leaseTtlMs: 300, redis: cutOff });
  const lease = await scheduler.acquire(host);
  const cutAt = performance.now();
  cutOff.disconnect();
  await until(async () => lease.lost.aborted, 'the loss to be noticed', 1000);
  // Given up by its own expiry timer, at the TTL: not later, when a reconnect or another process would notice.
  expect((lease.lost.reason as Error).message).toContain('not renewed within its 300 ms TTL');
  // The timer's lateness on a loaded 2-core machine reached 72 ms in CI; well under a second TTL.
  expect(performance.now() - cutAt).toBeLessThan(300 + 200);
  await lease.release();
});

test('a release hands the host to a waiter in another process within milliseconds', async () => {
  const host = bed.newHost();
  const [a, b] = [await bed.scheduler({ [host]: 1 }), await bed.scheduler({ [host]: 1 })];
  const gaps: number[] = [];
  let held: HostLease = await a.acquire(host);
  let other = b;
  for (let round = 0; round < 60; round += 1) {
    const waiting = other.acquire(host);
    await until(async () => (await bed.waitersOn(host)) === 1, 'the waiter to queue');
    const releasedAt = performance.now();
    await held.release();
    held = await waiting;
    gaps.push(performance.now() - releasedAt);
    other = other === a ? b : a;
  }
  await held.release();
  // Pushed, not polled: a poll would wait for the next heartbeat (a third of the TTL). The p99 < 20 ms
  // target is measured by `npm run bench`, not asserted here, where parallel test suites share the CPU.
  expect(percentile(gaps, 50)).toBeLessThan(50);
}, 20_000);

test('a waiter that died at the head delays the next one no longer than its own TTL', async () => {
  const host = bed.newHost();
  const scheduler = await bed.scheduler({ [host]: 1 }, { leaseTtlMs: 500 });
  const holder = await scheduler.acquire(host);
  // Queued at high priority, then its process died: no heartbeats.
  const queuedAt = performance.now();
  await leases.acquire(host, 'dead-waiter', { limit: 1, ttlMs: 500, agingMs: 60_000, owner: { worker: 'dead', priority: 'high' } });
  const next = scheduler.acquire(host, { priority: 'low' });
  await sleep(100);
  await holder.release();
  // The dead waiter is granted first (it is at the head) but its lease ends at its heartbeat deadline.
  const lease = await next;
  const elapsed = performance.now() - queuedAt;
  expect(elapsed).toBeGreaterThanOrEqual(450);
  expect(elapsed).toBeLessThan(500 + 80);
  await lease.release();
  expect((await leases.inspect(host, 1)).waiters).toBe(0);
});

test('calls to a host that is down fail fast, and so do calls already waiting for it', async () => {
  const host = bed.newHost();
  let down: ModelUnavailableError | undefined;
  const listeners = new Set<(host: string, reason: ModelUnavailableError) => void>();
  const health: HostHealthView = {
    unavailable: () => down,
    onDown: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
  const scheduler = await bed.scheduler({ [host]: 1 }, { health });
  const holder = await scheduler.acquire(host);
  const waiting = scheduler.acquire(host);
  await until(async () => (await bed.waitersOn(host)) === 1, 'the waiter to queue');
  down = new ModelUnavailableError(`host ${host} is down`);
  for (const listener of listeners) listener(host, down);
  await expect(waiting).rejects.toBe(down);
  await expect(scheduler.acquire(host)).rejects.toBe(down);
  await holder.release();
  await until(async () => (await bed.waitersOn(host)) === 0, 'the waiter to leave Redis');
});

test('grant order is kept in Redis on the Redis clock, in microseconds', async () => {
  const host = bed.newHost();
  const scheduler = await bed.scheduler({ [host]: 1 }, { priorityAgingMs: 1000 });
  const holder = await scheduler.acquire(host);
  const waiting = [scheduler.acquire(host, { priority: 'low' }), scheduler.acquire(host, { priority: 'high' })].map((pending) =>
    pending.then((lease) => lease.release()),
  );
  await until(async () => (await bed.waitersOn(host)) === 2, 'two waiters');
  const scores = (await admin.zrange(leases.keys.waiters(host), '0', '-1', 'WITHSCORES')).filter((_, index) => index % 2 === 1).map(Number);
  const [seconds] = await admin.time();
  // The high call's score is its arrival in µs; the low one's is 2 aging windows (2 s) later.
  expect(Math.abs(scores[0]! / 1e6 - Number(seconds))).toBeLessThan(2);
  expect(scores[1]! - scores[0]!).toBeGreaterThan(1_999_000);
  await holder.release();
  await Promise.all(waiting);
});
