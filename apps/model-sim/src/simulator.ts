import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { context, propagation } from '@opentelemetry/api';
import { SpanKind, SpanStatusCode, tracer } from '@mageagent/core';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '@mageagent/core';
import type { ModelsConfig } from '@mageagent/models';
import { directivesForRoles, numericDirective, parseDirectives, type Directives } from './directives';
import { FailTimesCounter } from './fail-times';
import { RequestCounter } from './request-counter';
import { detectCallRole, generateInRole, systemTextOf, type CallRole } from './roles';
import { splitIntoTokens } from './text';

// The directive and text helpers are part of the simulator's API, so callers keep one import.
export { directivesForRoles, numericDirective, parseDirectives, stripDirectives, textDirective, type Directives } from './directives';
export { fnv1a, generateProse, inventText, splitIntoTokens } from './text';
export { detectCallRole, excerptOf, generateInRole, systemTextOf, type CallRole } from './roles';

/**
 * The model SIMULATOR: an OpenAI-compatible chat server that invents deterministic text with
 * configurable latency. It is the embedded default backend and the backend of tests and benchmarks;
 * it never runs a real model. Plain node:http because it sits on the benchmarks' hot path.
 *
 * Sampling: a call sent with `temperature` above 0 is a sample. The first sample of a request
 * (same model, same messages) answers the deterministic text, the one the same request gets at
 * temperature 0 or without one; every later sample of it answers another variant (the n-th repeat
 * variant n), never the same text twice. So samples a pattern draws at once all differ, while a
 * single call, sampled as the config's role temperatures make nearly every call, still answers
 * what a test can predict. Verdicts (PASS/FAIL, a judge's letter, a selection, a route, tool
 * calls) never depend on the sample: directives steer them. The counts live in memory like
 * `fail-times=` counts (at most 10 000 requests) and `POST /sim/reset` clears them.
 */

/** Shown as `owned_by` in /v1/models so nobody mistakes simulated answers for a real model's. */
export const SIMULATOR_OWNER = 'mageagent-simulator';

/** One model the simulator serves, with the speed it pretends to have. */
export interface SimulatedModel {
  id: string;
  /** The GPU host the model is configured on; requests without a /hosts/<host> prefix count there. */
  host: string;
  /** 0 means infinitely fast. */
  tokensPerSecond: number;
  ttftMs: number;
  /** Answer length when neither a directive nor max_tokens says otherwise. */
  defaultTokens: number;
  /** The config roles served by this model id, so a generator can answer in a role's style. */
  roles: string[];
}

export type SimulatedModelInput = Pick<SimulatedModel, 'id'> & Partial<Omit<SimulatedModel, 'id'>>;

export const SIMULATED_MODEL_DEFAULTS = { tokensPerSecond: 50, ttftMs: 200, defaultTokens: 60 } as const;

/** A chat request as the simulator read it; `content` is already flattened to text. */
export interface SimulatedChatRequest {
  model: string;
  messages: Array<{ role: string; content: string }>;
  /** max_tokens (or max_completion_tokens) when the client sent one. */
  maxTokens?: number;
  stream: boolean;
  includeUsage: boolean;
  /** The whole JSON body, for generators that look at more than the messages (response_format, tools). */
  body: Record<string, unknown>;
  /** The sampling temperature, when the client sent a number. */
  temperature?: number;
  /**
   * Which sample of its request this call is: 0 (or absent) for the deterministic text, n for the
   * n-th repeat of a sampled request, whose text must differ from every other variant's.
   */
  variant?: number;
}

export interface GeneratedAnswer {
  text: string;
  /** Defaults to "stop"; the simulator turns it into "length" when max_tokens cuts the text. */
  finishReason?: 'stop' | 'length';
}

/**
 * Produces the answer text of one call. The default invents prose; role-specific generators
 * (validator verdicts, judge picks, tool calls) can wrap it and fall back to it.
 */
export type AnswerGenerator = (request: SimulatedChatRequest, directives: Directives, model: SimulatedModel) => GeneratedAnswer;

