import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import {
  NotFoundError,
  QueueFullError,
  RateLimitedError,
  RequestRateExceededError,
  TaskStatuses,
  type TaskErrorInfo,
  type TaskEvent,
  type TaskEventPayload,
  type TaskRecord,
  type TaskResult,
  type TaskStatus,
  type TaskWebhook,
  type WebhookDelivery,
} from '@mageagent/core';
import { TaskKeys, uuidV7Floor } from './keys';
import { createTasksCommand, createTasksScript, DISCARD_TASK, TRANSITION } from './scripts';
import { TASK_QUEUE_NAME, type JobWriter, type TaskJob } from './task-queue';

type ScriptedRedis = (Redis | Cluster) & {
  mageTransition(hash: string, events: string, outbox: string, ...argv: (string | number)[]): Promise<[number, string]>;
  mageDiscardTask(hash: string, events: string, index: string, taskId: string): Promise<number>;
};

/** One of the creation scripts (createTasksScript), as ioredis defines it on the connection. */
type CreateCommand = (numberOfKeys: number, ...keysAndArgv: (string | number)[]) => Promise<(number | string | [string, string | number])[]>;

/**
 * A count of requests per API key in Redis, which new tasks' requests are counted against in the
 * script that writes them (one call for both): the api passes its limiter's, so a request is
 * counted in the same place, under the same key, whether its task's creation or the limiter counts it.
 */
export interface RequestCounter {
  /**
   * A script of one key: adds ARGV[1] to the count at KEYS[1], starting a window of ARGV[2]
   * seconds there when none runs, and returns {count, ms left in the window}.
   */
  lua: string;
  windowSeconds: number;
  /** The key an API key's requests are counted under. */
  keyOf(keyId: string): string;
}

/** New tasks' jobs, to add in the same script call as their records (see TaskQueue.jobWriter). */
export interface NewJobs {
  writer: JobWriter;
  /** One per task, in the same order. */
  jobs: readonly TaskJob[];
}

export interface TaskStoreOptions {
  /** Seconds a task and its event log are kept after their last change. */
  retentionSeconds: number;
  /**
   * New tasks are refused (QueueFullError) while this many wait in the queue (0 = no bound): work
   * the GPU hosts cannot reach for hours is better refused now.
   */
  maxQueuedTasks?: number;
  /** Where the requests of new tasks that ask for it are counted (CreateLimits.requestsPerMinute). */
  requestCounter?: RequestCounter;
}

/** Bounds one new task is created under. */
export interface CreateLimits {
  /** Refused (RateLimitedError) while its key has this many tasks queued or running (0 = no bound). */
  maxActiveTasks?: number;
  /**
   * Counts the request that creates the task against its key's requests per minute, in the same
   * script that writes it, and refuses it past that many (RequestRateExceededError, a 429);
   * 0 or absent: not counted here. Needs the store's requestCounter.
   */
  requestsPerMinute?: number;
}

/** Suggested wait before retrying a task refused for its key's active tasks: tasks take seconds to minutes. */
const ACTIVE_LIMIT_RETRY_AFTER_SECONDS = 5;

/** What a guarded transition did. */
export type TransitionOutcome = { applied: true; lastSeq: number; previousStatus: TaskStatus } | { applied: false; currentStatus: TaskStatus };

export interface TransitionRequest {
  /** The transition applies only when the task is in one of these statuses. */
  from: readonly TaskStatus[];
  /** The new status; omit to append events without changing status. */
  to?: TaskStatus;
  /** Record fields to set alongside (already in their stored string form). */
  fields?: Record<string, string>;
  /** Events appended in order after the change; a status change appends its `status` event itself. */
  events?: TaskEventPayload[];
  /** Extra fields on the automatic `status` event (attempt, reason). */
  statusEvent?: { attempt?: number; reason?: string; worker?: string };
  /**
   * Applies only while the record's `attempt` is this one: a worker passes the attempt it runs,
   * so once another worker has taken the task over, the first one's writes are refused.
   */
  fence?: number;
  /**
   * Identifies this write, so that a resend (after a reconnect, when the first send may have been
   * applied and only its reply lost) is not applied twice. Generated when omitted; callers that
   * retry a write themselves pass the same id each time.
   */
  writeId?: string;
}

