import {
  boundedText,
  MAX_CONTENT_PARTS,
  MAX_MESSAGES,
  MAX_TEXT_CHARS,
  ResponseFormatSchema,
  TaskOptionsSchema,
  ToolChoiceSchema,
  ToolDefinitionSchema,
  z,
  type ChatMessageInput,
  type CreateTaskRequest,
} from '@mageagent/core';
import { checkToolRequest } from '@mageagent/patterns';
import { fromZodError, invalidRequest, modelNotFound } from './errors';

/** Patterns are served as models `mageagent:<pattern>`; the prefix keeps them apart from real model names. */
export const MODEL_ID_PREFIX = 'mageagent:';

export const modelIdOf = (pattern: string): string => `${MODEL_ID_PREFIX}${pattern}`;

/** What the facade needs of the pattern registry (the real one, or a list in tests). */
export interface PatternNames {
  has(name: string): boolean;
  names(): string[];
}

/**
 * The pattern a model id names. Only `mageagent:<pattern>` is accepted, exactly as listed by
 * `GET /v1/models`: a bare `auto` or `primary` is refused with the list rather than guessed at, so a
 * name never means two things and an unknown one is never silently replaced.
 */
export function patternOfModel(model: string, patterns: PatternNames, param: string | null = 'model'): string {
  const pattern = model.startsWith(MODEL_ID_PREFIX) ? model.slice(MODEL_ID_PREFIX.length) : undefined;
  if (pattern !== undefined && patterns.has(pattern)) return pattern;
  throw modelNotFound(model, patterns.names().map(modelIdOf), param);
}

/**
 * Content parts are read loosely here and checked in `contentParts`, so an image or audio part gets
 * a precise "not supported" answer instead of a generic schema mismatch.
 */
const ContentPartSchema = z.looseObject({ type: z.string().max(64), text: boundedText().optional(), refusal: boundedText().optional() });
const ContentSchema = z.union([boundedText(), z.array(ContentPartSchema).max(MAX_CONTENT_PARTS)]);
const NameSchema = z.string().max(128);

const RequestToolCallSchema = z.object({
  id: z.string().min(1).max(256),
  type: z.literal('function').optional(),
  function: z.object({ name: z.string().min(1).max(64), arguments: boundedText() }),
});
const LegacyFunctionCallSchema = z.object({ name: z.string().min(1).max(64), arguments: boundedText() });

const RequestMessageSchema = z.discriminatedUnion('role', [
  // `developer` is what newer OpenAI clients send instead of `system`.
  z.object({ role: z.enum(['system', 'developer']), content: ContentSchema, name: NameSchema.optional() }),
  z.object({ role: z.literal('user'), content: ContentSchema, name: NameSchema.optional() }),
  z.object({
    role: z.literal('assistant'),
    content: ContentSchema.nullish(),
    name: NameSchema.optional(),
    refusal: boundedText().nullish(),
    tool_calls: z.array(RequestToolCallSchema).max(128).nullish(),
    function_call: LegacyFunctionCallSchema.nullish(),
  }),
  z.object({ role: z.literal('tool'), content: ContentSchema, tool_call_id: z.string().min(1).max(256) }),
  z.object({ role: z.literal('function'), name: z.string().min(1).max(64), content: boundedText().nullable() }),
]);
type RequestMessage = z.infer<typeof RequestMessageSchema>;

/** OpenAI limits metadata to 16 string pairs, keys up to 64 characters, values up to 512. */
const MetadataSchema = z
  .record(z.string().max(64), z.string().max(512))
  .refine((metadata) => Object.keys(metadata).length <= 16, 'at most 16 metadata keys are allowed');

// The task's own bounds, so a request the facade accepts is never refused by POST /tasks' validation.
const TemperatureSchema = TaskOptionsSchema.shape.temperature.unwrap();
const MaxTokensSchema = TaskOptionsSchema.shape.maxTokens.unwrap();

