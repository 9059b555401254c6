import type { ChatMessage, TaskPriority, TokenUsage } from '@mageagent/core';

/** What a pattern step asks of a model. */
export interface ChatRequest {
  messages: ChatMessage[];
  temperature?: number;
  maxTokens?: number;
  /** Passed through as OpenAI's `response_format` when the model's server supports structured output. */
  responseFormat?: Record<string, unknown>;
}

export interface ChatCallOptions {
  /** Aborting closes the HTTP request to the model server at once. */
  signal?: AbortSignal;
  /** Called with each content token chunk as it streams; when set the call streams. */
  onDelta?: (text: string) => void;
  /** Order among calls waiting for the same GPU host (default normal). */
  priority?: TaskPriority;
  /** Who is calling (a task id), for the host scheduler's bookkeeping and logs. */
  owner?: string;
}

export interface ChatResponse {
  content: string;
  usage: TokenUsage;
  finishReason: string | null;
  /** The model id the server says answered. */
  model: string;
  /** Milliseconds spent waiting for the GPU host's lease before the call started (0 when unscheduled). */
  waitMs?: number;
}

/**
 * One model on one server, as a pattern sees it. Implemented by the OpenAI-compatible
 * HTTP client and by in-process fakes in tests.
 */
export interface ChatModel {
  /** The model id sent to the server. */
  readonly id: string;
  /** The GPU host the model lives on (the unit of scheduling). */
  readonly host: string;
  /** Whether the server honours `response_format: { type: "json_schema" }` (from the role's config). */
  readonly structuredOutput?: boolean;
  /**
   * Runs one chat completion. Rejects with a MageError: ModelUnavailableError (retryable),
   * ModelTimeoutError (retryable), ModelResponseError (final) or CancelledError on abort.
   */
  chat(request: ChatRequest, options?: ChatCallOptions): Promise<ChatResponse>;
}
