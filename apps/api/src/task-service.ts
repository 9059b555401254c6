import { randomFillSync } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { v7 as uuidv7, validate as isUuid } from 'uuid';
import {
  ConflictError,
  CreateTaskRequestSchema,
  IdempotencyConflictError,
  NotFoundError,
  normaliseMessage,
  PayloadTooLargeError,
  quote,
  TaskStatuses,
  ValidationError,
  WebhookEvents,
  z,
  zodIssuesToDetails,
  type ChatMessage,
  type Principal,
  type QuotaLimits,
  type TaskEvent,
  type TaskRecord,
} from '@mageagent/core';
import { checkToolRequest, type PatternRegistry } from '@mageagent/patterns';
import {
  causedByRedisOutage,
  followTask,
  type CancelChannel,
  type FollowOptions,
  type TaskEventBus,
  type TaskFollow,
  type TaskIntake,
  type TaskQueue,
  type TaskStore,
  type TaskSummary,
} from '@mageagent/tasks';
import { IdempotencyKeys } from './idempotency';
import type { PendingRequestCount } from './quotas/request-rate';

/** Who is calling and what their key may use: set by authentication on every request and socket. */
export interface Caller {
  principal: Principal;
  limits: QuotaLimits;
}

export interface TaskServiceDependencies {
  store: TaskStore;
  queue: TaskQueue;
  intake: TaskIntake;
  bus: TaskEventBus;
  cancels: CancelChannel;
  /** Publishes cancel requests. */
  redis: Redis | Cluster;
  idempotency: IdempotencyKeys;
  patterns: PatternRegistry;
  defaultPattern: string;
  /** Checks a webhook target when a task is created (throws a ValidationError naming `webhook.url`). */
  checkWebhook?: (url: string, tenant: string) => void;
  /** Told of each task accepted (not of replays): the api's metrics count them by pattern. */
  onCreated?: (task: TaskRecord) => void;
  /** A task that ended here, not on a worker: cancelled while it was still queued (no worker will count it). */
  onCancelledWhileQueued?: (task: TaskRecord) => void;
}

export interface CreateOutcome {
  task: TaskRecord;
  /** True when an Idempotency-Key matched an earlier request: this is that request's task. */
  replayed: boolean;
}

/** `GET /tasks` query. */
const ListQuerySchema = z.strictObject({
  status: z
    .string()
    .transform((value) => value.split(','))
    .pipe(z.array(z.enum(TaskStatuses)).min(1))
    .optional(),
  pattern: z.string().min(1).max(64).optional(),
  createdAfter: z.iso
    .datetime({ offset: true })
    .transform((value) => new Date(value))
    .optional(),
  // Decimal digits only: Number() would also take `0x10`, `1e1` or ` 5`.
  limit: z
    .string()
    .regex(/^\d{1,3}$/, 'must be a whole number from 1 to 100')
    .transform(Number)
    .pipe(z.number().min(1).max(100))
    .default(20),
  cursor: z.string().max(200).optional(),
});

/** How long a replayed request waits for the task of the request it repeats to be written. */
const REPLAY_WAIT_MS = 3_000;

/**
 * Random bytes for task ids come from a pool refilled 256 ids at a time: one
 * randomFillSync per id was a measurable share of POST /tasks.
 */
const randomPool = Buffer.alloc(16 * 256);
let poolOffset = randomPool.length;

/** A time-ordered (v7) uuid: ids sort by creation time (the tenant index relies on it). */
export function newTaskId(): string {
  if (poolOffset === randomPool.length) {
    randomFillSync(randomPool);
    poolOffset = 0;
  }
  const random = randomPool.subarray(poolOffset, poolOffset + 16);
  poolOffset += 16;
  return uuidv7({ random });
}

/**
 * The one door to the tasks. Every route and transport (REST, SSE, Socket.io, the OpenAI facade)
 * reads and writes tasks through here, with the caller's principal: another tenant's task is
 * answered exactly like an unknown one (the same error, after the same single read), so isolation
 * lives in this class and a new route cannot forget it.
 */
export class TaskService {
  constructor(private readonly deps: TaskServiceDependencies) {}

  get retentionSeconds(): number {
    return this.deps.store.retentionSeconds;
  }