export interface SimulatorOptions {
  /** Models to serve; combined with (and overriding) those of `modelsConfig`. */
  models?: SimulatedModelInput[];
  /** Every role of the config becomes a served model, with speeds from the role's `sim` block. */
  modelsConfig?: ModelsConfig;
  /** Divides config ttft and multiplies config tokens/s; directives are absolute and ignore it. Default 1. */
  speedup?: number;
  /** Defaults to `generateInRole`: verdicts, picks, tool calls, routes, selections, critiques and syntheses in role, prose otherwise. */
  generateAnswer?: AnswerGenerator;
  logger?: Logger;
}

export interface SimulatedCall {
  host: string;
  model: string;
  /** What the call was for, read from its system prompt (`reviewer`, `aggregator`, …), or `answer` for an ordinary answer. */
  role: CallRole | 'answer';
  /** The temperature the client sent, or null when it sent none. */
  temperature: number | null;
  /** 0 for the deterministic text (or no text: an error, a hang), n for the n-th repeat of a sampled request. */
  variant: number;
  startedAt: number;
  endedAt: number;
  aborted: boolean;
}

export interface SimulatorStats {
  requests: number;
  inFlight: number;
  maxInFlight: number;
  maxInFlightByHost: Record<string, number>;
  inFlightByHost: Record<string, number>;
  requestsByModel: Record<string, number>;
  requestsByHost: Record<string, number>;
  /** Calls whose client disconnected before the response finished. */
  aborted: number;
  /** Error answers requested by an `error=` directive. */
  errors: number;
  /** Connections the simulator cut on purpose (`disconnect-after=`). */
  disconnects: number;
  /** Answers broken on purpose with a chunk or body that is not JSON (`malformed`, `malformed-after=`). */
  malformed: number;
  /** Per host, milliseconds during which at least one call was in flight. */
  busyMsByHost: Record<string, number>;
  /** The last 10 000 finished calls, oldest first; only when asked for. */
  calls?: SimulatedCall[];
}

export interface Simulator {
  server: Server;
  /** Resolves with the port actually bound (useful with port 0). */
  listen(port: number, host?: string): Promise<number>;
  /** Ends in-flight calls (including hung ones) and stops the server. */
  close(): Promise<void>;
  stats(options?: { includeCalls?: boolean }): SimulatorStats;
  /** Zeroes the statistics and forgets every `fail-times=` and sample count (as `POST /sim/reset` does). */
  reset(): void;
}

/** A keepalive comment goes out every second while a streaming call waits for its first token, as mlx_lm.server does. */
const KEEPALIVE_INTERVAL_MS = 1000;
/** Above this many tokens per second a timer per token is pointless: everything due is sent at once. */
const INSTANT_TOKENS_PER_SECOND = 100_000;
/** Below one millisecond a timer cannot wait any shorter, so the wait is skipped. */
const INSTANT_TTFT_MS = 1;
const CALL_LOG_LIMIT = 10_000;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const CHARS_PER_TOKEN = 4;

// ---------------------------------------------------------------------------------------------
// Models

/** The models of a config: one per distinct model id, speeds from the first role that uses it. */
export function modelsFromConfig(config: ModelsConfig): SimulatedModel[] {
  const byId = new Map<string, SimulatedModel>();
  for (const [roleName, role] of Object.entries(config.roles)) {
    const existing = byId.get(role.model);
    if (existing !== undefined) {
      existing.roles.push(roleName);
      continue;
    }
    byId.set(role.model, {
      id: role.model,
      host: role.host,
      tokensPerSecond: role.sim?.tokensPerSecond ?? SIMULATED_MODEL_DEFAULTS.tokensPerSecond,
      ttftMs: role.sim?.ttftMs ?? SIMULATED_MODEL_DEFAULTS.ttftMs,
      defaultTokens: role.sim?.defaultTokens ?? SIMULATED_MODEL_DEFAULTS.defaultTokens,
      roles: [roleName],
    });
  }
  return [...byId.values()];
}

