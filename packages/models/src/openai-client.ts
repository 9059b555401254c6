import {
  CancelledError,
  ConfigError,
  ModelResponseError,
  ModelTimeoutError,
  ModelUnavailableError,
  isMageError,
  traceCarrier,
  type ChatMessage,
  type TokenUsage,
} from '@mageagent/core';
import { trace, type Attributes } from '@opentelemetry/api';
import type { RoleConfig } from './config';
import { retryAfterMs } from './retry-after';
import type { ChatCallOptions, ChatModel, ChatRequest, ChatResponse } from './types';

export interface ModelTimeouts {
  /** Time allowed until the first content token (streaming) or the whole answer (not streaming). */
  firstTokenMs: number;
  /** Time allowed for the whole call. */
  totalMs: number;
}

export interface OpenAICompatibleModelOptions {
  /** The model id sent as `model`. */
  id: string;
  /** The GPU host the model is resident on. */
  host: string;
  /** Base URL ending before `/chat/completions`, e.g. http://127.0.0.1:8080/v1. */
  endpoint: string;
  apiKey?: string;
  timeouts: ModelTimeouts;
  /** Used when a request leaves temperature or maxTokens unset. */
  defaults?: { temperature?: number; maxTokens?: number };
  /** The config role this model serves; only used to make error messages name it. */
  role?: string;
  /** Whether the server honours `response_format: { type: "json_schema" }`. */
  structuredOutput?: boolean;
}

/** Longest server error body quoted in error details: enough to diagnose, small enough to log. */
const ERROR_BODY_EXCERPT_CHARS = 500;
/** Rough characters-per-token ratio of English text, for servers that report no usage. */
const CHARS_PER_TOKEN = 4;

/** Why the internal controller aborted the HTTP request; decides which error the caller sees. */
type AbortCause = 'cancelled' | 'first-token-timeout' | 'total-timeout' | 'finished';

/** The parts of an OpenAI chat.completion(.chunk) this client reads; everything is optional because servers differ. */
interface CompletionPayload {
  model?: unknown;
  choices?: unknown;
  usage?: unknown;
  error?: unknown;
}

/**
 * A model behind an OpenAI-compatible `/chat/completions` endpoint (mlx_lm.server, llama.cpp,
 * vLLM, LM Studio, Ollama, the MageAgent simulator). Uses Node's global fetch.
 */
export class OpenAICompatibleModel implements ChatModel {
  readonly id: string;
  readonly host: string;
  readonly structuredOutput: boolean;
  readonly endpoint: string;
  private readonly apiKey: string | undefined;
  private readonly timeouts: ModelTimeouts;
  private readonly defaults: { temperature?: number; maxTokens?: number };
  private readonly label: string;
  /** `server.address`/`server.port` for the call's span (never the URL's credentials or path). */
  private readonly serverAttributes: Attributes;

  constructor(options: OpenAICompatibleModelOptions) {
    this.id = options.id;
    this.host = options.host;
    this.structuredOutput = options.structuredOutput ?? false;
    // A trailing slash would produce `//chat/completions`, which some servers 404.
    this.endpoint = options.endpoint.replace(/\/+$/, '');
    this.apiKey = options.apiKey;
    this.timeouts = options.timeouts;
    this.defaults = options.defaults ?? {};
    this.label = options.role === undefined ? `model ${options.id}` : `model ${options.id} (role ${options.role})`;
    this.serverAttributes = serverAttributesOf(this.endpoint);
  }

  /** Builds the client for one config role; the API key comes from `env[roleConfig.apiKeyEnv]`. */
  static fromRole(roleName: string, roleConfig: RoleConfig, env: NodeJS.ProcessEnv = process.env): OpenAICompatibleModel {
    let apiKey: string | undefined;
    if (roleConfig.apiKeyEnv !== undefined) {
      apiKey = env[roleConfig.apiKeyEnv];
      // Fail at start-up rather than with a 401 on the first task.
      if (apiKey === undefined || apiKey === '') {
        throw new ConfigError(`role "${roleName}": environment variable ${roleConfig.apiKeyEnv} (apiKeyEnv) is not set`);
      }
    }
    return new OpenAICompatibleModel({
      id: roleConfig.model,
      host: roleConfig.host,
      endpoint: roleConfig.endpoint,
      apiKey,
      timeouts: roleConfig.timeouts,
      defaults: { temperature: roleConfig.temperature, maxTokens: roleConfig.maxTokens },
      role: roleName,
      structuredOutput: roleConfig.structuredOutput,
    });
  }

