import { z } from 'zod';
import { boundedJson, JSON_SCHEMA_BOUNDS, METADATA_BOUNDS } from './json-bounds';
import { quote } from './quote';

/** Most content parts one message may have; the text parts are joined into one string. */
export const MAX_CONTENT_PARTS = 256;

/**
 * Longest prompt, and longest content of one message (its parts joined), in characters as
 * JavaScript counts them (UTF-16 code units). 256 Ki characters is about 64 K tokens of English,
 * twice the 32 K-token context of the largest models in the example config: any text a model can
 * read fits, while one field can no longer be the whole of a 1 MiB body, nor of a larger one an
 * operator allows with BODY_LIMIT_BYTES. At up to 3 UTF-8 bytes a character it still fits that
 * default body.
 */
export const MAX_TEXT_CHARS = 262_144;

/**
 * Most messages one request may carry. A conversation of 1 000 messages of a sentence each already
 * fills a 32 K-token context; agents that run longer compact their history first.
 */
export const MAX_MESSAGES = 1_000;

/** A bounded text field whose error says the limit and the length it got, never the text. */
export const boundedText = (maxChars = MAX_TEXT_CHARS) =>
  z.string().max(maxChars, { error: (issue) => `must be at most ${maxChars} characters (got ${lengthOf(issue.input)})` });

const lengthOf = (input: unknown): number | string => (typeof input === 'string' || Array.isArray(input) ? input.length : '?');

const ContentPartsSchema = z
  .array(z.object({ type: z.literal('text'), text: boundedText() }))
  .min(1)
  .max(MAX_CONTENT_PARTS)
  .superRefine((parts, context) => {
    // A part over the limit has said so already.
    if (parts.some((part) => part.text.length > MAX_TEXT_CHARS)) return;
    const chars = parts.reduce((sum, part) => sum + part.text.length, 0);
    if (chars > MAX_TEXT_CHARS)
      context.addIssue({ code: 'custom', message: `parts must be at most ${MAX_TEXT_CHARS} characters together (got ${chars})`, input: undefined });
  });

/** A chat message as OpenAI-compatible clients send it; multi-part text content is accepted. */
export const ChatMessageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.union([boundedText(), ContentPartsSchema, z.null()], {
    error: `must be a string, null, or 1 to ${MAX_CONTENT_PARTS} parts {type: "text", text}`,
  }),
  name: z.string().max(128).optional(),
  tool_call_id: z.string().max(256).optional(),
});
export type ChatMessageInput = z.infer<typeof ChatMessageSchema>;

/** The normalised message the service stores and sends to model servers. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  name?: string;
  tool_call_id?: string;
}

export function normaliseMessage(message: ChatMessageInput): ChatMessage {
  const content = message.content === null ? '' : typeof message.content === 'string' ? message.content : message.content.map((part) => part.text).join('');
  const normalised: ChatMessage = { role: message.role, content };
  if (message.name !== undefined) normalised.name = message.name;
  if (message.tool_call_id !== undefined) normalised.tool_call_id = message.tool_call_id;
  return normalised;
}

export const TaskOptionsSchema = z.strictObject({
  temperature: z.number().min(0).max(2).optional(),
  maxTokens: z.number().int().min(1).max(131072).optional(),
  /** Wall-clock limit for the whole task, overriding the worker's default. */
  timeoutMs: z
    .number()
    .int()
    .min(100)
    .max(24 * 3600 * 1000)
    .optional(),
  /**
   * Tool-call extraction: `auto` (default) runs it when the request brings tools or its text
   * suggests tool use; `always` and `never` force it on or off.
   */
  extractTools: z.enum(['auto', 'always', 'never']).optional(),
  /** How many times `validated` may revise a failed answer (default 1). */
  maxRevisions: z.number().int().min(0).max(5).optional(),
});
export type TaskOptions = z.infer<typeof TaskOptionsSchema>;

/** A JSON Schema object, as OpenAI function definitions carry them; bounded in depth and size. */
export const JsonSchemaObject = boundedJson(z.record(z.string(), z.unknown()), JSON_SCHEMA_BOUNDS);

/** Free-form metadata stored and returned with a task; bounded in depth and size. */
export const MetadataSchema = boundedJson(z.record(z.string().max(64), z.unknown()), METADATA_BOUNDS);