/** Tasks per create-script call: enough to amortise the call, small enough to keep Redis responsive. */
const CREATE_CHUNK = 128;

const NON_TERMINAL: readonly TaskStatus[] = ['queued', 'processing'];
const JSON_FIELDS = ['input', 'options', 'metadata', 'result', 'error', 'webhook'] as const;

/**
 * The task record and its event log on Redis. Every write goes through one Lua
 * script, so a status change, its events and their publication are atomic and a
 * late `completed` can never overwrite `cancelled`.
 */
export class TaskStore {
  readonly keys: TaskKeys;
  private readonly redis: ScriptedRedis;

  constructor(
    redis: Redis | Cluster,
    prefix: string,
    private readonly options: TaskStoreOptions,
  ) {
    this.keys = new TaskKeys(prefix);
    if (!('mageTransition' in redis)) {
      redis.defineCommand('mageDiscardTask', { numberOfKeys: 3, lua: DISCARD_TASK });
      redis.defineCommand('mageTransition', { numberOfKeys: 3, lua: TRANSITION });
    }
    this.redis = redis as ScriptedRedis;
  }

  get retentionSeconds(): number {
    return this.options.retentionSeconds;
  }

  /** Writes a new task with its first `status: queued` event (seq 1). */
  async create(task: TaskRecord, limits?: CreateLimits): Promise<void> {
    const [problem] = await this.createAll([task], [limits]);
    if (problem) throw problem;
  }

  /**
   * Writes new tasks (and, with `newJobs`, their BullMQ jobs) in one script call per chunk of 128;
   * resolves to one entry per task: null when written, or the error that kept it out
   * (TaskExistsError, QueueFullError, RateLimitedError for its key's active tasks,
   * TaskNotStorableError, or what Redis answered). Each task is checked against the bounds and
   * written in one script, so the bounds hold across api replicas; with its job, in the same
   * atomic step, so neither exists without the other.
   */
  async createAll(tasks: readonly TaskRecord[], limits: readonly (CreateLimits | undefined)[] = [], newJobs?: NewJobs): Promise<(Error | null)[]> {
    const create = this.creationCommand(newJobs?.writer);
    const counter = this.options.requestCounter;
    const jobKeys = newJobs?.writer.keys ?? [];
    const [wait, prioritized] = this.keys.queueBacklog(TASK_QUEUE_NAME);
    const indexFloor = uuidV7Floor(Date.now() - 2 * this.options.retentionSeconds * 1000);
    const outcomes: (Error | null)[] = new Array(tasks.length).fill(null);
    // One script call per chunk of the batch (a chunk bounds how long Redis is busy with one call).
    const calls: { indexes: number[]; keys: string[]; argv: (string | number)[] }[] = [];
    let call: (typeof calls)[number] | undefined;
    tasks.forEach((task, index) => {
      // Each task is prepared on its own: one that cannot be serialised fails alone, never its batch.
      const perMinute = limits[index]?.requestsPerMinute ?? 0;
      if (perMinute > 0 && counter === undefined) {
        outcomes[index] = new Error('this task store has no request counter: it cannot count requests per minute');
        return;
      }
      let fields: [string, string][];
      let jobArgv: string[] = [];
      try {
        fields = Object.entries(serialise(task));
        if (newJobs) jobArgv = newJobs.writer.argv(newJobs.jobs[index]!);
      } catch (error) {
        outcomes[index] = new TaskNotStorableError(task.id, error);
        return;
      }
      if (call === undefined || call.indexes.length === CREATE_CHUNK) {
        call = {
          indexes: [],
          keys: [wait, prioritized, ...jobKeys],
          argv: [
            this.options.retentionSeconds,
            this.options.maxQueuedTasks ?? 0,
            indexFloor,
            jobKeys.length,
            newJobs?.writer.jobKeyPrefix ?? '',
            counter?.windowSeconds ?? 0,
          ],
        };
        calls.push(call);
      }
      call.indexes.push(index);
      const keyId = task.keyId ?? 'open';
      const active = this.keys.activeTasks(keyId);
      // Without a counter, a key the script does not touch stands in for the counter's.
      call.keys.push(this.keys.task(task.id), this.keys.events(task.id), this.keys.tenantTasks(task.tenant), active, counter?.keyOf(keyId) ?? active);
      call.argv.push(task.id, task.createdAt, `{"type":"status","status":"${task.status}"}`, limits[index]?.maxActiveTasks ?? 0, perMinute, fields.length);
      for (const [field, value] of fields) call.argv.push(field, value);
      call.argv.push(...jobArgv);
    });
    // Plain calls, not a pipeline, and not auto-pipelined either (see createRedis): ioredis builds a
    // pipeline by copying every script defined on the connection onto it, and BullMQ defines some
    // 65 there (55-130 µs per pipeline, measured).
    const replies = await Promise.allSettled(calls.map(({ keys, argv }) => create(keys.length, ...keys, ...argv)));
    calls.forEach(({ indexes }, callIndex) => {
      const reply = replies[callIndex]!;
      indexes.forEach((index, position) => {
        const answer = reply.status === 'rejected' ? asError(reply.reason) : reply.value[position];
        if (answer instanceof Error) outcomes[index] = answer;
        else if (Array.isArray(answer) && answer[0] === 'job') outcomes[index] = new JobNotAddedError(tasks[index]!.id, new Error(String(answer[1])));
        else if (Array.isArray(answer) && answer[0] === 'rate')
          outcomes[index] = new RequestRateExceededError(limits[index]?.requestsPerMinute ?? 0, Number(answer[1]));
        else if (typeof answer === 'number') outcomes[index] = createOutcome(tasks[index], limits[index], this.options.maxQueuedTasks, answer);
        else outcomes[index] = new Error(answer === undefined ? 'no reply from Redis' : String(answer));
      });
    });
    return outcomes;
  }

