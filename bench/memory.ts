/**
 * The memory table: does the api keep anything per task or per client? Tiny tasks go through the
 * api every way clients follow them. The api's heap is measured after a full GC (through its
 * inspector, opened by SIGUSR1: no debug route in the product) after N, 1.5N and 2N tasks; a
 * retained object per task or per connection shows as heap and object count growing with the
 * tasks. RSS and V8's own GCs are reported beside it from an undisturbed first half, since V8 lets
 * the old space fill with garbage to a few times the live heap before it collects: a sawtooth that
 * looks like growth when RSS is sampled at random, not a leak.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { io as connectSocket, type Socket } from 'socket.io-client';
import { Stack } from '../apps/launcher/src/stack';
import { InspectorSession, type MemoryUsage } from './inspector';
import type { Row } from './table';

/** Tasks after the warm-up: an undisturbed half, then two quarters with a look at the heap after each. */
const TASKS = Number(process.env.BENCH_MEMORY_TASKS ?? 4000);
const WARMUP_TASKS = Number(process.env.BENCH_MEMORY_WARMUP ?? 500);
/** Clients with a task in flight at once. */
const CLIENTS = Number(process.env.BENCH_MEMORY_CLIENTS ?? 16);
/** Persistent Socket.io connections that follow tasks one after another. */
const SOCKETS = 4;
/**
 * Targets per 1 000 tasks, heap after GC. In bytes, JIT code coming and going moves it by a few
 * hundred KB either way; one response kept per task would be several MB. In objects, the noise is
 * the client's keep-alive connections (tens of objects each); one object kept per task is 1 000.
 */
const GROWTH_TARGET_BYTES = 1024 * 1024;
const GROWTH_TARGET_OBJECTS = 250;
const PROMPT = 'Say hi [[sim: tokens=5]]';
const TERMINAL = ['completed', 'failed', 'cancelled'];

/** Every way a client follows a task, each ending the way that client does. */
const CLIENT_KINDS = [
  'SSE to the end',
  'SSE, left after the first event',
  'Socket.io subscribe-task to the end',
  'Socket.io, a connection per task',
  'Socket.io, unsubscribe-task after the first event',
  'GET /tasks/:id polling',
  'POST /v1/chat/completions',
  'POST /v1/chat/completions, stream',
] as const;
type ClientKind = (typeof CLIENT_KINDS)[number];

interface TaskUpdate {
  taskId: string;
  type: string;
  status?: string;
}

/**
 * A --trace-gc line of a full GC: `[pid:isolate] … Mark-Compact 125.4 (157.1) -> 31.1 (109.4) MB`
 * (in use and committed, before and after). tsx's loader thread has an isolate (and GC trace) of its own.
 */