/** A tool the request allows, in OpenAI's function-definition form. */
export const ToolDefinitionSchema = z.strictObject({
  type: z.literal('function'),
  function: z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'tool names are 1-64 letters, digits, underscores or dashes'),
    description: z.string().max(4096).optional(),
    parameters: JsonSchemaObject.optional(),
    strict: z.boolean().nullable().optional(),
  }),
});
export type ToolDefinition = z.infer<typeof ToolDefinitionSchema>;

/** OpenAI's `tool_choice`: `none` skips extraction, a named function restricts it to that one. */
export const ToolChoiceSchema = z.union([
  z.enum(['auto', 'none', 'required']),
  z.strictObject({ type: z.literal('function'), function: z.strictObject({ name: z.string().min(1).max(64) }) }),
]);
export type ToolChoice = z.infer<typeof ToolChoiceSchema>;

/** OpenAI's `response_format` for the final answer. */
export const ResponseFormatSchema = z.union([
  z.strictObject({ type: z.literal('text') }),
  z.strictObject({ type: z.literal('json_object') }),
  z.strictObject({
    type: z.literal('json_schema'),
    json_schema: z.strictObject({
      name: z.string().min(1).max(64),
      description: z.string().max(4096).optional(),
      schema: JsonSchemaObject.optional(),
      strict: z.boolean().nullable().optional(),
    }),
  }),
]);
export type ResponseFormat = z.infer<typeof ResponseFormatSchema>;

/** Terminal statuses a webhook may be asked for. */
export const WebhookEvents = ['completed', 'failed', 'cancelled'] as const;
export type WebhookEvent = (typeof WebhookEvents)[number];

