import { randomFillSync } from 'node:crypto';
import { v7 as uuidv7, validate as isUuid } from 'uuid';
import {
  CreateTaskRequestSchema,
  NotFoundError,
  normaliseMessage,
  quote,
  ValidationError,
  zodIssuesToDetails,
  WebhookEvents,
  type TaskRecord,
} from '@mageagent/core';
import { checkToolRequest } from '@mageagent/patterns';
import type { ApiServices } from './services';

/**
 * Random bytes for task ids come from a pool refilled 256 ids at a time: one
 * randomFillSync per id was a measurable share of POST /tasks.
 */
const randomPool = Buffer.alloc(16 * 256);
let poolOffset = randomPool.length;

/** A time-ordered (v7) uuid: ids sort by creation time. */
export function newTaskId(): string {
  if (poolOffset === randomPool.length) {
    randomFillSync(randomPool);
    poolOffset = 0;
  }
  const random = randomPool.subarray(poolOffset, poolOffset + 16);
  poolOffset += 16;
  return uuidv7({ random });
}

/** Parses and enqueues a new task: its record and its job, written with the other tasks of this turn. */
export async function createTask(services: ApiServices, body: unknown): Promise<TaskRecord> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ValidationError('request body must be a JSON object (content-type: application/json)');
  }
  const parsed = CreateTaskRequestSchema.safeParse(body);
  if (!parsed.success) throw new ValidationError('invalid task request', zodIssuesToDetails(parsed.error));
  const request = parsed.data;
  const toolProblems = checkToolRequest(request.tools, request.toolChoice);
  if (toolProblems.length > 0) throw new ValidationError('invalid tools', toolProblems);
  const pattern = request.pattern ?? services.defaultPattern;
  if (!services.patterns.has(pattern)) {
    throw new ValidationError(`unknown pattern "${quote(pattern)}"`, [
      { path: 'pattern', message: `must be one of: ${services.patterns.names().join(', ')}` },
    ]);
  }
  const now = new Date();
  const task: TaskRecord = {
    id: newTaskId(),
    tenant: 'default',
    app: null,
    keyId: null,
    status: 'queued',
    pattern,
    priority: request.priority ?? 'normal',
    input: {
      messages:
        request.messages?.map(normaliseMessage) ?? [{ role: 'user', content: request.prompt ?? '' }],
      ...(request.tools && { tools: request.tools }),
      ...(request.toolChoice && { toolChoice: request.toolChoice }),
      ...(request.responseFormat && { responseFormat: request.responseFormat }),
    },
    options: request.options ?? {},
    metadata: request.metadata ?? {},
    createdAt: now.toISOString(),
    startedAt: null,
    completedAt: null,
    expiresAt: new Date(now.getTime() + services.store.retentionSeconds * 1000).toISOString(),
    attempt: 0,
    currentStep: null,
    result: null,
    error: null,
    lastSeq: 1,
    webhook: request.webhook ? { url: request.webhook.url, events: request.webhook.events ?? [...WebhookEvents], deliveries: [] } : null,
  };
  await services.intake.submit(task);
  return task;
}

/** A task id from a URL or payload: anything that is not a uuid cannot exist. */
export function requireTaskId(value: unknown): string {
  if (typeof value !== 'string' || !isUuid(value)) throw new NotFoundError(`task ${quote(value)} not found`);
  return value;
}

/**
 * Cancels a queued or running task. Cancelling a finished task (or twice) answers it unchanged.
 * The record turns `cancelled` first (atomically), so a worker that picks the job up later skips it
 * and a running worker's late result is refused; then the job is removed or its worker told.
 */
export async function cancelTask(services: ApiServices, taskId: string, reason = 'cancelled by request'): Promise<TaskRecord> {
  const outcome = await services.store.cancel(taskId, reason);
  if (!outcome) throw new NotFoundError(`task ${taskId} not found`);
  if (outcome.applied) {
    const removed = outcome.previousStatus === 'queued' && (await services.queue.remove(taskId));
    if (!removed) await services.cancels.broadcast(services.redis, taskId, reason);
  }
  return services.store.require(taskId);
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
