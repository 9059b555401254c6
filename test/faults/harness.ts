/**
 * The fault suite's harness: a stack on a Redis of its own (so Redis can be stopped), clients that
 * behave as real ones do (an SSE reader that reconnects with Last-Event-ID like EventSource, a
 * Socket.io client that re-subscribes after a reconnect), a submitter that records every answer
 * and how long it took, and the checks every scenario reports: tasks lost, events lost or
 * duplicated per client, requests that hung, 5xx answers to client mistakes.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { io, type Socket } from 'socket.io-client';
import type { TaskEvent, TaskRecord } from '@mageagent/core';
import { Stack, type StackOptions } from '../../apps/launcher/src/stack';
import { RedisServer } from '../support/redis-server';
import { collectOutput } from '../support/stack';
import { replacementOf } from '../support/supervision';

export const FAULT_MODELS_CONFIG = path.join(__dirname, 'models.faults.yaml');
/** A request that takes longer than this to answer counts as hung (the api promises 503 within 1 s). */
export const HANG_BOUND_MS = 1000;
const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface FaultStack {
  redis: RedisServer;
  stack: Stack;
  api: string;
  sim: string;
  output: string[];
  stop(): Promise<void>;
}

/** Simulator, api and workers on a private redis-server with AOF; the models of models.faults.yaml. */
export async function startFaultStack(options: Partial<StackOptions> = {}, redisOptions: Parameters<typeof RedisServer.start>[0] = {}): Promise<FaultStack> {
  const redis = await RedisServer.start(redisOptions);
  const output: string[] = [];
  const stack = new Stack({
    redisUrl: redis.url,
    prefix: options.prefix ?? 'faults',
    apiPort: 0,
    simPort: 0,
    workers: 2,
    workerConcurrency: 4,
    simulatedModelsConfig: FAULT_MODELS_CONFIG,
    sink: collectOutput(output),
    ...options,
    env: {
      LOG_LEVEL: 'warn',
      SIM_SPEEDUP: '1',
      MODEL_RETRY_BASE_MS: '50',
      HOST_HEALTH_INTERVAL_MS: '500',
      HOST_HEALTH_TIMEOUT_MS: '1000',
      ...options.env,
    },
  });
  try {
    await stack.start();
  } catch (error) {
    await redis.close();
    throw error;
  }
  return {
    redis,
    stack,
    api: stack.apiUrl,
    sim: stack.simUrl ?? '',
    output,
    async stop() {
      await stack.stop();
      await redis.close();
    },
  };
}

/** One HTTP exchange as a client saw it. */
export interface Exchange {
  method: string;
  route: string;
  status: number;
  ms: number;
  body: unknown;
  retryAfter: string | null;
  /** The request was the client's mistake (bad input), so any 5xx answer to it is a defect. */
  clientMistake: boolean;
  /** Why there was no answer (status 0): ECONNREFUSED (nothing listening), ECONNRESET (dropped), … */
  errorCode?: string;
}

/** A connection that died under a request, before any answer. */
const DROPPED_CONNECTION_CODES = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/** The system error code behind a failed fetch (undici nests it in `cause`). */
function errorCodeOf(error: unknown): string {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && typeof current === 'object' && current !== null; depth += 1) {
    const { code, cause, name } = current as { code?: unknown; cause?: unknown; name?: unknown };
    if (typeof code === 'string') return code;
    if (name === 'TimeoutError') return 'TIMEOUT';
    current = cause;
  }
  return 'UNKNOWN';
}

export class ExchangeLog {
  readonly exchanges: Exchange[] = [];

  /** Requests whose first attempt died with its connection and that were sent again (see `request`). */
  readonly retriedAfterDroppedConnection: Exchange[] = [];

  /**
   * One request, timed. Like browsers, a request that is safe to repeat (a GET, or a POST with an
   * Idempotency-Key) is sent once more when its connection dies under it before any answer: a
   * keep-alive connection can be closed by a stopping server at the very moment it is reused, a
   * race of HTTP/1.1 itself. Such first attempts are kept in `retriedAfterDroppedConnection`.
   */
  async request(url: string, init: RequestInit & { route: string; clientMistake?: boolean }): Promise<Exchange> {
    const started = performance.now();
    const repeatable = (init.method ?? 'GET') === 'GET' || new Headers(init.headers).has('idempotency-key');
    let exchange = await this.attempt(url, init, started);
    if (repeatable && exchange.status === 0 && DROPPED_CONNECTION_CODES.has(exchange.errorCode ?? '')) {
      this.retriedAfterDroppedConnection.push(exchange);
      exchange = await this.attempt(url, init, started);
    }
    this.exchanges.push(exchange);
    return exchange;
  }