  /**
   * The creation script (with BullMQ's add-job script inside when `writer` is given, and the
   * request counter's when the store has one), defined on the connection on first use. Defining
   * it while requests flow is safe: it is never auto-pipelined (see createRedis), so no pending
   * pipeline can lack it.
   */
  private creationCommand(writer: JobWriter | undefined): CreateCommand {
    const name = createTasksCommand(writer !== undefined, this.options.requestCounter !== undefined);
    if (!this.definedCommands.has(name) || this.definedCommands.get(name) !== writer?.lua) {
      // No fixed key count: the first argument says how many keys the batch has.
      this.redis.defineCommand(name, { lua: createTasksScript(writer?.lua, this.options.requestCounter?.lua) });
      this.definedCommands.set(name, writer?.lua);
    }
    return (this.redis as unknown as Record<string, CreateCommand>)[name]!.bind(this.redis);
  }

  /** The creation commands this store defined, with the add-job script each has inside. */
  private readonly definedCommands = new Map<string, string | undefined>();

  /** Deletes tasks whose creation was abandoned (their jobs could not be queued); nobody was told their ids. */
  async discard(tasks: readonly TaskRecord[]): Promise<void> {
    await Promise.all(
      tasks.map((task) => this.redis.mageDiscardTask(this.keys.task(task.id), this.keys.events(task.id), this.keys.tenantTasks(task.tenant), task.id)),
    );
  }

  async get(taskId: string): Promise<TaskRecord | undefined> {
    // Both in one round trip: the delivery list is empty (and cheap) for tasks without a webhook.
    const [hash, deliveries] = await Promise.all([this.redis.hgetall(this.keys.task(taskId)), this.redis.lrange(this.keys.webhookDeliveries(taskId), 0, -1)]);
    return hash.id === undefined ? undefined : deserialise(hash, deliveries);
  }

  /**
   * Records one webhook delivery attempt on a finished task. The record's status never changes
   * again, so attempts live in a list of their own, kept as long as the task.
   */
  async recordWebhookDelivery(taskId: string, delivery: WebhookDelivery): Promise<void> {
    const key = this.keys.webhookDeliveries(taskId);
    const ttl = await this.redis.ttl(this.keys.task(taskId));
    await this.redis.rpush(key, JSON.stringify(delivery));
    await this.redis.expire(key, ttl > 0 ? ttl : this.options.retentionSeconds);
  }