const MARK_COMPACT = /^\[\d+:(0x[0-9a-f]+)\].*Mark-Compact(?: \(reduce\))? ([\d.]+) \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB/;
const execFileAsync = promisify(execFile);
const MB = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MB`;
const KB = (bytes: number) => `${Math.round(bytes / 1024)} KB`;
const range = (values: number[]) => `${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Clients of one api: runs tasks through it, cycling through CLIENT_KINDS. */
class TaskClients {
  private sockets: Socket[] = [];
  private nextSocket = 0;

  constructor(private readonly api: string) {}

  /** Runs `tasks` tasks, CLIENTS at a time, on fresh persistent sockets closed at the end. */
  async run(tasks: number): Promise<void> {
    this.sockets = await Promise.all(Array.from({ length: SOCKETS }, () => this.connect()));
    let started = 0;
    try {
      await Promise.all(
        Array.from({ length: CLIENTS }, async () => {
          while (started < tasks) await this.follow(CLIENT_KINDS[started++ % CLIENT_KINDS.length]!);
        }),
      );
    } finally {
      for (const socket of this.sockets) socket.disconnect();
      this.sockets = [];
    }
  }

  private async connect(): Promise<Socket> {
    const socket = connectSocket(this.api, { transports: ['websocket'], reconnection: false });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', reject);
    });
    return socket;
  }

  private async post(): Promise<string> {
    const response = await fetch(`${this.api}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: PROMPT, pattern: 'primary' }),
    });
    if (response.status !== 202) throw new Error(`POST /tasks answered ${response.status}`);
    return ((await response.json()) as { id: string }).id;
  }

  private async follow(kind: ClientKind): Promise<void> {
    switch (kind) {
      case 'SSE to the end': {
        const text = await readBody(await fetch(`${this.api}/tasks/${await this.post()}/stream`));
        if (!/"status":"completed"/.test(text)) throw new Error(`an SSE stream ended without completing: ${text.slice(-200)}`);
        return;
      }
      case 'SSE, left after the first event':
        await readBody(await fetch(`${this.api}/tasks/${await this.post()}/stream`), 'event: ');
        return;
      case 'Socket.io subscribe-task to the end':
        return this.followOnSocket(this.sockets[this.nextSocket++ % this.sockets.length]!, await this.post(), false);
      case 'Socket.io, a connection per task': {
        const taskId = await this.post();
        const socket = await this.connect();
        try {
          await this.followOnSocket(socket, taskId, false);
        } finally {
          socket.disconnect();
        }
        return;
      }
      case 'Socket.io, unsubscribe-task after the first event':
        return this.followOnSocket(this.sockets[this.nextSocket++ % this.sockets.length]!, await this.post(), true);
      case 'GET /tasks/:id polling': {
        const taskId = await this.post();
        for (;;) {
          const task = (await (await fetch(`${this.api}/tasks/${taskId}`)).json()) as { status: string };
          if (TERMINAL.includes(task.status)) return;
          await sleep(5);
        }
      }
      case 'POST /v1/chat/completions':
      case 'POST /v1/chat/completions, stream': {
        const stream = kind === 'POST /v1/chat/completions, stream';
        const response = await fetch(`${this.api}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'mageagent:primary', messages: [{ role: 'user', content: PROMPT }], stream }),
        });
        const text = await readBody(response);
        if (response.status !== 200 || !text.includes(stream ? 'data: [DONE]' : '"chat.completion"'))
          throw new Error(`${kind} answered ${response.status}: ${text.slice(0, 200)}`);
        return;
      }
    }
  }

  /** Subscribes and waits for the terminal status, or for the first event and then unsubscribes. */
  private followOnSocket(socket: Socket, taskId: string, unsubscribeEarly: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`no terminal task-update for ${taskId} within 20 s`)), 20_000);
      const finish = (error?: Error) => {
        clearTimeout(timer);
        socket.off('task-update', onUpdate);
        if (error) reject(error);
        else resolve();
      };
      const onUpdate = (event: TaskUpdate) => {
        if (event.taskId !== taskId) return;
        if (unsubscribeEarly) {
          socket.emitWithAck('unsubscribe-task', { taskId }).then(() => finish(), finish);
        } else if (event.type === 'status' && TERMINAL.includes(event.status ?? '')) {
          finish();
        }
      };
      socket.on('task-update', onUpdate);
      socket
        .timeout(10_000)
        .emitWithAck('subscribe-task', { taskId })
        .then((ack: { error?: unknown }) => ack.error && finish(new Error(`subscribe-task: ${JSON.stringify(ack.error)}`)), finish);
    });
  }
}

/** Reads a response to its end, or only until `until` appears (then leaves, as a client closing the tab). */
async function readBody(response: Response, until?: string): Promise<string> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return text;
    text += decoder.decode(value, { stream: true });
    if (until !== undefined && text.includes(until)) {
      await reader.cancel();
      return text;
    }
  }
}

interface Checkpoint {
  tasks: number;
  /** After a full GC. */
  memory: MemoryUsage;
  /** JavaScript objects alive (after the GC): a count that JIT code coming and going does not move. */
  objects: number;
  /** HTTP responses alive in the api (after the GC): an SSE stream or chat call kept after its client left is one. */
  responses: number;
}