  private async attempt(url: string, init: RequestInit & { route: string; clientMistake?: boolean }, started: number): Promise<Exchange> {
    let status = 0;
    let body: unknown;
    let retryAfter: string | null = null;
    let errorCode: string | undefined;
    try {
      const response = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
      status = response.status;
      retryAfter = response.headers.get('retry-after');
      const text = await response.text();
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    } catch (error) {
      body = String(error);
      errorCode = errorCodeOf(error);
    }
    return {
      method: init.method ?? 'GET',
      route: init.route,
      status,
      ms: performance.now() - started,
      body,
      retryAfter,
      clientMistake: init.clientMistake ?? false,
      ...(errorCode !== undefined && { errorCode }),
    };
  }

  /** A POST; task submissions carry a fresh Idempotency-Key, as a careful client's do, so they may be repeated. */
  post(api: string, route: string, body: unknown, clientMistake = false): Promise<Exchange> {
    return this.request(`${api}${route}`, {
      method: 'POST',
      route,
      headers: { 'content-type': 'application/json', ...(route === '/tasks' && { 'idempotency-key': randomUUID() }) },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      clientMistake,
    });
  }

  /** Requests that took longer than the bound, streams excluded. */
  get hung(): Exchange[] {
    return this.exchanges.filter((exchange) => exchange.ms > HANG_BOUND_MS);
  }

  /** 5xx answers other than an honest 503 with Retry-After. */
  get serverErrors(): Exchange[] {
    return this.exchanges.filter((exchange) => exchange.status >= 500 && !(exchange.status === 503 && exchange.retryAfter !== null));
  }

  /** 5xx (or no answer) to requests that were the client's mistake. */
  get serverErrorsToClientMistakes(): Exchange[] {
    return this.exchanges.filter((exchange) => exchange.clientMistake && (exchange.status >= 500 || exchange.status === 0));
  }

  get unavailable(): Exchange[] {
    return this.exchanges.filter((exchange) => exchange.status === 503);
  }

  /**
   * Requests that reached a server and got no answer (dropped or timed out). A refused connection
   * (nothing listening: the api is restarting) is not among them; clients retry it.
   */
  get unanswered(): Exchange[] {
    return this.exchanges.filter((exchange) => exchange.status === 0 && exchange.errorCode !== 'ECONNREFUSED');
  }

  /** Connections refused: nothing listened (the api between processes). */
  get refused(): Exchange[] {
    return this.exchanges.filter((exchange) => exchange.errorCode === 'ECONNREFUSED');
  }
}

/** What a client following one task saw. */
export interface FollowRecord {
  taskId: string;
  /** Every seq delivered, in delivery order (duplicates included). */
  seqs: number[];
  duplicates: number;
  gaps: number;
  reconnects: number;
  /** `reconnect` events (SSE) or `task-unsubscribed`/`server-shutdown` (Socket.io) the server sent. */
  hints: number;
  terminal: boolean;
  /** The highest seq delivered: where a reconnect resumes. */
  lastSeq: number;
}

function newRecord(taskId: string): FollowRecord {
  return { taskId, seqs: [], duplicates: 0, gaps: 0, reconnects: 0, hints: 0, terminal: false, lastSeq: 0 };
}

function accept(record: FollowRecord, event: TaskEvent): void {
  if (event.seq <= record.lastSeq) record.duplicates += 1;
  else if (event.seq > record.lastSeq + 1) record.gaps += 1;
  record.seqs.push(event.seq);
  record.lastSeq = Math.max(record.lastSeq, event.seq);
  if (event.type === 'status' && TERMINAL.has(event.status)) record.terminal = true;
}

const lastSeqOf = (record: FollowRecord) => record.lastSeq;

/**
 * Follows a task over SSE the way EventSource does: when the stream ends before the terminal
 * event, or cannot be opened (503 during an outage, the api restarting), it reconnects with
 * Last-Event-ID after a short wait.
 */