/** `webhook` on POST /tasks: where to POST the task when it ends (signed, per the Standard Webhooks spec). */
export const WebhookRequestSchema = z.strictObject({
  url: z
    .string()
    .max(2048)
    .url()
    .refine((url) => /^https?:\/\//i.test(url), 'must be an http or https URL'),
  /** Which terminal statuses to deliver (default: all). */
  events: z.array(z.enum(WebhookEvents)).min(1).max(3).optional(),
});
export type WebhookRequest = z.infer<typeof WebhookRequestSchema>;

/** One attempt to deliver a task's webhook. */
export interface WebhookDelivery {
  /** The `webhook-id` header: the same for every attempt of one delivery. */
  webhookId: string;
  attempt: number;
  at: string;
  durationMs: number;
  /** The receiver's HTTP status, when it answered. */
  status?: number;
  ok: boolean;
  /** Why the attempt failed (no answer, refused address, non-2xx…). */
  error?: string;
}

/** The task's webhook: what was asked for, and every delivery attempt so far. */
export interface TaskWebhook {
  url: string;
  events: WebhookEvent[];
  deliveries: WebhookDelivery[];
}

export const TaskPriorities = ['high', 'normal', 'low'] as const;
export type TaskPriority = (typeof TaskPriorities)[number];

export const CreateTaskRequestSchema = z
  .strictObject({
    prompt: boundedText().min(1, 'prompt must not be empty').optional(),
    messages: z
      .array(ChatMessageSchema)
      .min(1, 'messages must not be empty')
      .max(MAX_MESSAGES, { error: (issue) => `must be at most ${MAX_MESSAGES} messages (got ${lengthOf(issue.input)})` })
      .optional(),
    pattern: z.string().min(1).max(64).optional(),
    priority: z.enum(TaskPriorities).optional(),
    options: TaskOptionsSchema.optional(),
    /** Tools the answer may call; extracted calls are validated against their JSON Schemas. */
    tools: z.array(ToolDefinitionSchema).max(128).optional(),
    toolChoice: ToolChoiceSchema.optional(),
    responseFormat: ResponseFormatSchema.optional(),
    metadata: MetadataSchema.optional(),
    webhook: WebhookRequestSchema.optional(),
  })
  .refine((body) => (body.prompt === undefined) !== (body.messages === undefined), {
    message: 'exactly one of prompt or messages is required',
    path: ['prompt'],
  });
export type CreateTaskRequest = z.infer<typeof CreateTaskRequestSchema>;

export const TaskStatuses = ['queued', 'processing', 'completed', 'failed', 'cancelled'] as const;
export type TaskStatus = (typeof TaskStatuses)[number];
export const TerminalStatuses: readonly TaskStatus[] = ['completed', 'failed', 'cancelled'];
export function isTerminal(status: TaskStatus): boolean {
  return TerminalStatuses.includes(status);
}

export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export function addUsage(a: TokenUsage, b: TokenUsage): TokenUsage {
  return {
    promptTokens: a.promptTokens + b.promptTokens,
    completionTokens: a.completionTokens + b.completionTokens,
    totalTokens: a.totalTokens + b.totalTokens,
  };
}
export const zeroUsage = (): TokenUsage => ({ promptTokens: 0, completionTokens: 0, totalTokens: 0 });

/** A tool call extracted from an answer; returned to the client, never executed by this service. */
export interface ToolCall {
  /** Unique within the task (`call_<n>`), so OpenAI clients can answer it with a tool message. */
  id: string;
  tool: string;
  arguments: Record<string, unknown>;
}

/**
 * What a step is for. Clients that show only the final answer (the OpenAI facade) stream
 * `answer`/`revision`/`candidate` output of a step marked `final` as content and everything
 * else as reasoning.
 */
export type StepKind =
  | 'answer'
  | 'draft'
  | 'revision'
  | 'candidate'
  | 'review'
  | 'judge'
  | 'tools'
  | 'route'
  /** A proposer's answer in a Mixture-of-Agents layer (`aggregate`). */
  | 'reference'
  /** The aggregator's synthesis of the last layer's references. */
  | 'aggregate'
  /** One of several samples of one role (`select`). */
  | 'sample'
  /** The selector naming the most consistent sample. */
  | 'select'
  /** A critic's list of issues (`critique`). */
  | 'critique';

/** Where a call sits in a fan-out: the layer (aggregate) and the reference or sample number, from 1. */
export interface StepPosition {
  layer?: number;
  reference?: number;
}

/** How `auto` (or a declared `route` step) chose the pattern it ran. */
export interface RouteDecision {
  /** The pattern that ran. */
  pattern: string;
  /** The category the classifier chose, e.g. coding, reasoning, general. */
  route: string;
  method: 'keywords' | 'router';
  reason: string;
  /** The router model's confidence, 0..1, when it decided. */
  confidence?: number;
  /** Why the router model's answer was not used, when the keywords decided after it failed. */
  fallbackReason?: string;
}

/** One model call of a pattern, as recorded in `result.steps[]`. */
export interface StepRecord {
  id: string;
  name: string;
  role: string;
  model: string;
  host: string;
  /** 1 for the first try of this call; higher after retries of retryable model errors. */
  attempt: number;
  startedAt: string;
  durationMs: number;
  /** Time spent waiting for the GPU host's lease before the call could start. */
  waitMs?: number;
  usage: TokenUsage;
  kind?: StepKind;
  /** For references of a Mixture-of-Agents layer: the layer, from 1. */
  layer?: number;
  /** For references and samples: which one, from 1. */
  reference?: number;
  /** The temperature the call was sent with, when the step set one (samples, references). */
  temperature?: number;
  /** PASS / FAIL / unparseable for reviews, A / B / ... for judges, the route for routers. */
  verdict?: string;
  /** Why the verdict was read as it was (a fallback, the reviewer's reasons, the judge's sentence). */
  note?: string;
}

export interface TaskResult {
  content: string;
  toolCalls: ToolCall[];
  steps: StepRecord[];
  usage: TokenUsage;
  /** The model whose answer is the final content. */
  model: string;
  /** The pattern whose pipeline produced the answer (for `auto`, the one it routed to). */
  pattern?: string;
  route?: RouteDecision;
  /** For validated answers: whether the final answer passed review. */
  approved?: boolean;
  /** Things the client should know: an answer not approved, tool output given up on, ... */
  warnings?: string[];
  /** For Mixture-of-Agents (`aggregate`): how each layer went and whether the aggregator answered. */
  aggregation?: AggregationRecord;
  /** For self-consistency (`select`): which sample was chosen, and how. */
  selection?: SelectionRecord;
  /** For critic loops (`critique`): every round's verdict and issues. */
  critique?: CritiqueRecord;
}

export interface AggregationRecord {
  layers: Array<{ layer: number; answered: number; failed: number }>;
  /** The aggregator failed and the first successful reference of the last layer is the answer. */
  fallback?: boolean;
}

export interface SelectionRecord {
  samples: number;
  /** The chosen sample, from 1. */
  chosen: number;
  /** The selector's confidence, 0..1, when it gave one. */
  confidence?: number;
  /** `judge`: the selector chose; `fallback`: its answer was unusable (or it failed), so the first sample stands. */
  method: 'judge' | 'fallback';
}

export interface CritiqueRecord {
  rounds: Array<{ round: number; verdict: 'YES' | 'NO' | 'unparseable'; issues: string }>;
  /** The last round's verdict. */
  finalVerdict: 'YES' | 'NO' | 'unparseable';
}

export interface TaskErrorInfo {
  code: string;
  message: string;
  retryable: boolean;
}

/** What a task was asked to do: the messages after normalisation. */
export interface TaskInput {
  messages: ChatMessage[];
  tools?: ToolDefinition[];
  toolChoice?: ToolChoice;
  responseFormat?: ResponseFormat;
}

/** The task record, the clients' source of truth. */
export interface TaskRecord {
  id: string;
  /** The tenant that owns the task: only its keys see it. */
  tenant: string;
  /** The tenant's application whose key created the task, when the key names one. */
  app: string | null;
  /** The id of the key that created it (never the key). */
  keyId: string | null;
  status: TaskStatus;
  pattern: string;
  priority: TaskPriority;
  input: TaskInput;
  options: TaskOptions;
  metadata: Record<string, unknown>;
  createdAt: string;
  startedAt: string | null;
  completedAt: string | null;
  expiresAt: string;
  attempt: number;
  currentStep: string | null;
  result: TaskResult | null;
  error: TaskErrorInfo | null;
  /** The seq of the newest event in the task's log. */
  lastSeq: number;
  /** The webhook the task was created with, and its delivery attempts. */
  webhook: TaskWebhook | null;
}

export interface StepInfo {
  id: string;
  name: string;
  role: string;
  model: string;
  host: string;
  attempt: number;
  kind?: StepKind;
  /** True when this step's output is the task's final answer whatever happens next. */
  final?: boolean;
  /** For references of a Mixture-of-Agents layer: the layer, from 1. */
  layer?: number;
  /** For references and samples: which one, from 1. */
  reference?: number;
  /** For references and samples drawn at a set temperature: that temperature. */
  temperature?: number;
}

/** Event payloads by type; the log adds taskId, seq and at. */
export type TaskEventPayload =
  | { type: 'status'; status: TaskStatus; attempt?: number; reason?: string; worker?: string }
  | { type: 'step.started'; step: StepInfo }
  | { type: 'delta'; stepId: string; text: string }
  | {
      type: 'step.completed';
      stepId: string;
      durationMs: number;
      usage: TokenUsage;
      waitMs?: number;
      verdict?: string;
      note?: string;
    }
  | { type: 'tool_calls'; calls: ToolCall[] }
  | { type: 'route'; decision: RouteDecision }
  | { type: 'result'; result: TaskResult }
  | { type: 'error'; error: TaskErrorInfo }
  | { type: 'warning'; message: string; stepId?: string };

export type TaskEventType = TaskEventPayload['type'];

export type TaskEvent = TaskEventPayload & { taskId: string; seq: number; at: string };

/** Most problems listed in one answer: enough to fix a request, never a copy of it. */
const MAX_DETAILS = 20;

/**
 * zod issues → `details` entries a client can act on. Path segments and messages are quoted
 * briefly (a key of a megabyte is named by its first characters), and at most 20 are listed.
 */
export function zodIssuesToDetails(error: z.ZodError): Array<{ path: string; message: string }> {
  const details = error.issues.slice(0, MAX_DETAILS).map((issue) => ({
    path: issue.path.map((segment) => quote(String(segment))).join('.') || '(root)',
    message: quote(issue.message, 256),
  }));
  if (error.issues.length > MAX_DETAILS) {
    details.push({ path: '(root)', message: `…and ${error.issues.length - MAX_DETAILS} more problems` });
  }
  return details;
}
