/**
 * `npm run test:soak`: the fault suite's figures over a long run. At least 10 000 tasks through a
 * supervised stack on a private Redis, followed by 200 SSE and 100 Socket.io clients, while a
 * worker is killed, Redis is killed and restarted, and another worker is stopped (hand-back).
 * Prints tasks lost, events lost or duplicated, hung requests, 5xx, time to recovery, api and
 * worker RSS before and after, and Redis keys per task; exits non-zero if a guarantee failed.
 *
 * SOAK_TASKS, SOAK_SSE_CLIENTS, SOAK_SOCKET_CLIENTS and SOAK_SUBMITTERS change the sizes.
 */
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import type { SupervisionEvent } from '../../apps/launcher/src/supervisor';
import { quickSupervision } from '../support/supervision';
import {
  compareWithLog,
  ExchangeLog,
  followSse,
  ms,
  percentile,
  printTable,
  replaceWorker,
  settle,
  sleep,
  SocketFollower,
  startFaultStack,
  type FaultStack,
  type FollowRecord,
} from '../faults/harness';

const TASKS = Number(process.env.SOAK_TASKS ?? 10_000);
const SSE_CLIENTS = Number(process.env.SOAK_SSE_CLIENTS ?? 200);
const SOCKET_CLIENTS = Number(process.env.SOAK_SOCKET_CLIENTS ?? 100);
const SUBMITTERS = Number(process.env.SOAK_SUBMITTERS ?? 24);
const BODY = { prompt: 'soak [[sim: tokens=6; tps=300; ttft=5]]', pattern: 'primary' };
const say = (line: string) => process.stderr.write(`soak: ${line}\n`);

/** Resident set size of a process, from /proc (Linux). */
function rssMb(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

function memory(fault: FaultStack): { api: number; workers: number[] } {
  return { api: rssMb(fault.stack.api.child.pid), workers: fault.stack.workers.map((worker) => rssMb(worker.child.pid)) };
}

async function keysUnder(url: string, prefix: string): Promise<number> {
  const redis = new Redis(url);
  let count = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 5000);
    cursor = next;
    count += keys.length;
  } while (cursor !== '0');
  redis.disconnect();
  return count;
}

