import type { ChatMessage, Logger, ResponseFormat, TaskEventPayload, TaskOptions, TaskPriority, ToolChoice, ToolDefinition } from '@mageagent/core';
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
  /**
   * Longest server-requested wait (Retry-After) a retry honours. A server asking for longer is
   * taken at its word that it will not serve us soon: the step fails at once, still retryable,
   * rather than park a task (and its worker slot) for minutes.
   */
  retryAfterMaxMs: number;
}

/** Everything a pattern may use: no Redis, no BullMQ, so patterns run in-process in tests. */
export interface PatternContext {
  models: ModelProvider;
  events: PatternEventSink;
  signal: AbortSignal;
  retry: RetryPolicy;
  logger?: Logger;
  /** The task's priority, passed to the host scheduler with every model call. */
  priority?: TaskPriority;
  /** Who the calls are for (the task id), for scheduler bookkeeping. */
  owner?: string;
}

export interface PatternInput {
  messages: ChatMessage[];
  options: TaskOptions;
  /** Tools the request allows (OpenAI function definitions); the built-in set when absent. */
  tools?: ToolDefinition[];
  toolChoice?: ToolChoice;
  /** Wanted shape of the final answer. */
  responseFormat?: ResponseFormat;
}
