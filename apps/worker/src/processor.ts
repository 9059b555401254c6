import type { Job } from 'bullmq';
import {
  CancelledError,
  isMageError,
  TaskTimeoutError,
  type Logger,
  type TaskErrorInfo,
} from '@mageagent/core';
import { runPattern, type ModelProvider, type PatternRegistry, type RetryPolicy } from '@mageagent/patterns';
import type { TaskJobData, TaskStore } from '@mageagent/tasks';
import { TaskEventWriter } from './event-writer';

export interface ProcessorDependencies {
  store: TaskStore;
  patterns: PatternRegistry;
  models: ModelProvider;
  retry: RetryPolicy;
  defaultTimeoutMs: number;
  deltaFlushMs: number;
  logger: Logger;
  /** Names this worker process in `processing` events (host:pid). */
  workerName: string;
  /** True once the process is stopping: an abort then hands the job back instead of failing the task. */
  isShuttingDown: () => boolean;
}

/** Thrown to hand a job back to BullMQ (it will be retried), leaving the task `processing`. */
export class HandBackError extends Error {
  override readonly name = 'HandBackError';
}

/**
 * The BullMQ processor: runs one task's pattern and records its outcome in the task store.
 * The task record, not the job, is the source of truth: a job whose task is already
 * terminal (cancelled while queued) is finished without running.
 */
export function createTaskProcessor(deps: ProcessorDependencies) {
  return async (job: Job<TaskJobData>, _token?: string, bullSignal?: AbortSignal): Promise<void> => {
    const { taskId } = job.data;
    const logger = deps.logger.child({ taskId, jobId: job.id });
    const task = await deps.store.get(taskId);
    if (!task) {
      logger.warn('task record missing (expired?), dropping job');
      return;
    }
    const attempt = task.attempt + 1;
    const started = await deps.store.transition(taskId, {
      from: ['queued', 'processing'],
      to: 'processing',
      fields: { attempt: String(attempt), startedAt: task.startedAt ?? new Date().toISOString() },
      statusEvent:
        attempt > 1
          ? { attempt, worker: deps.workerName, reason: 'restarted after its previous worker stopped' }
          : { attempt, worker: deps.workerName },
    });
    if (!started?.applied) {
      logger.info('task is no longer runnable, skipping', { status: started?.applied === false ? started.currentStatus : 'missing' });
      return;
    }

    const timeoutMs = task.options.timeoutMs ?? deps.defaultTimeoutMs;
    const local = new AbortController();
    const timer = setTimeout(() => local.abort(new TaskTimeoutError(timeoutMs)), timeoutMs);
    const signal = bullSignal ? AbortSignal.any([local.signal, bullSignal]) : local.signal;
    const events = new TaskEventWriter(deps.store, taskId, deps.deltaFlushMs, () =>
      local.abort(new CancelledError('task ended while running')),
    );

    try {
      const result = await runPattern(deps.patterns, task.pattern, { messages: task.input.messages, options: task.options }, {
        models: deps.models,
        events,
        signal,
        retry: deps.retry,
        logger,
        priority: task.priority,
        owner: taskId,
      });
      await events.flush();
      const completed = await deps.store.complete(taskId, result);
      logger.info(completed?.applied ? 'task completed' : 'task ended before its result landed', {
        steps: result.steps.length,
      });
    } catch (error) {
      await events.flush().catch(() => undefined);
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (signal.aborted && !(signal.reason instanceof TaskTimeoutError)) {
        const endedByStore = local.signal.aborted && local.signal.reason instanceof CancelledError;
        if (!endedByStore && deps.isShuttingDown()) {
          if (!lastAttempt) throw new HandBackError('worker is shutting down; the task will run again');
          await deps.store.fail(taskId, { code: 'INTERNAL', message: 'worker stopped during the last attempt', retryable: true });
          return;
        }
        logger.info('task cancelled while running');
        return;
      }
      const reason = signal.aborted ? signal.reason : error;
      if (!isMageError(reason)) {
        // Redis blips and bugs: let BullMQ retry the job, unless this was its last attempt.
        if (!lastAttempt) throw reason;
        logger.error('task failed with an unexpected error', { error: String(reason) });
        await deps.store.fail(taskId, { code: 'INTERNAL', message: 'internal error while running the task', retryable: false });
        return;
      }
      const info: TaskErrorInfo = { code: reason.code, message: reason.message, retryable: reason.retryable };
      logger.warn('task failed', { code: reason.code });
      await deps.store.fail(taskId, info);
    } finally {
      clearTimeout(timer);
    }
  };
}