/**
 * OpenAI's chat-completions request, as far as this service uses it. Unknown fields (`top_p`,
 * `seed`, `stop`, vendor extensions) are dropped rather than refused, because clients send many;
 * `null` is accepted wherever OpenAI accepts it.
 */
export const ChatCompletionRequestSchema = z.object({
  model: z.string().min(1),
  messages: z.array(RequestMessageSchema).min(1).max(MAX_MESSAGES),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  temperature: TemperatureSchema.nullish(),
  max_tokens: MaxTokensSchema.nullish(),
  max_completion_tokens: MaxTokensSchema.nullish(),
  n: z.number().int().min(1).nullish(),
  tools: z.array(ToolDefinitionSchema).max(128).nullish(),
  tool_choice: ToolChoiceSchema.nullish(),
  response_format: ResponseFormatSchema.nullish(),
  user: z.string().max(256).nullish(),
  metadata: MetadataSchema.nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

/** Parses a request body, answering problems the way OpenAI does (one problem, named by its param). */
export function parseChatRequest(body: unknown): ChatCompletionRequest {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw invalidRequest('The request body must be a JSON object (content-type: application/json).');
  }
  const parsed = ChatCompletionRequestSchema.safeParse(body, { reportInput: true });
  if (!parsed.success) throw fromZodError(parsed.error);
  const request = parsed.data;
  if ((request.n ?? 1) > 1) {
    throw invalidRequest('n > 1 is not supported: a pattern produces one answer per call.', 'n', 'unsupported_value');
  }
  if (request.stream_options && request.stream !== true) {
    throw invalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options', 'invalid_value');
  }
  const chosen = request.tool_choice;
  if (typeof chosen === 'object' && chosen !== null && request.tools && !request.tools.some((tool) => tool.function.name === chosen.function.name)) {
    throw invalidRequest(`Invalid value for 'tool_choice': function '${chosen.function.name}' is not among 'tools'.`, 'tool_choice', 'invalid_value');
  }
  // The checks a task's tools get (schemas that compile, unique names, a tool_choice that exists),
  // answered as OpenAI does: the first problem, named by its param.
  const [problem] = checkToolRequest(request.tools ?? undefined, request.tool_choice ?? undefined);
  if (problem !== undefined) {
    const param = problem.path.replace(/^toolChoice/, 'tool_choice').replace(/\.(\d+)(?=\.|$)/g, '[$1]');
    throw invalidRequest(`Invalid value for '${param}': ${problem.message.replace(/\btoolChoice\b/g, 'tool_choice')}.`, param, 'invalid_value');
  }
  return request;
}

/** Whether the caller asked the task to outlive its HTTP call (OpenAI metadata values are strings). */
export const runsInBackground = (request: ChatCompletionRequest): boolean => request.metadata?.background === 'true';

/** The token limit the caller set; `max_completion_tokens` is OpenAI's newer name and wins. */
export const maxTokensOf = (request: ChatCompletionRequest): number | undefined => request.max_completion_tokens ?? request.max_tokens ?? undefined;

/**
 * The POST /tasks body for a chat request. `user` joins the metadata under `user` (over a metadata
 * key of that name), so `GET /tasks/:id` shows who asked.
 */
export function toTaskRequest(request: ChatCompletionRequest, pattern: string): CreateTaskRequest {
  const maxTokens = maxTokensOf(request);
  const options: NonNullable<CreateTaskRequest['options']> = {
    ...(request.temperature != null && { temperature: request.temperature }),
    ...(maxTokens !== undefined && { maxTokens }),
  };
  const metadata: Record<string, string> = { ...request.metadata, ...(request.user != null && { user: request.user }) };
  return {
    messages: toTaskMessages(request.messages),
    pattern,
    ...(Object.keys(options).length > 0 && { options }),
    ...(request.tools && { tools: request.tools }),
    ...(request.tool_choice && { toolChoice: request.tool_choice }),
    ...(request.response_format && { responseFormat: request.response_format }),
    ...(Object.keys(metadata).length > 0 && { metadata }),
  };
}

/**
 * Chat messages as the models read them. The models behind the patterns get no tool protocol, so a
 * tool exchange becomes plain text: an assistant's calls are written out after its text, and tool
 * results become one user message per run of results, each naming the call it answers. Every model
 * and chat template reads that, and turns still alternate.
 */
export function toTaskMessages(messages: RequestMessage[]): ChatMessageInput[] {
  const functionNames = new Map<string, string>();
  const converted: ChatMessageInput[] = [];
  let toolResults: string[] = [];
  const flushToolResults = (lastIndex: number) => {
    if (toolResults.length === 0) return;
    const content = toolResults.join('\n\n');
    checkConvertedLength(content, lastIndex - toolResults.length + 1, lastIndex);
    converted.push({ role: 'user', content });
    toolResults = [];
  };

  messages.forEach((message, index) => {
    if (message.role !== 'tool' && message.role !== 'function') flushToolResults(index - 1);
    if (message.role === 'tool' || message.role === 'function') {
      const text = message.content === null ? '' : contentText(message.content, index);
      const heading =
        message.role === 'tool'
          ? `Result of tool call ${message.tool_call_id}${nameSuffix(functionNames.get(message.tool_call_id))}:`
          : `Result of function ${message.name}:`;
      toolResults.push(`${heading}\n${text}`);
      return;
    }
    if (message.role === 'assistant') {
      const calls = [
        ...(message.tool_calls ?? []).map((call) => {
          functionNames.set(call.id, call.function.name);
          return `Tool call ${call.id}: ${call.function.name} ${call.function.arguments}`;
        }),
        ...(message.function_call ? [`Function call: ${message.function_call.name} ${message.function_call.arguments}`] : []),
      ];
      const text = [message.content == null ? '' : contentText(message.content, index), message.refusal ?? '', ...calls]
        .filter((part) => part !== '')
        .join('\n');
      checkConvertedLength(text, index, index);
      converted.push({ role: 'assistant', content: text, ...(message.name !== undefined && { name: message.name }) });
      return;
    }
    const content = contentText(message.content, index);
    checkConvertedLength(content, index, index);
    converted.push({
      role: message.role === 'developer' ? 'system' : message.role,
      content,
      ...(message.name !== undefined && { name: message.name }),
    });
  });
  flushToolResults(messages.length - 1);
  return converted;
}

/**
 * Each field was within MAX_TEXT_CHARS, but a message as the models read it (parts joined, tool
 * calls written out, a run of tool results made one message) may not be: refused here, naming the
 * messages, rather than by POST /tasks' validation in a shape OpenAI clients do not read.
 */
function checkConvertedLength(text: string, firstIndex: number, lastIndex: number): void {
  if (text.length <= MAX_TEXT_CHARS) return;
  const what =
    firstIndex === lastIndex ? `'messages[${lastIndex}]'` : `'messages[${firstIndex}]' to 'messages[${lastIndex}]' (tool results, read as one message)`;
  throw invalidRequest(
    `Invalid ${what}: the text the models would read is ${text.length} characters; at most ${MAX_TEXT_CHARS} are accepted.`,
    `messages[${lastIndex}]`,
    'string_above_max_length',
  );
}

const nameSuffix = (name: string | undefined) => (name === undefined ? '' : ` (${name})`);

/** A message's text; the models are text-only, so images, audio and files are refused by name. */
function contentText(content: string | Array<z.infer<typeof ContentPartSchema>>, messageIndex: number): string {
  if (typeof content === 'string') return content;
  return content
    .map((part, partIndex) => {
      if (part.type === 'text' && typeof part.text === 'string') return part.text;
      if (part.type === 'refusal' && typeof part.refusal === 'string') return part.refusal;
      const param = `messages[${messageIndex}].content[${partIndex}]`;
      if (part.type === 'text') throw invalidRequest(`Missing required parameter: '${param}.text'.`, `${param}.text`, 'missing_required_parameter');
      throw invalidRequest(
        `Content parts of type '${part.type}' are not supported: the models behind the patterns read text only.`,
        `${param}.type`,
        'unsupported_value',
      );
    })
    .join('');
}
