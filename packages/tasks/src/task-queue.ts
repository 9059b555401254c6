import { randomUUID } from 'node:crypto';
import { Job, Queue, type JobsOptions } from 'bullmq';
import type { Cluster, Redis } from 'ioredis';
import { Packr } from 'msgpackr';
import type { TaskPriority } from '@mageagent/core';
import { definedScript } from './redis';

export const TASK_QUEUE_NAME = 'tasks';

/**
 * The BullMQ job's payload: the task record is the source of truth, the job only carries its id,
 * and, when tracing is on, the W3C trace context (`traceparent`, `tracestate`) of the request
 * that created it, so the worker's task span continues that trace across the queue hop.
 */
export interface TaskJobData {
  taskId: string;
  trace?: Record<string, string>;
}

/** One job to add: a task, its priority and the trace context it was created in. */
export interface TaskJob {
  taskId: string;
  priority: TaskPriority;
  trace?: Record<string, string> | undefined;
}

/** BullMQ priorities: lower runs first; 0 (no priority) would jump every prioritised job, so all get one. */
export const BULLMQ_PRIORITY: Record<TaskPriority, number> = { high: 1, normal: 5, low: 10 };

/** How many finished jobs BullMQ keeps, and for how long: whichever bound is reached first removes them. */
export interface JobRetention {
  /** Most jobs kept (the newest); 0 keeps none. */
  count: number;
  /** Seconds a job is kept after it finished. */
  ageSeconds: number;
}

/**
 * The defaults: finished jobs only serve the queue dashboard and /queue/stats (the task record is
 * the source of truth and has its own retention), so completed ones are kept an hour, failed ones
 * (what an operator investigates) a day; the counts bound Redis memory under any load.
 */
export const DEFAULT_JOB_RETENTION: { completed: JobRetention; failed: JobRetention } = {
  completed: { count: 1000, ageSeconds: 3600 },
  failed: { count: 10_000, ageSeconds: 24 * 3600 },
};

export interface TaskQueueOptions {
  prefix: string;
  /** How many times a job is started in all, counting restarts after a crashed worker. */
  attempts: number;
  /** How many finished jobs are kept, and how long (default DEFAULT_JOB_RETENTION). */
  retention?: { completed: JobRetention; failed: JobRetention };
}

/** Adds and removes task jobs on the BullMQ queue. */
export class TaskQueue {
  readonly queue: Queue<TaskJobData>;
  /** BullMQ's add-job script and its arguments, derived once (see jobWriter). */
  private writer: Promise<JobWriter | undefined> | undefined;

  constructor(
    private readonly connection: Redis | Cluster,
    private readonly options: TaskQueueOptions,
  ) {
    this.queue = new Queue<TaskJobData>(TASK_QUEUE_NAME, {
      connection,
      prefix: options.prefix,
      // Job events are not used (the task log is); keep BullMQ's stream short.
      streams: { events: { maxLen: 100 } },
    });
  }

  /** Adds one job per task in one pipelined write (BullMQ's addBulk); rejects if any add failed. */
  async enqueueAll(tasks: readonly TaskJob[]): Promise<void> {
    await this.queue.addBulk(
      tasks.map(({ taskId, priority, trace }) => ({ name: 'run', data: trace ? { taskId, trace } : { taskId }, opts: this.jobOptions(taskId, priority) })),
    );
  }

  /**
   * BullMQ's add-job script for this queue's jobs, to run inside the task store's creation script
   * (see jobWriterOf); undefined when this BullMQ version's jobs cannot be written that way.
   */
  jobWriter(): Promise<JobWriter | undefined> {
    this.writer ??= jobWriterOf(this.queue, (taskId, priority) => this.jobOptions(taskId, priority), this.connection).catch((error: unknown) => {
      // Not ready (Redis unreachable): asked again next time.
      this.writer = undefined;
      throw error;
    });
    return this.writer;
  }

  private jobOptions(taskId: string, priority: TaskPriority): JobsOptions {
    return {
      jobId: taskId,
      priority: BULLMQ_PRIORITY[priority],
      attempts: this.options.attempts,
      backoff: { type: 'exponential', delay: 1000 },
      // BullMQ applies these when the job finishes (they travel with the job, so the api's setting holds whichever worker runs it).
      removeOnComplete: keepJobs(this.options.retention?.completed ?? DEFAULT_JOB_RETENTION.completed),
      removeOnFail: keepJobs(this.options.retention?.failed ?? DEFAULT_JOB_RETENTION.failed),
    };
  }