  /**
   * Validates and enqueues a new task of the caller's tenant, under its key's quotas. With an
   * Idempotency-Key, a repeat of an earlier request (same tenant, key and body, within a day) gets
   * that request's task; the same key with another body is a conflict.
   * With `count`, a task written counts its request in the same step (a request that creates none
   * is left to the caller to count: see PendingRequestCount).
   */
  async create(caller: Caller, body: unknown, idempotencyKey?: string, count?: PendingRequestCount): Promise<CreateOutcome> {
    const task = this.newTask(caller, body);
    const limits = () => ({ maxActiveTasks: caller.limits.maxActiveTasks, requestsPerMinute: count?.withTask() });
    if (idempotencyKey === undefined) {
      await this.deps.intake.submit(task, limits());
      this.deps.onCreated?.(task);
      return { task, replayed: false };
    }
    const { tenant } = caller.principal;
    const bodyHash = IdempotencyKeys.bodyHash(body);
    const claim = await this.deps.idempotency.claim(tenant, idempotencyKey, { bodyHash, taskId: task.id });
    if (!claim.claimed) {
      if (claim.bodyHash !== bodyHash && claim.bodyHash !== IdempotencyKeys.legacyBodyHash(body)) {
        throw new IdempotencyConflictError('this Idempotency-Key was used with a different request body; use a new key for a new request');
      }
      return { task: await this.replayed(caller.principal, idempotencyKey, claim.taskId), replayed: true };
    }
    try {
      await this.deps.intake.submit(task, limits());
    } catch (error) {
      // The key is given back, so a retry works. While Redis is unavailable that would only time
      // out as well: the answer (a 503) does not wait for it.
      const release = this.deps.idempotency.release(tenant, idempotencyKey, task.id).catch(() => undefined);
      if (!causedByRedisOutage(error)) await release;
      throw error;
    }
    this.deps.onCreated?.(task);
    return { task, replayed: false };
  }

  async get(principal: Principal, rawId: unknown): Promise<TaskRecord> {
    const taskId = requireTaskId(rawId);
    return this.owned(principal, taskId, await this.deps.store.get(taskId));
  }

  /** The task and its events after `afterSeq`, read together. */
  async events(principal: Principal, rawId: unknown, afterSeq: number): Promise<{ task: TaskRecord; events: TaskEvent[] }> {
    const taskId = requireTaskId(rawId);
    const [task, events] = await Promise.all([this.deps.store.get(taskId), this.deps.store.readEvents(taskId, afterSeq)]);
    return { task: this.owned(principal, taskId, task), events };
  }

  /**
   * Cancels a queued or running task. Cancelling a finished task (or twice) answers it unchanged.
   * The record turns `cancelled` first (atomically), so a worker that picks the job up later skips
   * it and a running worker's late result is refused; then the job is removed or its worker told.
   */
  async cancel(principal: Principal, rawId: unknown, reason = 'cancelled by request'): Promise<TaskRecord> {
    const task = await this.get(principal, rawId);
    const outcome = await this.deps.store.cancel(task.id, reason);
    if (outcome?.applied) {
      // A worker that takes the job later finds the record cancelled and skips it uncounted.
      if (outcome.previousStatus === 'queued') this.deps.onCancelledWhileQueued?.(task);
      const removed = outcome.previousStatus === 'queued' && (await this.deps.queue.remove(task.id));
      if (!removed) await this.deps.cancels.broadcast(this.deps.redis, task.id, reason);
    }
    return this.deps.store.require(task.id);
  }

  /**
   * Follows a task this service returned to the caller (from `get` or `create`, so its ownership
   * is already checked); see followTask. Routes fetch first, then follow, so an unknown or foreign
   * task is a 404 before any stream starts.
   */
  follow(task: TaskRecord, options: FollowOptions): TaskFollow {
    return followTask(this.deps.store, this.deps.bus, task.id, options);
  }

  /** The caller's tasks, newest first, a page at a time. */
  async list(principal: Principal, rawQuery: unknown): Promise<{ tasks: TaskSummary[]; nextCursor: string | null }> {
    const parsed = ListQuerySchema.safeParse(rawQuery);
    if (!parsed.success) throw new ValidationError('invalid listing query', zodIssuesToDetails(parsed.error));
    const { cursor, ...query } = parsed.data;
    const page = await this.deps.store.list(principal.tenant, {
      ...query,
      ...(cursor !== undefined && { before: decodeCursor(cursor) }),
    });
    return { tasks: page.tasks, nextCursor: page.next === undefined ? null : encodeCursor(page.next) };
  }

  private owned(principal: Principal, taskId: string, task: TaskRecord | undefined): TaskRecord {
    if (task === undefined || task.tenant !== principal.tenant) throw taskNotFound(taskId);
    return task;
  }

