import { WaitingError, type Job } from 'bullmq';
import {
  CancelledError,
  contextFromCarrier,
  isMageError,
  setSpanError,
  SpanKind,
  tracer,
  type Span,
  TaskTimeoutError,
  type Logger,
  type TaskErrorInfo,
  type TaskRecord,
} from '@mageagent/core';
import { runPattern, toolSpecsFor, type ModelProvider, type PatternRegistry, type RetryPolicy } from '@mageagent/patterns';
import { TASK_QUEUE_NAME, type TaskJobData, type TaskStore } from '@mageagent/tasks';
import { TaskEventWriter } from './event-writer';
import type { TaskObserver, TaskOutcome } from './metrics';

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
  /** Told when tasks start and end (the worker's metrics); none in unit tests that do not care. */
  observer?: TaskObserver;
}

/** Why a task is being started: the `reason` of its `processing` status event. */
function startReason(task: TaskRecord): string | undefined {
  if (task.attempt === 0) return undefined;
  return task.status === 'queued' ? 'started again after its previous worker handed it back' : 'restarted after its previous worker stopped';
}

/**
 * The BullMQ processor: runs one task's pattern and records its outcome in the task store.
 * The task record, not the job, is the source of truth: a job whose task is already
 * terminal (cancelled while queued) is finished without running.
 *
 * Every write of a run is fenced by the attempt it started: if this worker stalls and another
 * takes the task over, this one's late events and result are refused and it stops.
 */
export function createTaskProcessor(deps: ProcessorDependencies) {
  const run = runTask(deps);
  // One span per run of a task, continuing the trace of the request that created it (its context
  // rides in the job data), so the api's request span is this span's ancestor across the queue.
  return async (job: Job<TaskJobData>, token?: string, bullSignal?: AbortSignal): Promise<void> => {
    const attributes = {
      'mageagent.task.id': job.data.taskId,
      'messaging.system': 'bullmq',
      'messaging.operation.type': 'process',
      'messaging.destination.name': TASK_QUEUE_NAME,
    };
    return tracer().startActiveSpan('task run', { kind: SpanKind.CONSUMER, attributes }, contextFromCarrier(job.data.trace), async (span) => {
      try {
        span.setAttribute('mageagent.task.status', await run(job, token, bullSignal, span));
      } catch (error) {
        if (error instanceof WaitingError) span.setAttribute('mageagent.task.status', 'handed_back');
        else setSpanError(span, error);
        throw error;
      } finally {
        span.end();
      }
    });
  };
}

/** How a run ended, as the task span's `mageagent.task.status`. */
type RunOutcome = 'completed' | 'failed' | 'cancelled' | 'skipped' | 'not_recorded';