export function followSse(api: string, taskId: string, timeoutMs = 120_000): { record: FollowRecord; done: Promise<FollowRecord> } {
  const record = newRecord(taskId);
  const deadline = Date.now() + timeoutMs;
  const done = (async () => {
    let first = true;
    while (!record.terminal && Date.now() < deadline) {
      if (!first) {
        record.reconnects += 1;
        await sleep(100);
      }
      first = false;
      const lastSeq = lastSeqOf(record);
      try {
        const response = await fetch(`${api}/tasks/${taskId}/stream`, {
          headers: lastSeq > 0 ? { 'last-event-id': String(lastSeq) } : {},
          signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())),
        });
        if (response.status !== 200 || !response.body) {
          await response.body?.cancel();
          continue;
        }
        const decoder = new TextDecoder();
        let buffer = '';
        for await (const chunk of response.body) {
          buffer += decoder.decode(chunk as Uint8Array, { stream: true });
          let boundary: number;
          while ((boundary = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, boundary);
            buffer = buffer.slice(boundary + 2);
            let type: string | undefined;
            let data: string | undefined;
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) type = line.slice(7);
              else if (line.startsWith('data: ')) data = line.slice(6);
            }
            if (data === undefined) continue;
            if (type === 'reconnect') record.hints += 1;
            else accept(record, JSON.parse(data) as TaskEvent);
          }
        }
      } catch {
        // The connection dropped or the api is restarting: reconnect, as EventSource would.
      }
    }
    return record;
  })();
  return { record, done };
}

/**
 * One Socket.io client following several tasks. After a reconnect (or a `task-unsubscribed`) it
 * subscribes again from the last seq it has; a subscribe answered with an error (503 during an
 * outage) is retried.
 */
export class SocketFollower {
  readonly records = new Map<string, FollowRecord>();
  private readonly socket: Socket;
  private readonly waiting = new Map<string, () => void>();
  private readonly subscribing = new Set<string>();

  constructor(api: string) {
    this.socket = io(api, { transports: ['websocket'], reconnectionDelay: 100, reconnectionDelayMax: 500 });
    this.socket.on('task-update', (event: TaskEvent) => {
      const record = this.records.get(event.taskId);
      if (!record) return;
      accept(record, event);
      if (record.terminal) this.waiting.get(event.taskId)?.();
    });
    this.socket.on('task-unsubscribed', ({ taskId }: { taskId: string }) => {
      const record = this.records.get(taskId);
      if (!record) return;
      record.hints += 1;
      void this.subscribe(record);
    });
    this.socket.on('server-shutdown', () => {
      for (const record of this.records.values()) record.hints += 1;
    });
    this.socket.io.on('reconnect', () => {
      for (const record of this.records.values()) {
        if (record.terminal) continue;
        record.reconnects += 1;
        void this.subscribe(record);
      }
    });
  }

  /** Starts following a task; resolves with what was seen once its terminal event arrived. */
  follow(taskId: string, timeoutMs = 120_000): Promise<FollowRecord> {
    const record = newRecord(taskId);
    this.records.set(taskId, record);
    const done = new Promise<FollowRecord>((resolve) => {
      const timer = setTimeout(() => resolve(record), timeoutMs);
      this.waiting.set(taskId, () => {
        clearTimeout(timer);
        resolve(record);
      });
    });
    void this.subscribe(record);
    return done;
  }

  /**
   * One subscribe at a time per task: a second `subscribe-task` on the same connection while the
   * first one's events are on their way would ask the server to replay them (it answers what it
   * is asked), so a trigger that comes while one is under way is left to it.
   */
  private async subscribe(record: FollowRecord): Promise<void> {
    if (this.subscribing.has(record.taskId)) return;
    this.subscribing.add(record.taskId);
    try {
      await this.subscribeUntilAcked(record);
    } finally {
      this.subscribing.delete(record.taskId);
    }
  }

  private async subscribeUntilAcked(record: FollowRecord): Promise<void> {
    for (let tries = 0; tries < 600 && !record.terminal; tries += 1) {
      if (this.socket.connected) {
        const answer = (await this.socket
          .timeout(2000)
          .emitWithAck('subscribe-task', { taskId: record.taskId, after: lastSeqOf(record) })
          .catch(() => ({ error: 'no ack' }))) as { task?: TaskRecord; error?: unknown };
        if (answer.task) return;
      }
      await sleep(200);
    }
  }

