import type { RouteDecision, StepRecord, TaskRecord, TaskResult, TokenUsage, ToolCall } from '@mageagent/core';

/** OpenAI's token usage. */
export interface OpenAIUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A tool call in OpenAI's form: the arguments travel as a JSON string. */
export interface OpenAIToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export type FinishReason = 'stop' | 'length' | 'tool_calls';

/** The `mageagent` extension field: the pipeline record behind the answer, which OpenAI clients ignore. */
export interface MageAgentExtension {
  taskId: string;
  /** The pattern that produced the answer (for `auto`, the one it routed to). */
  pattern: string;
  /** Every model call, with its role, model, usage, verdict. */
  steps: StepRecord[];
  route: RouteDecision | null;
  approved: boolean | null;
  warnings: string[];
}

/** What every completion and chunk of one call share. */
export interface CompletionIdentity {
  /** `chatcmpl-<taskId>`. */
  id: string;
  /** Unix seconds of the task's creation. */
  created: number;
  /** The model id as the caller asked for it. */
  model: string;
}

/** OpenAI's `chat.completion` object, plus the `mageagent` extension. */
export interface ChatCompletion extends CompletionIdentity {
  object: 'chat.completion';
  choices: Array<{
    index: number;
    /** null when the answer is only tool calls, as OpenAI sends it. */
    message: { role: 'assistant'; content: string | null; refusal: null; tool_calls?: OpenAIToolCall[] };
    logprobs: null;
    finish_reason: FinishReason;
  }>;
  usage: OpenAIUsage;
  mageagent: MageAgentExtension;
}

/** A delta's tool call; the whole call travels in one delta. */
export interface ChunkToolCall extends OpenAIToolCall {
  index: number;
}

export interface ChunkDelta {
  role?: 'assistant';
  content?: string;
  /** Output of intermediate steps (drafts, losing candidates, reviews): shown as reasoning or ignored. */
  reasoning_content?: string;
  tool_calls?: ChunkToolCall[];
}

/** OpenAI's `chat.completion.chunk`; the last content chunk carries the `mageagent` extension. */
export interface ChatCompletionChunk extends CompletionIdentity {
  object: 'chat.completion.chunk';
  choices: Array<{ index: number; delta: ChunkDelta; logprobs: null; finish_reason: FinishReason | null }>;
  /** With `stream_options.include_usage`: null on every chunk but the last, which has no choices. */
  usage?: OpenAIUsage | null;
  mageagent?: MageAgentExtension;
}

export function identityOf(task: Pick<TaskRecord, 'id' | 'createdAt'>, model: string): CompletionIdentity {
  return { id: `chatcmpl-${task.id}`, created: Math.floor(Date.parse(task.createdAt) / 1000), model };
}

/** The fields every completion object starts with, in OpenAI's order. */
export function headOf<Kind extends 'chat.completion' | 'chat.completion.chunk'>(identity: CompletionIdentity, object: Kind) {
  return { id: identity.id, object, created: identity.created, model: identity.model };
}

export const usageOf = (usage: TokenUsage): OpenAIUsage => ({
  prompt_tokens: usage.promptTokens,
  completion_tokens: usage.completionTokens,
  total_tokens: usage.totalTokens,
});

export const toolCallsOf = (calls: ToolCall[]): OpenAIToolCall[] =>
  calls.map((call) => ({ id: call.id, type: 'function', function: { name: call.tool, arguments: JSON.stringify(call.arguments) } }));

/** Step kinds whose output is never the answer itself. */
const INTERMEDIATE_KINDS = new Set(['draft', 'review', 'judge', 'tools', 'route']);

/**
 * `tool_calls` when tools were extracted; `length` when a token limit was set and the call that
 * wrote the answer used all of it (the answer was cut, as OpenAI reports); `stop` otherwise. The
 * answering call is the last non-intermediate step of the answer's model.
 */
export function finishReasonOf(result: TaskResult, maxTokens: number | undefined): FinishReason {
  if (result.toolCalls.length > 0) return 'tool_calls';
  if (maxTokens === undefined) return 'stop';
  const answering = result.steps.findLast((step) => step.model === result.model && !INTERMEDIATE_KINDS.has(step.kind ?? 'answer'));
  return answering !== undefined && answering.usage.completionTokens >= maxTokens ? 'length' : 'stop';
}

export function extensionOf(task: Pick<TaskRecord, 'id' | 'pattern'>, result: TaskResult): MageAgentExtension {
  return {
    taskId: task.id,
    pattern: result.pattern ?? task.pattern,
    steps: result.steps,
    route: result.route ?? null,
    approved: result.approved ?? null,
    warnings: result.warnings ?? [],
  };
}

/** The `stream: false` answer for a completed task. */
export function buildChatCompletion(
  task: Pick<TaskRecord, 'id' | 'pattern' | 'createdAt'>,
  result: TaskResult,
  model: string,
  maxTokens: number | undefined,
): ChatCompletion {
  const toolCalls = toolCallsOf(result.toolCalls);
  return {
    ...headOf(identityOf(task, model), 'chat.completion'),
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          content: result.content === '' && toolCalls.length > 0 ? null : result.content,
          refusal: null,
          ...(toolCalls.length > 0 && { tool_calls: toolCalls }),
        },
        logprobs: null,
        finish_reason: finishReasonOf(result, maxTokens),
      },
    ],
    usage: usageOf(result.usage),
    mageagent: extensionOf(task, result),
  };
}
