import {
  CancelledError,
  inSpan,
  isMageError,
  isRetryable,
  ModelUnavailableError,
  type ChatMessage,
  type StepKind,
  type StepPosition,
  type StepRecord,
  type TaskOptions,
} from '@mageagent/core';
import type { PatternContext } from './context';

export interface GenerateStep {
  /** Step name as clients see it, e.g. "primary". */
  name: string;
  role: string;
  messages: ChatMessage[];
  options: TaskOptions;
  kind?: StepKind;
  /** The step's output is the task's final answer whatever happens next (see StepInfo.final). */
  final?: boolean;
  /** OpenAI `response_format`, sent only when the role's server supports structured output. */
  responseFormat?: Record<string, unknown>;
  /** Reads a verdict out of the answer, so `step.completed` and the record carry it. */
  interpret?: (content: string) => { verdict?: string; note?: string };
  /** Where the call sits in a fan-out (an aggregate's layer and reference, a select's sample). */
  position?: StepPosition;
}

/**
 * The options of a call whose answer is read by the pipeline, not by the user (a review, a
 * judgement, a selection, a critique, a route, tool calls): temperature 0, so the same answer
 * gets the same verdict instead of one drawn at the role's sampling temperature (0.7 by default).
 */
export const VERDICT_OPTIONS: Readonly<TaskOptions> = Object.freeze({ temperature: 0 });

export interface GenerateOutcome {
  content: string;
  step: StepRecord;
}

/** Per-task counter so step ids are unique within a task. */
export class StepIds {
  private next = 1;
  take(name: string): string {
    return `${name}-${this.next++}`;
  }
}

/**
 * One model call as a pattern step: `step.started`, streamed `delta`s, `step.completed`,
 * and a StepRecord. Retryable model errors are retried with exponential backoff, or after the
 * server's Retry-After when that is longer (up to `retry.retryAfterMaxMs`; beyond it the step
 * fails at once); each retry is preceded by a `warning` naming the wait and announces itself
 * with a new `step.started` (attempt > 1) for the same step id, which tells clients to drop
 * that step's earlier deltas.
 */
export async function generate(context: PatternContext, stepIds: StepIds, step: GenerateStep): Promise<GenerateOutcome> {
  const model = context.models.role(step.role);
  const stepId = stepIds.take(step.name);
  // A fan-out's call says where it sits and, when it set one, the temperature it was drawn at.
  const placement = {
    ...step.position,
    ...(step.options.temperature !== undefined && step.position !== undefined && { temperature: step.options.temperature }),
  };
  for (let attempt = 1; ; attempt += 1) {
    throwIfAborted(context.signal);
    const startedAt = new Date();
    context.events.emit({
      type: 'step.started',
      step: {
        id: stepId,
        name: step.name,
        role: step.role,
        model: model.id,
        host: model.host,
        attempt,
        ...(step.kind && { kind: step.kind }),
        ...(step.final && { final: true }),
        ...placement,
      },
    });
    const spanAttributes = {
      'mageagent.step.id': stepId,
      'mageagent.step.name': step.name,
      'mageagent.role': step.role,
      'mageagent.step.attempt': attempt,
      ...(step.kind && { 'mageagent.step.kind': step.kind }),
    };
    try {
      // A span per attempt, so a retried call shows each try with its error code and the backoff between.
      const response = await inSpan(`generate ${step.name}`, { attributes: spanAttributes }, () =>
        model.chat(
          {
            messages: step.messages,
            temperature: step.options.temperature,
            maxTokens: step.options.maxTokens,
            ...(step.responseFormat && model.structuredOutput && { responseFormat: step.responseFormat }),
          },
          {
            signal: context.signal,
            onDelta: (text) => context.events.emit({ type: 'delta', stepId, text }),
            ...(context.priority && { priority: context.priority }),
            ...(context.owner && { owner: context.owner }),
          },
        ),
      );
      const durationMs = Date.now() - startedAt.getTime();
      const waitMs = response.waitMs;
      const reading = step.interpret?.(response.content) ?? {};
      context.events.emit({
        type: 'step.completed',
        stepId,
        durationMs,
        usage: response.usage,
        ...(waitMs !== undefined && { waitMs }),
        ...reading,
      });
      return {
        content: response.content,
        step: {
          id: stepId,
          name: step.name,
          role: step.role,
          model: response.model || model.id,
          host: model.host,
          attempt,
          startedAt: startedAt.toISOString(),
          durationMs,
          ...(waitMs !== undefined && { waitMs }),
          usage: response.usage,
          ...(step.kind && { kind: step.kind }),
          ...placement,
          ...reading,
        },
      };
    } catch (error) {
      if (context.signal.aborted) throw abortReason(context.signal);
      if (!isRetryable(error) || !isMageError(error) || attempt > context.retry.retries) throw error;
      const retryAfterMs = error instanceof ModelUnavailableError ? error.retryAfterMs : undefined;
      if (retryAfterMs !== undefined && retryAfterMs > context.retry.retryAfterMaxMs) {
        throw new ModelUnavailableError(
          `${error.message}; not retried: the server asked for a wait of ${retryAfterMs} ms (Retry-After), longer than the ${context.retry.retryAfterMaxMs} ms a step waits`,
          { details: error.details, retryAfterMs, cause: error },
        );
      }
      const backoffMs = backoffDelay(context.retry.baseDelayMs, attempt);
      // The server knows its own load better than our backoff guesses it; the wait happens here,
      // after the call has given its host lease back, so other tasks use the host meanwhile.
      const serverAsked = retryAfterMs !== undefined && retryAfterMs > backoffMs;
      const delayMs = serverAsked ? retryAfterMs : backoffMs;
      context.logger?.warn('model call failed, retrying', { step: stepId, attempt, code: error.code, delayMs, retryAfterMs });
      context.events.emit({
        type: 'warning',
        stepId,
        message:
          `${error.code}: ${error.message}; retry ${attempt} of ${context.retry.retries} in ${delayMs} ms` +
          (serverAsked ? ' as the server asked (Retry-After)' : ''),
      });
      await sleep(delayMs, context.signal);
    }
  }
}

export function backoffDelay(baseDelayMs: number, attempt: number): number {
  const exponential = baseDelayMs * 2 ** (attempt - 1);
  return Math.round(exponential * (1 + Math.random() * 0.2));
}

/** The abort reason as an error: the worker aborts with TaskTimeoutError or CancelledError. */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new CancelledError();
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw abortReason(signal);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