  close(): void {
    this.socket.disconnect();
  }
}

/** Polls the tasks until each is terminal (or the time is up); answers the final records. */
export async function settle(api: string, taskIds: string[], timeoutMs = 120_000): Promise<Map<string, TaskRecord>> {
  const finished = new Map<string, TaskRecord>();
  const deadline = Date.now() + timeoutMs;
  while (finished.size < taskIds.length && Date.now() < deadline) {
    const open = taskIds.filter((id) => !finished.has(id));
    for (let start = 0; start < open.length; start += 50) {
      await Promise.all(
        open.slice(start, start + 50).map(async (id) => {
          try {
            const response = await fetch(`${api}/tasks/${id}`);
            if (response.status !== 200) return;
            const task = (await response.json()) as TaskRecord;
            if (TERMINAL.has(task.status)) finished.set(id, task);
          } catch {
            // The api may be restarting; try again on the next round.
          }
        }),
      );
    }
    if (finished.size < taskIds.length) await sleep(250);
  }
  return finished;
}

/** The task's authoritative log. */
export async function eventLog(api: string, taskId: string): Promise<TaskEvent[]> {
  const response = await fetch(`${api}/tasks/${taskId}/events`);
  return ((await response.json()) as { events: TaskEvent[] }).events;
}

/** Events a follower missed or got twice, against the task's log (which must itself be 1..N without gaps). */
export async function compareWithLog(api: string, record: FollowRecord): Promise<{ lost: number; duplicated: number; logGaps: number }> {
  const log = await eventLog(api, record.taskId);
  const logSeqs = log.map((event) => event.seq);
  const logGaps = logSeqs.filter((seq, index) => seq !== index + 1).length;
  const seen = new Set(record.seqs);
  const lost = logSeqs.filter((seq) => !seen.has(seq)).length;
  return { lost, duplicated: record.duplicates, logGaps };
}

export interface Row {
  metric: string;
  value: string | number;
  target?: string;
}