function completeModel(input: SimulatedModelInput): SimulatedModel {
  return {
    id: input.id,
    host: input.host ?? 'default',
    tokensPerSecond: input.tokensPerSecond ?? SIMULATED_MODEL_DEFAULTS.tokensPerSecond,
    ttftMs: input.ttftMs ?? SIMULATED_MODEL_DEFAULTS.ttftMs,
    defaultTokens: input.defaultTokens ?? SIMULATED_MODEL_DEFAULTS.defaultTokens,
    roles: input.roles ?? [],
  };
}

// ---------------------------------------------------------------------------------------------
// Statistics

interface HostCounters {
  inFlight: number;
  maxInFlight: number;
  requests: number;
  busyMs: number;
  /** performance.now() when inFlight went from 0 to 1; undefined while idle. */
  busySince: number | undefined;
}

/** What the call log says of a call besides its host, model and times. */
type CallDetails = Pick<SimulatedCall, 'role' | 'temperature' | 'variant'>;

interface CallBookkeeping {
  host: string;
  model: string;
  details: CallDetails;
  startedAt: number;
  /** Counters reset since this call began must not count its end. */
  generation: number;
  ended: boolean;
}

class SimulatorStatistics {
  private generation = 0;
  private requests = 0;
  private aborted = 0;
  private errors = 0;
  private disconnects = 0;
  private malformed = 0;
  private inFlight = 0;
  private maxInFlight = 0;
  private readonly hosts = new Map<string, HostCounters>();
  private requestsByModel = new Map<string, number>();
  private calls: SimulatedCall[] = [];
  private callsStart = 0;

  begin(host: string, model: string, details: CallDetails): CallBookkeeping {
    this.requests += 1;
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.requestsByModel.set(model, (this.requestsByModel.get(model) ?? 0) + 1);
    const counters = this.host(host);
    counters.requests += 1;
    if (counters.inFlight === 0) counters.busySince = performance.now();
    counters.inFlight += 1;
    counters.maxInFlight = Math.max(counters.maxInFlight, counters.inFlight);
    return { host, model, details, startedAt: Date.now(), generation: this.generation, ended: false };
  }

  /** Idempotent: a response can both finish and close. */
  end(call: CallBookkeeping, aborted: boolean): void {
    if (call.ended) return;
    call.ended = true;
    // In-flight gauges survive resets, so they always come back to zero.
    this.inFlight -= 1;
    const counters = this.host(call.host);
    counters.inFlight -= 1;
    if (counters.inFlight === 0 && counters.busySince !== undefined) {
      counters.busyMs += performance.now() - counters.busySince;
      counters.busySince = undefined;
    }
    if (call.generation !== this.generation) return;
    if (aborted) this.aborted += 1;
    this.calls.push({ host: call.host, model: call.model, ...call.details, startedAt: call.startedAt, endedAt: Date.now(), aborted });
    // Trim in batches so keeping the last 10 000 calls costs O(1) per call on average.
    if (this.calls.length - this.callsStart > CALL_LOG_LIMIT) this.callsStart += 1;
    if (this.callsStart >= CALL_LOG_LIMIT) {
      this.calls = this.calls.slice(this.callsStart);
      this.callsStart = 0;
    }
  }

  countError(): void {
    this.errors += 1;
  }

  countDisconnect(): void {
    this.disconnects += 1;
  }

  countMalformed(): void {
    this.malformed += 1;
  }

  /** Zeroes counters; live in-flight gauges stay, and the maxima restart from them. */
  reset(): void {
    this.generation += 1;
    this.requests = 0;
    this.aborted = 0;
    this.errors = 0;
    this.disconnects = 0;
    this.malformed = 0;
    this.maxInFlight = this.inFlight;
    this.requestsByModel = new Map();
    this.calls = [];
    this.callsStart = 0;
    const now = performance.now();
    for (const [name, counters] of this.hosts) {
      if (counters.inFlight === 0) {
        this.hosts.delete(name);
        continue;
      }
      counters.requests = 0;
      counters.busyMs = 0;
      counters.maxInFlight = counters.inFlight;
      counters.busySince = now;
    }
  }