  /** Removes a job that no worker holds; false when it is locked by a worker (or gone). */
  async remove(taskId: string): Promise<boolean> {
    return (await this.queue.remove(taskId)) === 1;
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}

/**
 * BullMQ's own add-job script and what to call it with, so the task store can add a task's job in
 * the same script call that writes its record: one Redis call per batch for both, and a job never
 * exists without its record, nor a record without its job.
 */
export interface JobWriter {
  /**
   * Lua that defines `addTaskJob(jobKeys, jobKeyPrefix, id, priority, timestamp, data)`: BullMQ's
   * add-job script (its own source, as loaded on the connection), run on the arguments BullMQ
   * itself would pass for that job.
   */
  readonly lua: string;
  /** The add-job script's KEYS (the queue's keys; the same for every job). */
  readonly keys: readonly string[];
  /** The Redis key prefix of a job's hash (`<prefix>:tasks:`): the job's key is this and its id. */
  readonly jobKeyPrefix: string;
  /** What `addTaskJob` needs of one task's job besides its id: priority, timestamp, data. */
  argv(job: TaskJob): string[];
}

/** BullMQ's own msgpack settings for the script arguments (checked against its output: see jobWriterOf). */
const packer = new Packr({ useRecords: false, encodeUndefinedAsNil: true });

/**
 * Derives a JobWriter from BullMQ itself. It makes one job per priority through BullMQ's own
 * code (the Job class and the backend's addJobToTransaction), with a client that only records the
 * script call, then finds where the key prefix, job id and timestamp sit in its arguments. The
 * script changes only those (in Lua, from the recorded arguments), so what it writes is what
 * `queue.add` writes, in this BullMQ version. The checks below make a version that encodes jobs
 * differently fall back to `addBulk` rather than write jobs BullMQ cannot read.
 *
 * Why not BullMQ's addBulk: it cost the api's single thread about 75 µs per job (a Job object,
 * msgpack, an ioredis pipeline that copies every script defined on the connection, a command and
 * a promise per job), the largest part of what a new task cost (README, Performance).
 */
export async function jobWriterOf(
  queue: Queue<TaskJobData>,
  jobOptions: (taskId: string, priority: TaskPriority) => JobsOptions,
  connection: Redis | Cluster,
): Promise<JobWriter | undefined> {
  await queue.waitUntilReady();
  const backend = queue.getBackend() as unknown as {
    addJobToTransaction?: (client: unknown, job: unknown, jobId: string, parentKeyOpts: object) => Promise<unknown>;
  };
  if (typeof backend.addJobToTransaction !== 'function') return undefined;
  const sentinel = `mageagent-template-${randomUUID()}`;
  const templates: string[] = [];
  let shared: { name: string; keys: string[]; jobKeyPrefix: string } | undefined;
  for (const priority of Object.keys(BULLMQ_PRIORITY) as TaskPriority[]) {
    const job = new Job<TaskJobData>(queue, 'run', { taskId: sentinel }, jobOptions(sentinel, priority), sentinel);
    const json = job.asJSON();
    (job as unknown as { validateOptions?: (json: unknown) => void }).validateOptions?.(json);
    let call: { name: string; args: unknown[] } | undefined;
    const recorder = {
      runCommand: (name: string, args: unknown[]) => {
        call = { name, args };
        return Promise.resolve(sentinel);
      },
    };
    await backend.addJobToTransaction(recorder, json, sentinel, { parentKey: undefined, parentDependenciesKey: '' });
    if (call === undefined || call.args.length < 3) return undefined;
    const keys = call.args.slice(0, -3);
    const [packedArgs, data, packedOpts] = call.args.slice(-3);
    if (!keys.every((key) => typeof key === 'string') || !Buffer.isBuffer(packedArgs) || !Buffer.isBuffer(packedOpts)) return undefined;
    if (data !== JSON.stringify({ taskId: sentinel })) return undefined;
    const args = packer.unpack(packedArgs) as unknown;
    const opts = packer.unpack(packedOpts) as unknown;
    if (!Array.isArray(args) || !isPlainRecord(opts)) return undefined;
    // Our packer must read and write exactly as BullMQ's does, and Lua's cmsgpack must give the
    // same tables back when it re-packs them (no nulls but trailing ones, no empty tables).
    if (!packer.pack(args).equals(packedArgs) || !packer.pack(opts).equals(packedOpts)) return undefined;
    const present = args.findLastIndex((value) => value !== null && value !== undefined);
    if (args.slice(0, present + 1).some((value) => !luaRoundTrips(value)) || !luaRoundTrips(opts)) return undefined;
    const idAt = args.indexOf(sentinel);
    const timestampAt = args.indexOf(job.timestamp);
    const jobKeyPrefix = args[0];
    if (idAt < 1 || args.lastIndexOf(sentinel) !== idAt || timestampAt < 1 || typeof jobKeyPrefix !== 'string') return undefined;
    const optsIdFields = Object.entries(opts).flatMap(([field, value]) => (value === sentinel ? [field] : []));
    if (JSON.stringify(opts).split(sentinel).length - 1 !== optsIdFields.length) return undefined;
    if (shared === undefined) shared = { name: call.name, keys: keys as string[], jobKeyPrefix };
    else if (shared.name !== call.name || shared.keys.join('\n') !== keys.join('\n')) return undefined;
    // Lua arrays count from 1.
    templates.push(
      `[${luaString(priority)}] = { args = ${luaString(packedArgs)}, opts = ${luaString(packedOpts)}, idAt = ${idAt + 1}, timestampAt = ${timestampAt + 1}, optsIdFields = {${optsIdFields.map(luaString).join(', ')}} }`,
    );
  }
  // The script itself, as BullMQ defined it on the connection under that name.
  const script = definedScript(connection, shared!.name);
  if (script === undefined || script.numberOfKeys !== shared!.keys.length) return undefined;
  const { keys, jobKeyPrefix } = shared!;
  // BullMQ's script runs as a function: its KEYS and ARGV are that function's parameters.
  const lua = `local function bullmqAddJob(KEYS, ARGV)
${script.lua}
end
local jobTemplates = {
  ${templates.join(',\n  ')}
}
local function addTaskJob(jobKeys, jobKeyPrefix, id, priority, timestamp, data)
  local template = jobTemplates[priority]
  local args, opts = cmsgpack.unpack(template.args), cmsgpack.unpack(template.opts)
  args[1] = jobKeyPrefix
  args[template.idAt] = id
  args[template.timestampAt] = tonumber(timestamp)
  for _, field in ipairs(template.optsIdFields) do opts[field] = id end
  return bullmqAddJob(jobKeys, {cmsgpack.pack(args), data, cmsgpack.pack(opts)})
end`;
  return {
    lua,
    keys,
    jobKeyPrefix,
    argv: ({ taskId, priority, trace }) => [priority, String(Date.now()), JSON.stringify(trace ? { taskId, trace } : { taskId })],
  };
}

function isPlainRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !Buffer.isBuffer(value);
}

/** Whether Lua's cmsgpack re-packs a value as it was: no nulls in tables (they vanish), no empty tables (they become arrays). */
function luaRoundTrips(value: unknown): boolean {
  if (value === null || value === undefined) return false;
  if (Array.isArray(value)) return value.length > 0 && value.every(luaRoundTrips);
  if (typeof value === 'object') {
    const entries = Object.values(value);
    return !Buffer.isBuffer(value) && entries.length > 0 && entries.every(luaRoundTrips);
  }
  return true;
}

/** A Lua string literal of any bytes: every byte as a three-digit decimal escape. */
function luaString(value: string | Buffer): string {
  return `"${[...(typeof value === 'string' ? Buffer.from(value) : value)].map((byte) => `\\${String(byte).padStart(3, '0')}`).join('')}"`;
}

/** BullMQ's KeepJobs: `true` (remove at once) when nothing is to be kept. */
function keepJobs(retention: JobRetention): JobsOptions['removeOnComplete'] {
  if (retention.count === 0 || retention.ageSeconds === 0) return true;
  return { count: retention.count, age: retention.ageSeconds };
}
