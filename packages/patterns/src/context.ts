import type { ChatMessage, Logger, TaskEventPayload, TaskOptions } from '@mageagent/core';
import type { ChatModel } from '@mageagent/models';

/** Where a pattern sends its events; the worker appends them to the task's log. */
export interface PatternEventSink {
  emit(event: TaskEventPayload): void;
}

/** Models by role: patterns never name model ids. */
export interface ModelProvider {
  role(name: string): ChatModel;
  has(name: string): boolean;
}

export interface RetryPolicy {
  /** Retries after the first try, for retryable model errors only. */
  retries: number;
  /** First backoff; doubles each retry, with up to 20 % jitter. */
  baseDelayMs: number;
}

/** Everything a pattern may use: no Redis, no BullMQ, so patterns run in-process in tests. */
export interface PatternContext {
  models: ModelProvider;
  events: PatternEventSink;
  signal: AbortSignal;
  retry: RetryPolicy;
  logger?: Logger;
}

export interface PatternInput {
  messages: ChatMessage[];
  options: TaskOptions;
}