  async require(taskId: string): Promise<TaskRecord> {
    const task = await this.get(taskId);
    if (!task) throw new NotFoundError(`task ${taskId} not found`);
    return task;
  }

  /**
   * A tenant's tasks, newest first, from its index (never a SCAN). Filters are applied to the
   * records as they are read; at most `scanLimit` ids are looked at per call, so a rare filter
   * answers a short page with a cursor rather than reading the whole index. Ids whose records
   * have expired are dropped from the index on the way.
   */
  async list(tenant: string, query: TaskListQuery): Promise<TaskListPage> {
    const index = this.keys.tenantTasks(tenant);
    const floor = query.createdAfter === undefined ? '-' : `[${uuidV7Floor(query.createdAfter.getTime())}`;
    const scanLimit = query.scanLimit ?? 1000;
    const tasks: TaskSummary[] = [];
    let lastExamined = query.before;
    let examined = 0;
    let exhausted = false;
    scan: while (examined < scanLimit) {
      const batch = Math.min(Math.max(query.limit * 2, 20), scanLimit - examined);
      const upper = lastExamined === undefined ? '+' : `(${lastExamined}`;
      const ids = await this.redis.zrevrangebylex(index, upper, floor, 'LIMIT', 0, batch);
      // Sent back to back, one round trip (not a pipeline: see createAll).
      const rows = await Promise.all(ids.map((id) => this.redis.hmget(this.keys.task(id), ...SUMMARY_FIELDS)));
      const gone: string[] = [];
      for (const [position, id] of ids.entries()) {
        examined += 1;
        lastExamined = id;
        const summary = summaryOf(rows[position] ?? []);
        if (summary === undefined) gone.push(id);
        else if (matches(summary, query)) tasks.push(summary);
        if (tasks.length === query.limit) {
          if (gone.length > 0) await this.redis.zrem(index, ...gone);
          break scan;
        }
      }
      if (gone.length > 0) await this.redis.zrem(index, ...gone);
      if (ids.length < batch) {
        exhausted = true;
        break;
      }
    }
    return { tasks, next: exhausted ? undefined : lastExamined };
  }

  /** Status and newest seq only (one small read). */
  async head(taskId: string): Promise<{ status: TaskStatus; lastSeq: number } | undefined> {
    const [status, seq] = await this.redis.hmget(this.keys.task(taskId), 'status', 'seq');
    return status ? { status: status as TaskStatus, lastSeq: Number(seq ?? 0) } : undefined;
  }

  /** Seconds until the task's record expires (-2 when gone). */
  ttl(taskId: string): Promise<number> {
    return this.redis.ttl(this.keys.task(taskId));
  }

  /** Events with seq greater than `afterSeq`, in order. */
  async readEvents(taskId: string, afterSeq = 0, untilSeq = -1): Promise<TaskEvent[]> {
    // seq n sits at list index n - 1.
    const stop = untilSeq < 0 ? -1 : untilSeq - 1;
    const raw = await this.redis.lrange(this.keys.events(taskId), afterSeq, stop);
    return raw.map((line) => JSON.parse(line) as TaskEvent);
  }

  /** Applies a guarded change; see TransitionRequest. */
  async transition(taskId: string, request: TransitionRequest): Promise<TransitionOutcome | undefined> {
    const at = new Date().toISOString();
    const fields = { ...request.fields };
    const events: TaskEventPayload[] = [];
    let ttl = 0;
    if (request.to !== undefined) {
      events.push({ type: 'status', status: request.to, ...request.statusEvent });
      // Every status change restarts the retention clock; the record says when it ends.
      ttl = this.options.retentionSeconds;
      fields.expiresAt = new Date(Date.now() + ttl * 1000).toISOString();
    }
    // A status event goes last: the terminal status must be the final event of the log.
    const ordered = [...(request.events ?? []), ...events];
    const argv: (string | number)[] = [
      this.keys.eventChannel(taskId),
      taskId,
      at,
      `,${request.from.join(',')},`,
      request.to ?? '',
      ttl,
      request.fence === undefined ? '' : String(request.fence),
      // Every write carries an id, so a resend after a reconnect is never applied twice.
      request.writeId ?? randomUUID(),
      Object.keys(fields).length,
    ];
    for (const [key, value] of Object.entries(fields)) argv.push(key, value);
    for (const event of ordered) argv.push(JSON.stringify(event));
    const [lastSeq, status] = await this.redis.mageTransition(this.keys.task(taskId), this.keys.events(taskId), this.keys.webhookOutbox(), ...argv);
    if (lastSeq === -1) return undefined;
    if (lastSeq === 0) return { applied: false, currentStatus: status as TaskStatus };
    return { applied: true, lastSeq, previousStatus: status as TaskStatus };
  }