export interface MemoryBenchOptions {
  redisUrl: string;
  prefix: string;
  log: (line: string) => void;
}

/** Resident set size of a process, from outside it (`ps` reads it the same way on Linux and macOS). */
async function rssOf(pid: number): Promise<number> {
  const { stdout } = await execFileAsync('ps', ['-o', 'rss=', '-p', String(pid)]);
  return Number(stdout.trim()) * 1024;
}

/**
 * Runs the memory benchmark on a stack of its own and returns its table's rows. First the api runs
 * undisturbed (warm-up, then half the tasks): V8's own full GCs and the RSS are what production
 * sees. Only then is its inspector opened (SIGUSR1), since forced GCs change how V8 sizes the heap
 * afterwards; the heap after a full GC is measured there, after the second and last quarters.
 */
export async function memoryRows(options: MemoryBenchOptions): Promise<Row[]> {
  /** V8's own full GCs during the undisturbed half, per isolate, in MB (--trace-gc). */
  const markCompacts = new Map<string, Array<{ before: number; after: number }>>();
  let undisturbed = false;
  let inspectorUrl: (url: string) => void = () => undefined;
  const apiInspector = new Promise<string>((resolve) => (inspectorUrl = resolve));
  const stack = new Stack({
    redisUrl: options.redisUrl,
    prefix: options.prefix,
    apiPort: 0,
    simPort: 0,
    workers: 2,
    workerConcurrency: 8,
    // Every child traces its GCs and may open an inspector on a free port (on SIGUSR1); only the api's
    // are read. V8 would otherwise flush the bytecode of code that stopped running (start-up code) a
    // little at each GC: a drop of about 1 MB in the heap that would hide a leak of that size.
    env: { LOG_LEVEL: 'warn', SIM_SPEEDUP: '1000', NODE_ARGS: `${process.env.NODE_ARGS ?? ''} --inspect-port=127.0.0.1:0 --trace-gc --no-flush-bytecode` },
    sink: (name, line) => {
      if (name !== 'api') return;
      const listening = /Debugger listening on (ws:\/\/\S+)/.exec(line);
      if (listening) inspectorUrl(listening[1]!);
      const collected = MARK_COMPACT.exec(line);
      if (collected && undisturbed) {
        const isolate = markCompacts.get(collected[1]!) ?? [];
        isolate.push({ before: Number(collected[2]), after: Number(collected[3]) });
        markCompacts.set(collected[1]!, isolate);
      }
    },
  });
  await stack.start();
  const pid = stack.api.child.pid!;
  const clients = new TaskClients(stack.apiUrl);
  let inspector: InspectorSession | undefined;
  const checkpoints: Checkpoint[] = [];
  const checkpoint = async (session: InspectorSession, tasks: number) => {
    // Clients are gone; let the api see their connections close before looking.
    await sleep(500);
    await session.collectGarbage();
    const memory = await session.memoryUsage();
    const objects = await session.countInstances('Object.prototype');
    const responses = await session.countInstances("process.getBuiltinModule('node:http').ServerResponse.prototype");
    checkpoints.push({ tasks, memory, objects, responses });
    options.log(`memory: after ${tasks} tasks, heap after GC ${MB(memory.heapUsed)} (${objects} objects), RSS ${MB(memory.rss)}`);
  };
  let peakRss = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      if (undisturbed) peakRss = Math.max(peakRss, await rssOf(pid));
      await sleep(200);
    }
  })();
  const half = TASKS / 2;
  let rssAfterWarmUp: number;
  let rssAtHalf: number;
  let elapsedS: number;
  try {
    options.log(
      `memory: ${WARMUP_TASKS} warm-up tasks, then ${TASKS} tasks, ${CLIENTS} clients at once, cycling through ${CLIENT_KINDS.length} kinds of client`,
    );
    await clients.run(WARMUP_TASKS);
    rssAfterWarmUp = await rssOf(pid);
    undisturbed = true;
    const started = performance.now();
    await clients.run(half);
    elapsedS = (performance.now() - started) / 1000;
    undisturbed = false;
    rssAtHalf = await rssOf(pid);
    process.kill(pid, 'SIGUSR1');
    inspector = await InspectorSession.connect(await apiInspector);
    await checkpoint(inspector, half);
    await clients.run(half / 2);
    await checkpoint(inspector, half + half / 2);
    await clients.run(half / 2);
    await checkpoint(inspector, TASKS);
  } finally {
    sampling = false;
    await sampler.catch(() => undefined);
    inspector?.close();
    await stack.stop();
  }

  const [first, middle, last] = checkpoints as [Checkpoint, Checkpoint, Checkpoint];
  const perThousand = (from: Checkpoint, to: Checkpoint, measure: (checkpoint: Checkpoint) => number) =>
    ((measure(to) - measure(from)) / (to.tasks - from.tasks)) * 1000;
  const heapUsed = (checkpoint: Checkpoint) => checkpoint.memory.heapUsed;
  const objects = (checkpoint: Checkpoint) => checkpoint.objects;
  const growth = perThousand(first, last, heapUsed);
  const objectGrowth = perThousand(first, last, objects);
  const count = (value: number) => Math.round(value).toLocaleString('en-US');
  // The main thread's heap is the one that holds the requests: the largest (tsx's loader thread has its own).
  const collections = [...markCompacts.values()].sort((a, b) => Math.max(...b.map((gc) => gc.before)) - Math.max(...a.map((gc) => gc.before)))[0] ?? [];
  const clientsUsed = `${CLIENTS} clients at once: ${CLIENT_KINDS.join('; ')}`;
  return [
    {
      metric: `api heap after full GC, after ${WARMUP_TASKS} warm-up + ${half} → ${half + half / 2} → ${TASKS} tasks (${clientsUsed})`,
      value: `${MB(first.memory.heapUsed)} → ${MB(middle.memory.heapUsed)} → ${MB(last.memory.heapUsed)}; objects ${count(first.objects)} → ${count(middle.objects)} → ${count(last.objects)}`,
      target: 'reference',
    },
    {
      metric: `api heap-after-GC growth per 1 000 tasks, ${half} → ${TASKS} (each quarter)`,
      value: `${KB(growth)} (${KB(perThousand(first, middle, heapUsed))}, ${KB(perThousand(middle, last, heapUsed))})`,
      target: `< ${KB(GROWTH_TARGET_BYTES)}`,
      ok: growth < GROWTH_TARGET_BYTES,
    },
    {
      metric: `api objects alive after GC, growth per 1 000 tasks, ${half} → ${TASKS} (each quarter)`,
      value: `${count(objectGrowth)} (${count(perThousand(first, middle, objects))}, ${count(perThousand(middle, last, objects))})`,
      target: `< ${GROWTH_TARGET_OBJECTS} (one object kept per task: 1 000)`,
      ok: objectGrowth < GROWTH_TARGET_OBJECTS,
    },
    {
      metric: `HTTP responses alive in the api once every client has left, after ${half} → ${TASKS} tasks`,
      value: `${first.responses} → ${last.responses}`,
      target: 'no more than at the first look',
      ok: last.responses <= first.responses,
    },
    {
      metric: `V8's own full GCs of the api's heap while ${half} tasks ran undisturbed (${Math.round(half / elapsedS)} tasks/s, --trace-gc): heap in use before → after`,
      value:
        collections.length === 0
          ? 'none'
          : `${collections.length} GCs: ${range(collections.map((gc) => gc.before))} → ${range(collections.map((gc) => gc.after))} MB`,
      target: 'reference: garbage piles up to a few times the live heap, each GC returns to it',
    },
    {
      metric: `api RSS, undisturbed: after the warm-up → peak → after ${half} tasks; then after a full GC`,
      value: `${MB(rssAfterWarmUp)} → ${MB(peakRss)} → ${MB(rssAtHalf)}; ${MB(first.memory.rss)}`,
      target: 'reference (a sawtooth with the heap, not a leak)',
    },
  ];
}