async function main(): Promise<void> {
  const supervision: SupervisionEvent[] = [];
  const fault = await startFaultStack(
    {
      prefix: 'soak',
      workers: 4,
      workerConcurrency: 8,
      supervise: quickSupervision(supervision),
      env: { JOB_LOCK_MS: '3000', HOST_LEASE_TTL_MS: '3000', SHUTDOWN_GRACE_MS: '500' },
    },
    { appendfsync: 'always' },
  );
  const { api } = fault;
  say(`stack up: api ${api}, Redis ${fault.redis.url}; ${TASKS} tasks, ${SSE_CLIENTS} SSE and ${SOCKET_CLIENTS} Socket.io clients`);
  const log = new ExchangeLog();
  const accepted: string[] = [];
  const unfollowed: string[] = [];
  const sseRecords: FollowRecord[] = [];
  const socketRecords: FollowRecord[] = [];
  let before: ReturnType<typeof memory> | undefined;
  const recoveries: Array<{ fault: string; firstAcceptedMs?: number; at: number }> = [];

  const submitters = Array.from({ length: SUBMITTERS }, async () => {
    while (accepted.length < TASKS) {
      const exchange = await log.post(api, '/tasks', BODY);
      if (exchange.status === 202) {
        const id = (exchange.body as { id: string }).id;
        accepted.push(id);
        unfollowed.push(id);
        for (const recovery of recoveries) recovery.firstAcceptedMs ??= Date.now() - recovery.at;
        if (accepted.length === 500) before = memory(fault);
      } else {
        await sleep(exchange.status === 503 ? 200 : 20);
      }
    }
  });
  const nextToFollow = async (): Promise<string | undefined> => {
    while (accepted.length < TASKS || unfollowed.length > 0) {
      const id = unfollowed.shift();
      if (id !== undefined) return id;
      await sleep(10);
    }
    return undefined;
  };
  const sseClients = Array.from({ length: SSE_CLIENTS }, async () => {
    for (let id = await nextToFollow(); id !== undefined; id = await nextToFollow()) sseRecords.push(await followSse(api, id).done);
  });
  const sockets = Array.from({ length: SOCKET_CLIENTS }, () => new SocketFollower(api));
  const socketClients = sockets.map(async (socket) => {
    for (let id = await nextToFollow(); id !== undefined; id = await nextToFollow()) socketRecords.push(await socket.follow(id));
  });
  const probes = (async () => {
    while (accepted.length < TASKS) {
      const id = accepted[Math.floor(Math.random() * accepted.length)];
      if (id !== undefined) await log.request(`${api}/tasks/${id}`, { route: 'GET /tasks/:id' });
      await sleep(20);
    }
  })();

  const at = (fraction: number) =>
    new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (accepted.length >= TASKS * fraction) {
          clearInterval(check);
          resolve();
        }
      }, 20);
    });
  const faults = (async () => {
    await at(0.25);
    // Tasks here are short; under this load every worker is running several at any moment.
    say('fault: SIGKILL a worker under load');
    await replaceWorker(fault, 'worker-2', 'SIGKILL');
    recoveries.push({ fault: 'worker SIGKILL', at: Date.now() });

    await at(0.5);
    say('fault: Redis killed for 1 s');
    await fault.redis.stop('SIGKILL');
    await sleep(1000);
    await fault.redis.start();
    recoveries.push({ fault: 'Redis killed 1 s', at: Date.now() });

    await at(0.75);
    say('fault: SIGTERM a worker (hand-back)');
    await replaceWorker(fault, 'worker-1', 'SIGTERM');
    recoveries.push({ fault: 'worker SIGTERM', at: Date.now() });
  })();

  const started = Date.now();
  await Promise.all([...submitters, probes, faults]);
  say(`${accepted.length} tasks accepted in ${ms(Date.now() - started)}; waiting for them to finish`);
  const finished = await settle(api, accepted, 300_000);
  await Promise.all([...sseClients, ...socketClients]);
  for (const socket of sockets) socket.close();
  say('comparing every follower with its task log');
  const comparisons: Array<{ lost: number; duplicated: number; logGaps: number }> = [];
  const records = [...sseRecords, ...socketRecords];
  for (let start = 0; start < records.length; start += 100) {
    comparisons.push(...(await Promise.all(records.slice(start, start + 100).map((record) => compareWithLog(api, record)))));
  }
  await sleep(2000);
  const after = memory(fault);
  const keys = await keysUnder(fault.redis.url, 'soak');

  const lost = accepted.filter((id) => finished.get(id)?.status !== 'completed');
  const sseComparisons = comparisons.slice(0, sseRecords.length);
  const socketComparisons = comparisons.slice(sseRecords.length);
  const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);
  const posts = log.exchanges.filter((exchange) => exchange.route === '/tasks' && exchange.status === 202).map((exchange) => exchange.ms);
  const mb = (value: number) => `${value.toFixed(0)} MB`;
  const rows = [
    { metric: 'tasks accepted (202)', value: accepted.length, target: `≥ ${TASKS}` },
    { metric: 'tasks lost (accepted, not completed)', value: lost.length, target: '0' },
    {
      metric: 'SSE: events lost / duplicated',
      value: `${sum(sseComparisons.map((c) => c.lost))} / ${sum(sseComparisons.map((c) => c.duplicated))} over ${sseRecords.length} follows by ${SSE_CLIENTS} clients`,
      target: '0 / 0',
    },
    {
      metric: 'Socket.io: events lost / duplicated',
      value: `${sum(socketComparisons.map((c) => c.lost))} / ${sum(socketComparisons.map((c) => c.duplicated))} over ${socketRecords.length} follows by ${SOCKET_CLIENTS} clients`,
      target: '0 / 0',
    },
    { metric: 'follows that never saw their terminal event', value: records.filter((record) => !record.terminal).length, target: '0' },
    { metric: 'requests that hung past 1 s', value: log.hung.length, target: '0' },
    { metric: '5xx other than 503 + Retry-After', value: log.serverErrors.length, target: '0' },
    { metric: '503 + Retry-After answers (during the Redis outage)', value: log.unavailable.length },
    { metric: 'POST /tasks latency p50 / p99 (202s)', value: `${ms(percentile(posts, 50))} / ${ms(percentile(posts, 99))}` },
    ...recoveries.map((recovery) => ({
      metric: `time to recovery after ${recovery.fault}: first task accepted`,
      value: recovery.firstAcceptedMs === undefined ? 'none' : ms(recovery.firstAcceptedMs),
    })),
    { metric: 'worker restarts by the launcher', value: supervision.filter((event) => event.type === 'restarted').length, target: '2' },
    { metric: 'api RSS before (after 500 tasks) → after', value: `${mb(before?.api ?? Number.NaN)} → ${mb(after.api)}` },
    { metric: 'worker RSS before → after (each)', value: `${(before?.workers ?? []).map(mb).join(', ')} → ${after.workers.map(mb).join(', ')}` },
    { metric: 'Redis keys per task (records and logs kept for TASK_RETENTION_SECONDS)', value: (keys / accepted.length).toFixed(2), target: '≈ 2' },
    { metric: 'wall time', value: ms(Date.now() - started) },
  ];
  printTable(`Soak: ${TASKS} tasks, ${SSE_CLIENTS} SSE + ${SOCKET_CLIENTS} Socket.io clients, a worker killed, Redis killed, a worker stopped`, rows);
  await fault.stop();
  const failed =
    lost.length > 0 ||
    comparisons.some((comparison) => comparison.lost > 0 || comparison.duplicated > 0 || comparison.logGaps > 0) ||
    records.some((record) => !record.terminal) ||
    log.hung.length > 0 ||
    log.serverErrors.length > 0;
  if (failed) {
    say(`FAILED: ${lost.length} tasks lost (first: ${lost.slice(0, 3).join(', ')}), ${log.hung.length} hung, ${log.serverErrors.length} 5xx`);
    process.exitCode = 1;
  } else {
    say('every guarantee held');
  }
}

main().catch((error: unknown) => {
  say(`crashed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exit(1);
});