  /**
   * The task of an earlier request with the same Idempotency-Key. That request may still be
   * writing it; if its creation failed, it gave the key back and the client should simply retry.
   */
  private async replayed(principal: Principal, idempotencyKey: string, taskId: string): Promise<TaskRecord> {
    const deadline = Date.now() + REPLAY_WAIT_MS;
    for (;;) {
      const task = await this.deps.store.get(taskId);
      if (task !== undefined) return this.owned(principal, taskId, task);
      if (!(await this.deps.idempotency.holds(principal.tenant, idempotencyKey, taskId)) || Date.now() > deadline) {
        throw new ConflictError('a request with this Idempotency-Key is still being processed, or failed; retry it');
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  private newTask(caller: Caller, body: unknown): TaskRecord {
    if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new ValidationError('request body must be a JSON object (content-type: application/json)');
    }
    const parsed = CreateTaskRequestSchema.safeParse(body);
    if (!parsed.success) throw new ValidationError('invalid task request', zodIssuesToDetails(parsed.error));
    const request = parsed.data;
    const toolProblems = checkToolRequest(request.tools, request.toolChoice);
    if (toolProblems.length > 0) throw new ValidationError('invalid tools', toolProblems);
    const pattern = request.pattern ?? this.deps.defaultPattern;
    if (!this.deps.patterns.has(pattern)) {
      throw new ValidationError(`unknown pattern "${quote(pattern)}"`, [
        { path: 'pattern', message: `must be one of: ${this.deps.patterns.names().join(', ')}` },
      ]);
    }
    const messages: ChatMessage[] = request.messages?.map(normaliseMessage) ?? [{ role: 'user', content: request.prompt ?? '' }];
    const promptBytes = messages.reduce((total, message) => total + Buffer.byteLength(message.content), 0);
    if (promptBytes > caller.limits.maxPromptBytes) {
      throw new PayloadTooLargeError(`the prompt is ${promptBytes} bytes; this key allows ${caller.limits.maxPromptBytes}`, {
        quota: 'maxPromptBytes',
        limit: caller.limits.maxPromptBytes,
        size: promptBytes,
      });
    }
    if (request.webhook) this.deps.checkWebhook?.(request.webhook.url, caller.principal.tenant);
    const { principal } = caller;
    const now = new Date();
    return {
      id: newTaskId(),
      tenant: principal.tenant,
      app: principal.app ?? null,
      keyId: principal.keyId,
      status: 'queued',
      pattern,
      priority: request.priority ?? 'normal',
      input: {
        messages,
        ...(request.tools && { tools: request.tools }),
        ...(request.toolChoice && { toolChoice: request.toolChoice }),
        ...(request.responseFormat && { responseFormat: request.responseFormat }),
      },
      options: request.options ?? {},
      metadata: request.metadata ?? {},
      createdAt: now.toISOString(),
      startedAt: null,
      completedAt: null,
      expiresAt: new Date(now.getTime() + this.deps.store.retentionSeconds * 1000).toISOString(),
      attempt: 0,
      currentStep: null,
      result: null,
      error: null,
      lastSeq: 1,
      webhook: request.webhook ? { url: request.webhook.url, events: request.webhook.events ?? [...WebhookEvents], deliveries: [] } : null,
    };
  }
}

/** Unknown and foreign task ids get this very error. */
function taskNotFound(taskId: unknown): NotFoundError {
  return new NotFoundError(`task ${quote(taskId)} not found`);
}

/** A task id from a URL or payload: anything that is not a uuid cannot exist. */
export function requireTaskId(value: unknown): string {
  if (typeof value !== 'string' || !isUuid(value)) throw taskNotFound(value);
  return value;
}

/** The resume point of a stream: `Last-Event-ID` header or `?after=`; must be a non-negative integer. */
export function parseResumePoint(value: unknown): number {
  if (value === undefined || value === '') return 0;
  const text = String(value);
  if (!/^\d{1,15}$/.test(text)) {
    throw new ValidationError('resume point must be a non-negative integer', [{ path: 'after', message: `got "${quote(text)}"` }]);
  }
  return Number(text);
}

/** Cursors are opaque to clients: the last task id of the page, wrapped so its form may change. */
function encodeCursor(lastId: string): string {
  return Buffer.from(`v1:${lastId}`).toString('base64url');
}

function decodeCursor(cursor: string): string {
  const text = Buffer.from(cursor, 'base64url').toString();
  const lastId = text.startsWith('v1:') ? text.slice(3) : '';
  if (!isUuid(lastId)) throw new ValidationError('invalid cursor', [{ path: 'cursor', message: 'pass the nextCursor of a previous page' }]);
  return lastId;
}