  snapshot(includeCalls: boolean): SimulatorStats {
    const now = performance.now();
    const byHost = (pick: (counters: HostCounters) => number): Record<string, number> =>
      Object.fromEntries([...this.hosts].map(([name, counters]) => [name, pick(counters)]));
    const stats: SimulatorStats = {
      requests: this.requests,
      inFlight: this.inFlight,
      maxInFlight: this.maxInFlight,
      maxInFlightByHost: byHost((counters) => counters.maxInFlight),
      inFlightByHost: byHost((counters) => counters.inFlight),
      requestsByModel: Object.fromEntries(this.requestsByModel),
      requestsByHost: byHost((counters) => counters.requests),
      aborted: this.aborted,
      errors: this.errors,
      disconnects: this.disconnects,
      malformed: this.malformed,
      busyMsByHost: byHost((counters) => Math.round(counters.busyMs + (counters.busySince === undefined ? 0 : now - counters.busySince))),
    };
    if (includeCalls) stats.calls = this.calls.slice(this.callsStart);
    return stats;
  }

  private host(name: string): HostCounters {
    let counters = this.hosts.get(name);
    if (counters === undefined) {
      counters = { inFlight: 0, maxInFlight: 0, requests: 0, busyMs: 0, busySince: undefined };
      this.hosts.set(name, counters);
    }
    return counters;
  }
}

/** The calls one host served (from `stats({ includeCalls: true })`), in the order they started. */
export function callsOnHost(calls: SimulatedCall[], host: string): SimulatedCall[] {
  return calls.filter((call) => call.host === host).sort((a, b) => a.startedAt - b.startedAt);
}

/** Idle ms before each call after the first: its start minus the previous call's end (calls sorted by start). */
export function handoffGaps(calls: SimulatedCall[]): number[] {
  return calls.slice(1).map((call, index) => call.startedAt - calls[index]!.endedAt);
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

const ERROR_TYPES: Record<number, { type: string; code: string | null }> = {
  400: { type: 'invalid_request_error', code: null },
  401: { type: 'authentication_error', code: 'invalid_api_key' },
  403: { type: 'permission_error', code: null },
  404: { type: 'invalid_request_error', code: 'not_found' },
  413: { type: 'invalid_request_error', code: 'request_too_large' },
  429: { type: 'rate_limit_error', code: 'rate_limit_exceeded' },
};

interface OpenAIErrorFields {
  message: string;
  type?: string;
  param?: string | null;
  code?: string | null;
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendJsonText(response, status, JSON.stringify(body), headers);
}

/** Sends text labelled as JSON: valid JSON, or, for `malformed`, a body that only claims to be. */
function sendJsonText(response: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  response.end(text);
}

/**
 * Printable ASCII: what a directive value must be to go out verbatim as a header, so a test can
 * send delay-seconds, an HTTP-date or garbage it wants the client to ignore.
 */
const HEADER_VALUE = /^[\x20-\x7e]+$/;

/** The hint headers of an `error=` answer: `retry-after=` and `retry-after-ms=` as given. */
function errorHeaders(directives: Directives, status: number): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const key of ['retry-after', 'retry-after-ms']) {
    const value = directives[key];
    if (typeof value === 'string' && HEADER_VALUE.test(value)) headers[key] = value;
  }
  // Real rate limiters say when to come back; a 429 without any hint would be the odd one out.
  if (status === 429 && headers['retry-after'] === undefined) headers['retry-after'] = '1';
  return headers;
}

/** How a call is cut short after some tokens. */
interface TokenFault {
  /** disconnect: the connection is dropped; malformed: a broken chunk (or body) ends the answer; hang: it goes silent. */
  kind: 'disconnect' | 'malformed' | 'hang';
  /** Content tokens sent (streaming) or waited for (not streaming) before the fault. */
  afterTokens: number;
}

/** `disconnect-after=N`, `malformed-after=N` (`malformed` is N=0) or `hang-after=N`; the first given wins. */
function tokenFault(directives: Directives): TokenFault | undefined {
  const keys = [
    ['disconnect', 'disconnect-after'],
    ['malformed', 'malformed-after'],
    ['hang', 'hang-after'],
  ] as const;
  for (const [kind, key] of keys) {
    const after = numericDirective(directives, key);
    if (after !== undefined) return { kind, afterTokens: Math.floor(after) };
  }
  return directives.malformed === true ? { kind: 'malformed', afterTokens: 0 } : undefined;
}