  async chat(request: ChatRequest, options: ChatCallOptions = {}): Promise<ChatResponse> {
    const { signal: callerSignal, onDelta } = options;
    if (callerSignal?.aborted) throw new CancelledError(`${this.label}: call cancelled before it started`);

    const streaming = onDelta !== undefined;
    // One controller owns the HTTP request; the caller's signal and both timers feed it, and
    // `abortCause` records which one fired so the rejection can be mapped to the right error.
    // Plain timers (not AbortSignal.timeout) so they can be cleared and never keep a process alive.
    const controller = new AbortController();
    let abortCause: AbortCause | undefined;
    const abortWith = (cause: AbortCause): void => {
      if (abortCause !== undefined) return;
      abortCause = cause;
      controller.abort(cause);
    };
    const onCallerAbort = (): void => abortWith('cancelled');
    callerSignal?.addEventListener('abort', onCallerAbort, { once: true });
    let firstTokenTimer: NodeJS.Timeout | undefined = setTimeout(() => abortWith('first-token-timeout'), this.timeouts.firstTokenMs);
    const totalTimer = setTimeout(() => abortWith('total-timeout'), this.timeouts.totalMs);
    const firstTokenArrived = (): void => {
      if (firstTokenTimer === undefined) return;
      clearTimeout(firstTokenTimer);
      firstTokenTimer = undefined;
    };

    try {
      const response = await this.send(request, streaming, controller.signal);
      if (!response.ok) throw await this.httpError(response);
      return streaming ? await this.readStream(response, request, onDelta, firstTokenArrived) : await this.readJson(response, request);
    } catch (error) {
      // The caller's own onDelta failure is theirs to handle, not a model error.
      if (error instanceof DeltaCallbackFailure) throw error.original;
      throw this.classify(error, abortCause);
    } finally {
      clearTimeout(firstTokenTimer);
      clearTimeout(totalTimer);
      callerSignal?.removeEventListener('abort', onCallerAbort);
      // On success the body is fully read and this is a no-op; on any failure it drops the
      // connection so the server stops generating for a caller who is gone.
      abortWith('finished');
    }
  }