  /** Appends events to a task that is still running; refused (applied: false) once it is terminal. */
  append(taskId: string, ...events: TaskEventPayload[]): Promise<TransitionOutcome | undefined> {
    return this.transition(taskId, { from: NON_TERMINAL, events });
  }

  /** Stores the result; with `fence`, only while the task is still the given attempt's. */
  complete(taskId: string, result: TaskResult, fence?: number): Promise<TransitionOutcome | undefined> {
    return this.transition(taskId, {
      from: ['processing'],
      to: 'completed',
      fence,
      fields: { result: JSON.stringify(result), completedAt: new Date().toISOString(), currentStep: '' },
      events: [{ type: 'result', result }],
    });
  }

  fail(taskId: string, error: TaskErrorInfo, fence?: number): Promise<TransitionOutcome | undefined> {
    return this.transition(taskId, {
      from: NON_TERMINAL,
      to: 'failed',
      fence,
      fields: { error: JSON.stringify(error), completedAt: new Date().toISOString(), currentStep: '' },
      events: [{ type: 'error', error }],
    });
  }

  cancel(taskId: string, reason = 'cancelled by request'): Promise<TransitionOutcome | undefined> {
    const error: TaskErrorInfo = { code: 'CANCELLED', message: reason, retryable: false };
    return this.transition(taskId, {
      from: NON_TERMINAL,
      to: 'cancelled',
      fields: { error: JSON.stringify(error), completedAt: new Date().toISOString(), currentStep: '' },
    });
  }
}

/** One task in a listing: what a client needs to choose which to open. */
export interface TaskSummary {
  id: string;
  status: TaskStatus;
  pattern: string;
  priority: TaskRecord['priority'];
  createdAt: string;
  startedAt: string | null;
  completedAt: string | null;
  attempt: number;
  app: string | null;
  keyId: string | null;
  /** The error code of a failed or cancelled task. */
  errorCode: string | null;
}

export interface TaskListQuery {
  limit: number;
  /** Only tasks older than this task id (the cursor: the last id of the previous page). */
  before?: string;
  createdAfter?: Date;
  status?: readonly TaskStatus[];
  pattern?: string;
  /** Most index entries looked at in one call (default 1 000). */
  scanLimit?: number;
}

export interface TaskListPage {
  tasks: TaskSummary[];
  /** Where the next page starts (pass as `before`), when there may be more. */
  next: string | undefined;
}

const SUMMARY_FIELDS = ['id', 'status', 'pattern', 'priority', 'createdAt', 'startedAt', 'completedAt', 'attempt', 'app', 'keyId', 'error'] as const;

function matches(summary: TaskSummary, query: TaskListQuery): boolean {
  if (query.status !== undefined && !query.status.includes(summary.status)) return false;
  return query.pattern === undefined || summary.pattern === query.pattern;
}

function summaryOf(values: (string | null)[]): TaskSummary | undefined {
  const [id, status, pattern, priority, createdAt, startedAt, completedAt, attempt, app, keyId, error] = values;
  if (!id || !status) return undefined;
  let errorCode: string | null = null;
  if (error) {
    try {
      errorCode = (JSON.parse(error) as TaskErrorInfo).code;
    } catch {
      errorCode = null;
    }
  }
  return {
    id,
    status: status as TaskStatus,
    pattern: pattern ?? '',
    priority: (priority as TaskRecord['priority']) || 'normal',
    createdAt: createdAt ?? '',
    startedAt: startedAt || null,
    completedAt: completedAt || null,
    attempt: Number(attempt ?? 0),
    app: app || null,
    keyId: keyId || null,
    errorCode,
  };
}