function runTask(deps: ProcessorDependencies) {
  return async (job: Job<TaskJobData>, token: string | undefined, bullSignal: AbortSignal | undefined, span: Span): Promise<RunOutcome> => {
    const { taskId } = job.data;
    const logger = deps.logger.child({ taskId, jobId: job.id });
    const task = await deps.store.get(taskId);
    if (!task) {
      logger.warn('task record missing (expired?), dropping job');
      return 'skipped';
    }
    const attempt = task.attempt + 1;
    span.setAttributes({
      'mageagent.task.pattern': task.pattern,
      'mageagent.tenant': task.tenant,
      'mageagent.task.priority': task.priority,
      'mageagent.task.attempt': attempt,
    });
    const reason = startReason(task);
    const started = await deps.store.transition(taskId, {
      from: ['queued', 'processing'],
      to: 'processing',
      // Compare-and-set: of two workers starting the same task, only one gets this attempt.
      fence: task.attempt,
      fields: { attempt: String(attempt), startedAt: task.startedAt ?? new Date().toISOString() },
      statusEvent: { attempt, worker: deps.workerName, ...(reason !== undefined && { reason }) },
    });
    if (!started?.applied) {
      logger.info('task is no longer runnable, skipping', { status: started?.applied === false ? started.currentStatus : 'missing' });
      return 'skipped';
    }

    const startedAt = Date.now();
    // Queue wait is creation to first start; a restart's wait is a crash or a hand-back, not the queue's.
    if (task.attempt === 0) deps.observer?.taskStarted(task.pattern, startedAt - Date.parse(task.createdAt));
    const finished = (status: TaskOutcome): void => deps.observer?.taskFinished(task.pattern, status, Date.now() - startedAt);

    const timeoutMs = task.options.timeoutMs ?? deps.defaultTimeoutMs;
    const local = new AbortController();
    const timer = setTimeout(() => local.abort(new TaskTimeoutError(timeoutMs)), timeoutMs);
    const signal = bullSignal ? AbortSignal.any([local.signal, bullSignal]) : local.signal;
    const events = new TaskEventWriter(deps.store, taskId, deps.deltaFlushMs, attempt, () =>
      local.abort(new CancelledError('task ended or was taken over while running')),
    );

    try {
      // The request's tool schemas are compiled first (the api checked them without compiling):
      // one that ajv refuses fails the task now, before any model call is spent on it.
      if (task.input.tools !== undefined) toolSpecsFor(task.input);
      const result = await runPattern(
        deps.patterns,
        task.pattern,
        { ...task.input, options: task.options },
        {
          models: deps.models,
          events,
          signal,
          retry: deps.retry,
          logger,
          priority: task.priority,
          owner: taskId,
        },
      );
      await events.flush();
      const completed = await deps.store.complete(taskId, result, attempt);
      // Not applied: cancelled meanwhile (counted as such) or taken over by another worker (its to count).
      if (completed?.applied) finished('completed');
      else if (completed?.applied === false && completed.currentStatus === 'cancelled') finished('cancelled');
      logger.info(completed?.applied ? 'task completed' : 'task ended before its result landed', {
        steps: result.steps.length,
      });
      span.setAttributes({ 'gen_ai.usage.input_tokens': result.usage.promptTokens, 'gen_ai.usage.output_tokens': result.usage.completionTokens });
      if (completed?.applied) return 'completed';
      return completed?.applied === false && completed.currentStatus === 'cancelled' ? 'cancelled' : 'not_recorded';
    } catch (error) {
      await events.flush().catch(() => undefined);
      if (signal.aborted && !(signal.reason instanceof TaskTimeoutError)) {
        const endedByStore = local.signal.aborted && local.signal.reason instanceof CancelledError;
        if (!endedByStore && deps.isShuttingDown()) {
          return await handBack(deps, job, token, attempt, logger);
        }
        logger.info('task cancelled while running');
        finished('cancelled');
        // Not a fault of the service: the span keeps an unset status, its status attribute says why.
        return 'cancelled';
      }
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      const failure = signal.aborted ? signal.reason : error;
      if (!isMageError(failure)) {
        // Bugs and Redis errors other than an outage (which the connection waits out): let
        // BullMQ retry the job, unless this was its last attempt.
        if (!lastAttempt) throw failure;
        logger.error('task failed with an unexpected error', { error: String(failure) });
        await deps.store.fail(taskId, { code: 'INTERNAL', message: 'internal error while running the task', retryable: false }, attempt);
        finished('failed');
        setSpanError(span, failure);
        return 'failed';
      }
      const info: TaskErrorInfo = { code: failure.code, message: failure.message, retryable: failure.retryable };
      logger.warn('task failed', { code: failure.code });
      await deps.store.fail(taskId, info, attempt);
      finished('failed');
      setSpanError(span, failure);
      return 'failed';
    } finally {
      clearTimeout(timer);
    }
  };
}

/**
 * Gives a task back to the queue because this worker is stopping: the record goes back to
 * `queued` (saying why), and the job back to waiting, in front of its priority, without using
 * one of its attempts. Another worker starts it from the beginning. If the process dies before
 * this is done, BullMQ's stalled-job check hands the job on instead, as after a crash.
 */
async function handBack(deps: ProcessorDependencies, job: Job<TaskJobData>, token: string | undefined, attempt: number, logger: Logger): Promise<never> {
  await deps.store.transition(job.data.taskId, {
    from: ['processing'],
    to: 'queued',
    fence: attempt,
    fields: { currentStep: '' },
    statusEvent: { attempt, worker: deps.workerName, reason: 'handed back to the queue: its worker is shutting down' },
  });
  await job.moveToWait(token);
  logger.info('task handed back to the queue');
  // Tells BullMQ the job has been moved already: not a failure, no attempt used.
  throw new WaitingError();
}