  private async send(request: ChatRequest, streaming: boolean, signal: AbortSignal): Promise<Response> {
    const body: Record<string, unknown> = {
      model: this.id,
      messages: request.messages,
      temperature: request.temperature ?? this.defaults.temperature,
      max_tokens: request.maxTokens ?? this.defaults.maxTokens,
      stream: streaming,
    };
    if (streaming) body.stream_options = { include_usage: true };
    if (request.responseFormat !== undefined) body.response_format = request.responseFormat;
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: streaming ? 'text/event-stream' : 'application/json',
    };
    if (this.apiKey !== undefined) headers.authorization = `Bearer ${this.apiKey}`;
    // The call's trace context (W3C traceparent/tracestate), so a traced model server continues the trace.
    Object.assign(headers, traceCarrier());
    trace.getActiveSpan()?.setAttributes(this.serverAttributes);
    return fetch(`${this.endpoint}/chat/completions`, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      signal,
    });
  }

  /**
   * 5xx and 429 may pass (overload, restart, model loading); other statuses will not. A passing
   * failure carries the server's Retry-After, if any, so the retry loop can wait as long as asked.
   */
  private async httpError(response: Response): Promise<Error> {
    const text = await response.text();
    const details = { status: response.status, body: text.slice(0, ERROR_BODY_EXCERPT_CHARS) };
    const message = `${this.label}: server answered HTTP ${response.status}`;
    if (response.status >= 500 || response.status === 429) {
      const retryAfter = retryAfterMs(response.headers);
      if (retryAfter === undefined) return new ModelUnavailableError(message, { details });
      return new ModelUnavailableError(message, { details: { ...details, retryAfterMs: retryAfter }, retryAfterMs: retryAfter });
    }
    return new ModelResponseError(message, { details });
  }

  private async readJson(response: Response, request: ChatRequest): Promise<ChatResponse> {
    const text = await response.text();
    const payload = this.parsePayload(text);
    this.throwIfErrorPayload(payload);
    const choice = firstChoice(payload);
    const message = isRecord(choice?.message) ? choice.message : undefined;
    if (choice === undefined || message === undefined) {
      throw new ModelResponseError(`${this.label}: answer has no choices[0].message`, {
        details: { body: text.slice(0, ERROR_BODY_EXCERPT_CHARS) },
      });
    }
    const content = typeof message.content === 'string' ? message.content : '';
    return {
      content,
      usage: readUsage(payload.usage) ?? estimateUsage(request.messages, content, undefined),
      finishReason: typeof choice.finish_reason === 'string' ? choice.finish_reason : null,
      model: typeof payload.model === 'string' && payload.model !== '' ? payload.model : this.id,
    };
  }

  private async readStream(response: Response, request: ChatRequest, onDelta: (text: string) => void, firstTokenArrived: () => void): Promise<ChatResponse> {
    if (response.body === null) throw new ModelResponseError(`${this.label}: streaming answer has no body`);
    const reader = response.body.getReader();
    // stream:true keeps a multi-byte character split across network chunks intact.
    const decoder = new TextDecoder('utf-8');
    let pending = '';
    let content = '';
    let contentChunks = 0;
    let usage: TokenUsage | undefined;
    let finishReason: string | null = null;
    let model: string | undefined;
    let done = false;

    const handleLine = (rawLine: string): void => {
      const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
      // Blank lines end SSE events; lines starting with ':' are comments (mlx_lm.server's keepalives).
      if (line === '' || line.startsWith(':')) return;
      if (!line.startsWith('data:')) return; // `event:`, `id:`, `retry:` carry nothing we need.
      // Each `data:` line is handled as a whole event: every OpenAI-compatible server puts one JSON
      // document on one line, and some separate events with a single newline instead of a blank line.
      const data = line.slice(5).trimStart();
      if (data === '[DONE]') {
        done = true;
        return;
      }
      const payload = this.parsePayload(data);
      this.throwIfErrorPayload(payload);
      if (typeof payload.model === 'string' && payload.model !== '') model = payload.model;
      const chunkUsage = readUsage(payload.usage);
      if (chunkUsage !== undefined) usage = chunkUsage;
      const choice = firstChoice(payload);
      if (choice === undefined) return; // e.g. the final usage-only chunk with `choices: []`
      const delta = isRecord(choice.delta) ? choice.delta : undefined;
      const piece = typeof delta?.content === 'string' ? delta.content : '';
      if (typeof choice.finish_reason === 'string') finishReason = choice.finish_reason;
      // The role-only first chunk is not a token: the first-token clock keeps running through it.
      if (piece !== '' || finishReason !== null) firstTokenArrived();
      if (piece !== '') {
        content += piece;
        contentChunks += 1;
        try {
          onDelta(piece);
        } catch (error) {
          throw new DeltaCallbackFailure(error);
        }
      }
    };

    while (!done) {
      const { value, done: bodyEnded } = await reader.read();
      // Servers that omit `data: [DONE]` end the stream by ending the body.
      pending += bodyEnded ? decoder.decode() : decoder.decode(value, { stream: true });
      let newline = pending.indexOf('\n');
      while (newline !== -1 && !done) {
        handleLine(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        newline = pending.indexOf('\n');
      }
      if (bodyEnded) {
        if (!done && pending !== '') handleLine(pending);
        break;
      }
    }
    if (done) {
      // Anything after [DONE] is ignored; cancelling lets fetch release the connection.
      await reader.cancel().catch(() => undefined);
    }

    return {
      content,
      usage: usage ?? estimateUsage(request.messages, content, contentChunks),
      finishReason,
      model: model ?? this.id,
    };
  }

  private parsePayload(text: string): CompletionPayload {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ModelResponseError(`${this.label}: server sent malformed JSON`, {
        details: { body: text.slice(0, ERROR_BODY_EXCERPT_CHARS) },
      });
    }
    if (!isRecord(parsed)) {
      throw new ModelResponseError(`${this.label}: server sent JSON that is not an object`, {
        details: { body: text.slice(0, ERROR_BODY_EXCERPT_CHARS) },
      });
    }
    return parsed;
  }

  /** vLLM and llama.cpp report failures inside a 200 answer or mid-stream as `{ error: {...} }`. */
  private throwIfErrorPayload(payload: CompletionPayload): void {
    if (payload.error === undefined || payload.error === null) return;
    const error = isRecord(payload.error) ? payload.error : { message: String(payload.error) };
    const status = typeof error.code === 'number' ? error.code : undefined;
    const message = `${this.label}: server reported an error: ${typeof error.message === 'string' ? error.message : 'unknown'}`;
    const details = { status, body: JSON.stringify(payload.error).slice(0, ERROR_BODY_EXCERPT_CHARS) };
    if (status !== undefined && (status >= 500 || status === 429)) throw new ModelUnavailableError(message, { details });
    throw new ModelResponseError(message, { details });
  }

  /** Maps whatever fetch or the body reader threw to one of the documented MageErrors. */
  private classify(error: unknown, abortCause: AbortCause | undefined): Error {
    // The internal abort wins: fetch rejects with the abort reason or a generic AbortError,
    // neither of which says whether the caller or a timer pulled the plug.
    if (abortCause === 'cancelled') return new CancelledError(`${this.label}: call cancelled`);
    if (abortCause === 'first-token-timeout') {
      return new ModelTimeoutError(`${this.label}: no first token within ${this.timeouts.firstTokenMs} ms`, {
        details: { timeoutMs: this.timeouts.firstTokenMs, kind: 'firstToken' },
      });
    }
    if (abortCause === 'total-timeout') {
      return new ModelTimeoutError(`${this.label}: call did not finish within ${this.timeouts.totalMs} ms`, {
        details: { timeoutMs: this.timeouts.totalMs, kind: 'total' },
      });
    }
    if (isMageError(error)) return error;
    // Anything else is the network: refused, reset, DNS, socket closed mid-body (undici's
    // `TypeError: fetch failed` / `terminated`, with the system error as `cause`).
    const networkCode = systemErrorCode(error);
    const reason = errorMessage(error);
    // undici's own 300 s header/body timeouts can fire before a generous configured timeout does.
    if (networkCode === 'UND_ERR_HEADERS_TIMEOUT' || networkCode === 'UND_ERR_BODY_TIMEOUT') {
      return new ModelTimeoutError(`${this.label}: server went silent (${networkCode})`, {
        details: { code: networkCode, kind: 'transport' },
        cause: error,
      });
    }
    return new ModelUnavailableError(`${this.label}: cannot reach ${this.endpoint}: ${networkCode ?? reason}`, {
      details: { endpoint: this.endpoint, code: networkCode, reason },
      cause: error,
    });
  }
}