function sendError(response: ServerResponse, status: number, fields: OpenAIErrorFields, headers?: Record<string, string>): void {
  const known = ERROR_TYPES[status];
  sendJson(
    response,
    status,
    {
      error: {
        message: fields.message,
        type: fields.type ?? known?.type ?? (status >= 500 ? 'server_error' : 'invalid_request_error'),
        param: fields.param ?? null,
        code: fields.code ?? known?.code ?? null,
      },
    },
    headers,
  );
}

function readBody(request: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        resolve(undefined);
        request.removeAllListeners('data');
        request.resume();
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** OpenAI content is a string, null, or an array of parts of which the text parts matter here. */
function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((part: unknown) => (isRecord(part) && typeof part.text === 'string' ? part.text : '')).join('');
}

/** Reads a chat body, or returns the message of a 400 answer. */
function readChatRequest(body: Record<string, unknown>): SimulatedChatRequest | string {
  if (typeof body.model !== 'string' || body.model === '') return 'model is required';
  if (!Array.isArray(body.messages) || body.messages.length === 0) return 'messages must be a non-empty array';
  const messages: SimulatedChatRequest['messages'] = [];
  for (const message of body.messages as unknown[]) {
    if (!isRecord(message) || typeof message.role !== 'string') return 'each message needs a role';
    messages.push({ role: message.role, content: contentText(message.content) });
  }
  const limit = body.max_tokens ?? body.max_completion_tokens;
  if (limit !== undefined && limit !== null && (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1)) {
    return 'max_tokens must be a positive integer';
  }
  const streamOptions = isRecord(body.stream_options) ? body.stream_options : {};
  const request: SimulatedChatRequest = {
    model: body.model,
    messages,
    stream: body.stream === true,
    includeUsage: streamOptions.include_usage === true,
    body,
  };
  if (typeof limit === 'number') request.maxTokens = limit;
  // Read, not checked: a simulator that refused odd temperatures would fail tests that never meant to test them.
  if (typeof body.temperature === 'number' && Number.isFinite(body.temperature)) request.temperature = body.temperature;
  return request;
}

// ---------------------------------------------------------------------------------------------
// The server

interface Route {
  /** Set when the URL had a /hosts/<host> prefix. */
  host: string | undefined;
  path: string;
  query: URLSearchParams;
}

function route(url: string): Route {
  const questionMark = url.indexOf('?');
  let path = questionMark === -1 ? url : url.slice(0, questionMark);
  const query = new URLSearchParams(questionMark === -1 ? '' : url.slice(questionMark + 1));
  let host: string | undefined;
  const prefixed = /^\/hosts\/([^/]+)(\/.*)$/.exec(path);
  if (prefixed !== null) {
    host = decodeURIComponent(prefixed[1] ?? '');
    path = prefixed[2] ?? '/';
  }
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  return { host, path, query };
}