/** Stored form: fields a task does not have yet (null, attempt 0) are simply absent. */
function serialise(task: TaskRecord): Record<string, string> {
  const fields: Record<string, string> = {
    id: task.id,
    tenant: task.tenant,
    status: task.status,
    pattern: task.pattern,
    priority: task.priority,
    input: JSON.stringify(task.input),
    createdAt: task.createdAt,
    expiresAt: task.expiresAt,
  };
  if (Object.keys(task.options).length > 0) fields.options = JSON.stringify(task.options);
  if (Object.keys(task.metadata).length > 0) fields.metadata = JSON.stringify(task.metadata);
  if (task.startedAt) fields.startedAt = task.startedAt;
  if (task.completedAt) fields.completedAt = task.completedAt;
  if (task.attempt > 0) fields.attempt = String(task.attempt);
  if (task.currentStep) fields.currentStep = task.currentStep;
  if (task.result) fields.result = JSON.stringify(task.result);
  if (task.error) fields.error = JSON.stringify(task.error);
  if (task.app) fields.app = task.app;
  if (task.keyId) fields.keyId = task.keyId;
  if (task.webhook) fields.webhook = JSON.stringify({ url: task.webhook.url, events: task.webhook.events });
  return fields;
}

/** What a create script's answer means for one task. */
function createOutcome(task: TaskRecord | undefined, limits: CreateLimits | undefined, maxQueued: number | undefined, answer: number): Error | null {
  if (answer === 1) return null;
  if (answer === -1) return new QueueFullError(`the queue is full (${maxQueued} tasks waiting); retry later`);
  if (answer === -2) {
    return new RateLimitedError(
      `this key has ${limits?.maxActiveTasks} tasks queued or running, its limit; retry when one has finished`,
      ACTIVE_LIMIT_RETRY_AFTER_SECONDS,
      { quota: 'maxActiveTasks', limit: limits?.maxActiveTasks },
    );
  }
  return new TaskExistsError(task?.id ?? '');
}

function deserialise(hash: Record<string, string>, deliveries: string[] = []): TaskRecord {
  const json = <T>(field: (typeof JSON_FIELDS)[number], fallback: T): T => {
    const value = hash[field];
    return value ? (JSON.parse(value) as T) : fallback;
  };
  const status = hash.status as TaskStatus;
  const webhook = json<Omit<TaskWebhook, 'deliveries'> | null>('webhook', null);
  return {
    id: hash.id ?? '',
    // Records written before tenants existed belong to the open-mode tenant.
    tenant: hash.tenant || 'default',
    app: hash.app || null,
    keyId: hash.keyId || null,
    status: TaskStatuses.includes(status) ? status : 'failed',
    pattern: hash.pattern ?? '',
    priority: (hash.priority as TaskRecord['priority']) || 'normal',
    input: json('input', { messages: [] }),
    options: json('options', {}),
    metadata: json('metadata', {}),
    createdAt: hash.createdAt ?? '',
    startedAt: hash.startedAt || null,
    completedAt: hash.completedAt || null,
    expiresAt: hash.expiresAt ?? '',
    attempt: Number(hash.attempt ?? 0),
    currentStep: hash.currentStep || null,
    result: json<TaskResult | null>('result', null),
    error: json<TaskErrorInfo | null>('error', null),
    lastSeq: Number(hash.seq ?? 0),
    webhook: webhook === null ? null : { ...webhook, deliveries: deliveries.map((line) => JSON.parse(line) as WebhookDelivery) },
  };
}

/** A task whose job could not be added, so nothing of it was written (createAll with jobs). */
export class JobNotAddedError extends Error {
  constructor(taskId: string, cause: Error) {
    super(`the job of task ${taskId} could not be added: ${cause.message}`, { cause });
    this.name = 'JobNotAddedError';
  }
}

/** A task that could not be written in its stored form (it never reached Redis). */
export class TaskNotStorableError extends Error {
  constructor(taskId: string, cause: unknown) {
    super(`task ${taskId} could not be stored: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'TaskNotStorableError';
  }
}

/** A task with this id exists already (its record is left as it was). */
export class TaskExistsError extends Error {
  constructor(taskId: string) {
    super(`task ${taskId} exists already`);
    this.name = 'TaskExistsError';
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