/** Carries an exception thrown by the caller's onDelta past the model-error mapping. */
function serverAttributesOf(endpoint: string): Attributes {
  try {
    const url = new URL(endpoint);
    const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
    return { 'server.address': url.hostname, 'server.port': port };
  } catch {
    return {};
  }
}

class DeltaCallbackFailure extends Error {
  constructor(readonly original: unknown) {
    super('onDelta threw');
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function firstChoice(payload: CompletionPayload): Record<string, unknown> | undefined {
  if (!Array.isArray(payload.choices)) return undefined;
  const choice: unknown = payload.choices[0];
  return isRecord(choice) ? choice : undefined;
}

function readUsage(value: unknown): TokenUsage | undefined {
  if (!isRecord(value)) return undefined;
  const promptTokens = typeof value.prompt_tokens === 'number' ? value.prompt_tokens : 0;
  const completionTokens = typeof value.completion_tokens === 'number' ? value.completion_tokens : 0;
  const totalTokens = typeof value.total_tokens === 'number' ? value.total_tokens : promptTokens + completionTokens;
  return { promptTokens, completionTokens, totalTokens };
}

/**
 * For servers that send no usage: ~4 characters per token for the prompt; for the completion the
 * number of streamed chunks (servers send about one token per chunk) or, failing that, characters.
 */
function estimateUsage(messages: ChatMessage[], content: string, contentChunks: number | undefined): TokenUsage {
  const promptChars = messages.reduce((sum, message) => sum + message.content.length, 0);
  const promptTokens = Math.ceil(promptChars / CHARS_PER_TOKEN);
  const completionTokens = contentChunks ?? Math.ceil(content.length / CHARS_PER_TOKEN);
  return { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens };
}

/**
 * The errno-style code (ECONNREFUSED, ECONNRESET, ENOTFOUND, UND_ERR_SOCKET, ...) behind a fetch failure.
 * Duck-typed rather than `instanceof Error`: undici's errors come from Node's own realm, which is
 * not the realm of code running under jest's vm sandbox.
 */
function systemErrorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth += 1) {
    const candidate = current as { code?: unknown; cause?: unknown; errors?: unknown };
    if (typeof candidate.code === 'string') return candidate.code;
    // AggregateError (happy-eyeballs: both ::1 and 127.0.0.1 refused) holds the codes in `errors`.
    current = Array.isArray(candidate.errors) && candidate.errors.length > 0 ? candidate.errors[0] : candidate.cause;
  }
  return undefined;
}

function errorMessage(error: unknown): string {
  if (typeof error === 'object' && error !== null && typeof (error as { message?: unknown }).message === 'string') {
    return (error as { message: string }).message;
  }
  return String(error);
}