export function createSimulator(options: SimulatorOptions = {}): Simulator {
  const speedup = options.speedup ?? 1;
  if (!(speedup > 0)) throw new RangeError(`speedup must be positive, got ${speedup}`);
  const generateAnswer = options.generateAnswer ?? generateInRole;
  const logger = options.logger;
  const models = new Map<string, SimulatedModel>();
  for (const model of options.modelsConfig === undefined ? [] : modelsFromConfig(options.modelsConfig)) {
    models.set(model.id, model);
  }
  for (const input of options.models ?? []) models.set(input.id, completeModel(input));

  const statistics = new SimulatorStatistics();
  const failTimes = new FailTimesCounter();
  /** Samples answered per request, for the variant of the next. */
  const samples = new RequestCounter();
  const reset = (): void => {
    statistics.reset();
    failTimes.reset();
    samples.reset();
  };
  /** Cleanups of calls still running, so close() can end hung and slow calls at once. */
  const activeCalls = new Set<() => void>();
  let responseCounter = 0;

  const modelList = () => ({
    object: 'list',
    data: [...models.values()].map((model) => ({
      id: model.id,
      object: 'model',
      created: 0,
      owned_by: SIMULATOR_OWNER,
    })),
  });

  async function handleChat(request: IncomingMessage, response: ServerResponse, prefixHost: string | undefined): Promise<void> {
    const text = await readBody(request);
    if (text === undefined) {
      sendError(response, 413, { message: `request body exceeds ${MAX_BODY_BYTES} bytes` });
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      sendError(response, 400, { message: 'request body is not valid JSON' });
      return;
    }
    if (!isRecord(body)) {
      sendError(response, 400, { message: 'request body must be a JSON object' });
      return;
    }
    const chatRequest = readChatRequest(body);
    if (typeof chatRequest === 'string') {
      sendError(response, 400, { message: chatRequest });
      return;
    }
    const model = models.get(chatRequest.model);
    if (model === undefined) {
      sendError(response, 404, {
        message: `The model \`${chatRequest.model}\` does not exist (model simulator serves: ${[...models.keys()].join(', ')})`,
        type: 'invalid_request_error',
        param: 'model',
        code: 'model_not_found',
      });
      return;
    }
    const host = prefixHost ?? (model.host === '' ? 'default' : model.host);
    runCall(response, chatRequest, model, host);
  }

  function runCall(response: ServerResponse, request: SimulatedChatRequest, model: SimulatedModel, host: string): void {
    // Every message is read: pattern steps quote the user's request, directives and all, inside their own prompts.
    const directives = failTimes.apply(
      directivesForRoles(parseDirectives(request.messages.map((message) => message.content).join('\n')), model.roles),
      model.id,
      request.messages,
    );
    const call = statistics.begin(host, model.id, {
      role: detectCallRole(systemTextOf(request)) ?? 'answer',
      temperature: request.temperature ?? null,
      variant: 0,
    });
    const startedAt = performance.now();
    let timer: NodeJS.Timeout | undefined;
    let keepaliveTimer: NodeJS.Timeout | undefined;
    let cutByServer = false;
    const cleanup = (): void => {
      clearTimeout(timer);
      clearInterval(keepaliveTimer);
      activeCalls.delete(destroy);
    };
    const destroy = (): void => {
      cleanup();
      response.destroy();
    };
    activeCalls.add(destroy);
    const finish = (): void => {
      cleanup();
      // Closed before finishing means the client went away, unless the simulator cut it on purpose.
      statistics.end(call, !response.writableFinished && !cutByServer);
      if (logger?.isDebugEnabled()) {
        logger.debug('model simulator call ended', { host, model: model.id, aborted: !response.writableFinished && !cutByServer });
      }
    };
    response.once('close', finish);

    const errorStatus = numericDirective(directives, 'error');
    if (errorStatus !== undefined && Number.isInteger(errorStatus) && errorStatus >= 400 && errorStatus <= 599) {
      statistics.countError();
      sendError(
        response,
        errorStatus,
        { message: `simulated HTTP ${errorStatus} (model simulator directive error=${errorStatus})` },
        errorHeaders(directives, errorStatus),
      );
      return;
    }
    // Accepted and never answered: the call stays in flight until the client gives up.
    if (directives.hang === true) return;

    // Counted only once the call is answered, so a sample that failed and is retried answers what a healthy first call would.
    if (request.temperature !== undefined && request.temperature > 0) {
      request.variant = samples.count(model.id, request.messages) - 1;
      call.details.variant = request.variant;
    }
    const answer = generateAnswer(request, directives, model);
    let tokens = splitIntoTokens(answer.text);
    let finishReason: 'stop' | 'length' = answer.finishReason ?? 'stop';
    if (request.maxTokens !== undefined && tokens.length > request.maxTokens) {
      tokens = tokens.slice(0, request.maxTokens);
      finishReason = 'length';
    }
    const ttftMs = effectiveTtftMs(numericDirective(directives, 'ttft') ?? model.ttftMs / speedup);
    const tokensPerSecond = numericDirective(directives, 'tps') ?? model.tokensPerSecond * speedup;
    const tokenIntervalMs = tokensPerSecond === 0 || tokensPerSecond >= INSTANT_TOKENS_PER_SECOND ? 0 : 1000 / tokensPerSecond;
    const fault = tokenFault(directives);
    const promptTokens = Math.ceil(request.messages.reduce((sum, message) => sum + message.content.length, 0) / CHARS_PER_TOKEN);
    const usage = (completionTokens: number) => ({
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    });
    responseCounter += 1;
    const id = `chatcmpl-sim-${responseCounter}`;
    const created = Math.floor(Date.now() / 1000);
    /** Milliseconds after the call began at which token `index` is due. */
    const dueAt = (index: number): number => ttftMs + index * tokenIntervalMs;
    const elapsed = (): number => performance.now() - startedAt;

    /** Sends what has been written so far, then drops the connection without finishing the answer. */
    const cutConnection = (lastWrite: string): void => {
      cutByServer = true;
      statistics.countDisconnect();
      clearInterval(keepaliveTimer);
      // The callback fires once the bytes are handed to the kernel, so the client receives them before the reset.
      if (lastWrite === '') response.socket?.destroy();
      else response.write(lastWrite, () => response.socket?.destroy());
    };

    if (!request.stream) {
      const tokensToWaitFor = fault === undefined ? tokens.length : Math.min(fault.afterTokens, tokens.length);
      const answerNow = (): void => {
        if (fault?.kind === 'disconnect') {
          cutConnection('');
          return;
        }
        // The answer is never sent: the call stays in flight until the client gives up.
        if (fault?.kind === 'hang') return;
        if (fault?.kind === 'malformed') {
          statistics.countMalformed();
          // Cut inside the content string, as a server dying mid-write would leave it.
          const content = JSON.stringify(tokens.slice(0, tokensToWaitFor).join('')).slice(0, -1);
          sendJsonText(
            response,
            200,
            `{"id":"${id}","object":"chat.completion","created":${created},"choices":[{"index":0,"message":{"role":"assistant","content":${content}`,
          );
          return;
        }
        sendJson(response, 200, {
          id,
          object: 'chat.completion',
          created,
          model: request.model,
          system_fingerprint: SIMULATOR_OWNER,
          choices: [{ index: 0, message: { role: 'assistant', content: tokens.join('') }, logprobs: null, finish_reason: finishReason }],
          usage: usage(tokens.length),
        });
      };
      const waitMs = tokensToWaitFor === 0 ? ttftMs : dueAt(tokensToWaitFor - 1);
      if (waitMs <= 0) answerNow();
      else timer = setTimeout(answerNow, waitMs);
      return;
    }

    const chunkPrefix = `data: {"id":"${id}","object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(request.model)},"system_fingerprint":"${SIMULATOR_OWNER}","choices":[`;
    const roleChunk = `${chunkPrefix}{"index":0,"delta":{"role":"assistant"},"logprobs":null,"finish_reason":null}]}\n\n`;
    const contentChunk = (token: string): string =>
      `${chunkPrefix}{"index":0,"delta":{"content":${JSON.stringify(token)}},"logprobs":null,"finish_reason":null}]}\n\n`;
    const closingChunks = (): string =>
      `${chunkPrefix}{"index":0,"delta":{},"logprobs":null,"finish_reason":"${finishReason}"}]}\n\n` +
      (request.includeUsage ? `${chunkPrefix}],"usage":${JSON.stringify(usage(tokens.length))}}\n\n` : '') +
      'data: [DONE]\n\n';

    response.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      'x-simulator': SIMULATOR_OWNER,
    });
    if (ttftMs > 0) {
      // Headers go out at once, as real servers do, so the client's first-token clock measures the model.
      response.flushHeaders();
      if (ttftMs > KEEPALIVE_INTERVAL_MS) {
        keepaliveTimer = setInterval(() => response.write(': keepalive\n\n'), KEEPALIVE_INTERVAL_MS);
      }
    }

    let sent = 0;
    let roleSent = false;
    /** Writes every token due by now in one write; zero-latency calls thus become a single write. */
    const emitDue = (): void => {
      timer = undefined;
      const now = elapsed();
      let out = '';
      if (!roleSent) {
        clearInterval(keepaliveTimer);
        keepaliveTimer = undefined;
        out += roleChunk;
        roleSent = true;
      }
      const limit = fault === undefined ? tokens.length : Math.min(fault.afterTokens, tokens.length);
      while (sent < limit && (tokenIntervalMs === 0 || dueAt(sent) <= now)) {
        out += contentChunk(tokens[sent] ?? '');
        sent += 1;
      }
      if (fault !== undefined && sent >= limit) {
        if (fault.kind === 'disconnect') {
          cutConnection(out);
        } else if (fault.kind === 'malformed') {
          statistics.countMalformed();
          // The next token's chunk, cut inside its content string; then the body ends as if all were well.
          response.end(`${out}${chunkPrefix}{"index":0,"delta":{"content":${JSON.stringify(tokens[sent] ?? '').slice(0, -1)}\n\n`);
        } else if (out !== '') {
          // hang-after: no further token and no end; the call stays in flight until the client gives up.
          response.write(out);
        }
        return;
      }
      if (sent >= tokens.length) {
        response.end(out + closingChunks());
        return;
      }
      if (out !== '') response.write(out);
      timer = setTimeout(emitDue, Math.max(0, dueAt(sent) - elapsed()));
    };
    if (ttftMs <= 0) emitDue();
    else timer = setTimeout(emitDue, ttftMs);
  }

  const server = createServer((request, response) => {
    const { host, path, query } = route(request.url ?? '/');
    const method = request.method ?? 'GET';
    if (path === '/v1/chat/completions') {
      if (method !== 'POST') return sendError(response, 405, { message: 'use POST' });
      // Continues the worker's trace (its traceparent header); a no-op unless tracing is on.
      const span = tracer().startSpan(
        'POST /v1/chat/completions',
        {
          kind: SpanKind.SERVER,
          attributes: { 'http.request.method': 'POST', 'http.route': '/v1/chat/completions', ...(host !== undefined && { 'mageagent.host': host }) },
        },
        propagation.extract(context.active(), request.headers),
      );
      response.once('close', () => {
        span.setAttribute('http.response.status_code', response.statusCode);
        if (response.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR, message: String(response.statusCode) });
        span.end();
      });
      handleChat(request, response, host).catch((error: unknown) => {
        logger?.error('model simulator failed to answer', { error: (error as Error).message });
        if (!response.headersSent) sendError(response, 500, { message: 'model simulator internal error' });
        else response.destroy();
      });
      return;
    }
    if (path === '/v1/models' && method === 'GET') return sendJson(response, 200, modelList());
    if (host === undefined) {
      if (path === '/health' && method === 'GET') return sendJson(response, 200, { status: 'ok', service: 'model-sim', simulator: true });
      if (path === '/sim/stats' && method === 'GET') {
        return sendJson(response, 200, statistics.snapshot(query.get('calls') === '1' || query.get('calls') === 'true'));
      }
      if (path === '/sim/reset' && method === 'POST') {
        reset();
        return sendJson(response, 200, { reset: true });
      }
    }
    sendError(response, 404, { message: `model simulator has no route ${method} ${request.url ?? ''}`, code: 'not_found' });
  });

  return {
    server,
    listen(port, host = '127.0.0.1') {
      return new Promise<number>((resolve, reject) => {
        const onError = (error: Error): void => reject(error);
        server.once('error', onError);
        server.listen(port, host, () => {
          server.off('error', onError);
          const address = server.address() as AddressInfo;
          logger?.info('model simulator listening', { host, port: address.port, models: [...models.keys()], speedup });
          resolve(address.port);
        });
      });
    },
    close() {
      for (const destroy of [...activeCalls]) destroy();
      return new Promise<void>((resolve, reject) => {
        if (!server.listening) {
          resolve();
          return;
        }
        server.close((error) => (error === undefined ? resolve() : reject(error)));
        // Idle keep-alive sockets would otherwise hold close() open for seconds.
        server.closeAllConnections();
      });
    },
    stats: (statsOptions = {}) => statistics.snapshot(statsOptions.includeCalls === true),
    reset,
  };
}

function effectiveTtftMs(ttftMs: number): number {
  return ttftMs < INSTANT_TTFT_MS ? 0 : ttftMs;
}