/** Prints a scenario's measurements as a markdown table (to stdout, outside jest's console capture). */
export function printTable(title: string, rows: Row[]): void {
  const lines = [`\n### ${title}\n`, '| metric | measured | target |', '|---|---|---|'];
  for (const row of rows) lines.push(`| ${row.metric} | ${row.value} | ${row.target ?? ''} |`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

export const percentile = (values: number[], p: number): number => {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
};

export const ms = (value: number) => `${Math.round(value)} ms`;

export { sleep };

export interface LoadRunOptions {
  /** The task body every submission posts. */
  body?: Record<string, unknown>;
  /** How long traffic runs. */
  durationMs?: number;
  /** When the disruption starts, from the start of the traffic. */
  disruptAfterMs?: number;
  /** The fault; resolves when it is over (Redis back, worker restarted…). Sees the tasks accepted so far. */
  disrupt: (accepted: readonly string[]) => Promise<void>;
  /** Follow every n-th accepted task over SSE / Socket.io. */
  sseEvery?: number;
  socketEvery?: number;
  /** How long accepted tasks get to finish after the traffic. */
  settleMs?: number;
  /** Pause between submissions (default 100 ms: about 10 tasks a second, within the stack's capacity). */
  submitEveryMs?: number;
}

/** How long traffic goes on after a fault is over, to see the service recover. */
const AFTER_FAULT_MS = 2000;

/** What a run under load measured, for the table and the assertions. */
export interface LoadRun {
  log: ExchangeLog;
  accepted: string[];
  finished: Map<string, TaskRecord>;
  /** Accepted tasks that did not complete. */
  lost: string[];
  sse: FollowRecord[];
  sockets: FollowRecord[];
  /** Per follower: events missing from what it saw, and events it got twice, against the log. */
  comparisons: Array<{ lost: number; duplicated: number; logGaps: number }>;
  disruptedAt: number;
  recoveredAt: number;
  /** From the end of the fault to the first task accepted after it. */
  firstAcceptedAfterMs: number | undefined;
  /** From the end of the fault to the first task accepted after it having completed. */
  firstCompletedAfterMs: number | undefined;
}

/**
 * Submits tasks at a steady pace, follows some over SSE and Socket.io, reads and polls known
 * tasks throughout (timing every answer), runs the fault part-way, then waits for every accepted
 * task and compares every follower with the task's log.
 */
export async function runUnderLoad(fault: FaultStack, options: LoadRunOptions): Promise<LoadRun> {
  const { api } = fault;
  const log = new ExchangeLog();
  const accepted: string[] = [];
  const acceptedAt = new Map<string, number>();
  const sse: Array<Promise<FollowRecord>> = [];
  const sockets = [new SocketFollower(api), new SocketFollower(api)];
  const socketFollows: Array<Promise<FollowRecord>> = [];
  const body = options.body ?? { prompt: 'fault suite task [[sim: tokens=16; tps=40; ttft=60]]', pattern: 'primary' };
  let disruptedAt = Number.POSITIVE_INFINITY;
  let recoveredAt = Number.POSITIVE_INFINITY;
  const plannedEnd = Date.now() + (options.durationMs ?? 6000);
  // Traffic goes on for a while after the fault is over, however long the fault took.
  const trafficGoesOn = () => Date.now() < plannedEnd || Date.now() < recoveredAt + AFTER_FAULT_MS;

  const traffic = (async () => {
    for (let index = 0; trafficGoesOn(); index += 1) {
      const exchange = await log.post(api, '/tasks', body);
      if (exchange.status === 202) {
        const id = (exchange.body as { id: string }).id;
        accepted.push(id);
        acceptedAt.set(id, Date.now());
        if (index % (options.sseEvery ?? 2) === 0) sse.push(followSse(api, id).done);
        if (index % (options.socketEvery ?? 3) === 0) socketFollows.push(sockets[index % 2]!.follow(id));
      }
      await sleep(options.submitEveryMs ?? 100);
    }
  })();
  const probes = (async () => {
    while (trafficGoesOn()) {
      const id = accepted[Math.floor(Math.random() * accepted.length)];
      if (id !== undefined) {
        await Promise.all([
          log.request(`${api}/tasks/${id}`, { route: 'GET /tasks/:id' }),
          log.request(`${api}/tasks/${id}/events?after=1`, { route: 'GET /tasks/:id/events' }),
        ]);
      }
      await sleep(60);
    }
  })();
  const fault_ = (async () => {
    await sleep(options.disruptAfterMs ?? 2000);
    disruptedAt = Date.now();
    await options.disrupt(accepted);
    recoveredAt = Date.now();
  })();
  await Promise.all([traffic, probes, fault_]);

  const finished = await settle(api, accepted, options.settleMs ?? 90_000);
  const sseRecords = await Promise.all(sse);
  const socketRecords = await Promise.all(socketFollows);
  for (const socket of sockets) socket.close();
  const comparisons = await Promise.all([...sseRecords, ...socketRecords].map((record) => compareWithLog(api, record)));
  const after = accepted.filter((id) => (acceptedAt.get(id) ?? 0) > recoveredAt);
  const completedAfter = after
    .map((id) => finished.get(id))
    .filter((task): task is TaskRecord => task?.status === 'completed' && task.completedAt !== null)
    .map((task) => Date.parse(task.completedAt as string));
  return {
    log,
    accepted,
    finished,
    lost: accepted.filter((id) => finished.get(id)?.status !== 'completed'),
    sse: sseRecords,
    sockets: socketRecords,
    comparisons,
    disruptedAt,
    recoveredAt,
    firstAcceptedAfterMs: after.length === 0 ? undefined : (acceptedAt.get(after[0]!) ?? 0) - recoveredAt,
    firstCompletedAfterMs: completedAfter.length === 0 ? undefined : Math.min(...completedAfter) - recoveredAt,
  };
}

const sum = (values: number[]) => values.reduce((total, value) => total + value, 0);

/** The rows every scenario reports. */
export function standardRows(run: LoadRun): Row[] {
  const sseComparisons = run.comparisons.slice(0, run.sse.length);
  const socketComparisons = run.comparisons.slice(run.sse.length);
  const unavailable = run.log.unavailable;
  return [
    { metric: 'tasks accepted (202)', value: run.accepted.length },
    { metric: 'tasks lost (accepted, not completed)', value: run.lost.length, target: '0' },
    {
      metric: 'SSE clients: events lost / duplicated',
      value: `${sum(sseComparisons.map((c) => c.lost))} / ${sum(sseComparisons.map((c) => c.duplicated))} (${run.sse.length} clients, ${sum(run.sse.map((r) => r.reconnects))} reconnects)`,
      target: '0 / 0',
    },
    {
      metric: 'Socket.io clients: events lost / duplicated',
      value: `${sum(socketComparisons.map((c) => c.lost))} / ${sum(socketComparisons.map((c) => c.duplicated))} (${run.sockets.length} subscriptions, ${sum(run.sockets.map((r) => r.reconnects))} re-subscribes)`,
      target: '0 / 0',
    },
    {
      metric: '503 + Retry-After answers',
      value:
        unavailable.length === 0
          ? '0'
          : `${unavailable.length}, p50 ${ms(
              percentile(
                unavailable.map((e) => e.ms),
                50,
              ),
            )}, max ${ms(Math.max(...unavailable.map((e) => e.ms)))}`,
      target: `each ≤ ${HANG_BOUND_MS} ms`,
    },
    { metric: 'requests that hung past the bound', value: run.log.hung.length, target: '0' },
    {
      metric: 'requests unanswered / refused (nothing listening) / sent again after their connection died',
      value: `${run.log.unanswered.length} / ${run.log.refused.length} / ${run.log.retriedAfterDroppedConnection.length}`,
    },
    { metric: '5xx other than 503 + Retry-After', value: run.log.serverErrors.length, target: '0' },
    { metric: 'fault → over', value: ms(run.recoveredAt - run.disruptedAt) },
    { metric: 'time to recovery: over → first task accepted', value: run.firstAcceptedAfterMs === undefined ? 'none' : ms(run.firstAcceptedAfterMs) },
    { metric: 'time to recovery: over → first new task completed', value: run.firstCompletedAfterMs === undefined ? 'none' : ms(run.firstCompletedAfterMs) },
  ];
}

/** The assertions every scenario makes. */
export function expectNothingLost(run: LoadRun): void {
  expect(run.lost).toEqual([]);
  expect(run.log.hung).toEqual([]);
  expect(run.log.serverErrors).toEqual([]);
  expect(run.log.unanswered.map((exchange) => `${exchange.route}: ${exchange.errorCode}`)).toEqual([]);
  expect(run.firstAcceptedAfterMs).toBeDefined();
  expect(run.firstCompletedAfterMs).toBeDefined();
  for (const comparison of run.comparisons) expect(comparison).toEqual({ lost: 0, duplicated: 0, logGaps: 0 });
  expect([...run.sse, ...run.sockets].filter((record) => !record.terminal || record.gaps > 0)).toEqual([]);
}

/**
 * The worker process streaming one of `taskIds` right now (the `processing` event of a task
 * with deltas names it), so a fault can hit a worker mid-stream.
 */
export async function workerStreaming(fault: FaultStack, taskIds: readonly string[], timeoutMs = 10_000): Promise<{ taskId: string; pid: number }> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    // The oldest unfinished tasks are the ones running; later ones may still wait in the queue.
    let looked = 0;
    for (const taskId of taskIds) {
      if (looked >= 30) break;
      const events = await eventLog(fault.api, taskId).catch(() => []);
      const last = events.at(-1);
      if (last === undefined || (last.type === 'status' && TERMINAL.has(last.status))) continue;
      looked += 1;
      const processing = events.filter((event) => event.type === 'status' && event.status === 'processing').at(-1);
      if (processing?.type !== 'status' || processing.worker === undefined || !events.some((event) => event.type === 'delta' && event.seq > processing.seq))
        continue;
      const pid = Number(processing.worker.split(':').pop());
      if (fault.stack.workers.some((worker) => worker.child.pid === pid)) return { taskId, pid };
    }
    await sleep(25);
  }
  throw new Error('no worker was streaming a task');
}

/** Signals a worker (SIGKILL: a crash; SIGTERM: a deploy) and waits until the launcher's replacement is ready. */
export async function replaceWorker(fault: FaultStack, name: string, signal: NodeJS.Signals): Promise<void> {
  const current = fault.stack.workers.find((worker) => worker.name === name);
  if (!current) throw new Error(`no worker named ${name}`);
  current.child.kill(signal);
  await replacementOf(current, () => fault.stack.workers.find((worker) => worker.name === name));
}
