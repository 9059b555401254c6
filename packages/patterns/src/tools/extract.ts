import { ValidationError, type ChatMessage, type StepRecord, type ToolCall } from '@mageagent/core';
import type { PatternContext } from '../context';
import { generate, VERDICT_OPTIONS, type StepIds } from '../generate';
import { toolsRetryPrompt, toolsSystemPrompt, toolsUserPrompt } from '../prompts';
import type { JsonSchema, ToolSpec } from './definitions';
import { parseToolCalls } from './parse';
import { validateToolCalls, type ValidToolCall } from './validate';

/** Step names clients see for the extraction and its one retry. */
export const EXTRACT_TOOLS_STEP = 'extract-tools';
export const EXTRACT_TOOLS_RETRY_STEP = 'extract-tools-retry';

/** What to extract tool calls from, and which tools may be called. */
export interface ExtractToolsOptions {
  /** The role whose model extracts; `tools` by default. */
  role?: string;
  /** The user's request. */
  request: string;
  /** An answer to turn into calls, when another model answered first. */
  answer?: string;
  specs: ToolSpec[];
  /** An empty list of calls is invalid (toolChoice `required` or a named function). */
  required?: boolean;
  /** Marks the extraction steps as the task's final output (see GenerateStep.final). */
  final?: boolean;
}

/** The extracted calls, never executed; on giving up, no calls and a warning saying why. */
export interface ExtractToolsResult {
  /** Ids `call_1`, `call_2`, ... in the order the model wrote them. */
  calls: ToolCall[];
  steps: StepRecord[];
  /** The last reply's text outside the JSON (reasoning excluded); empty when it could not be read. */
  prose: string;
  warnings: string[];
}

/**
 * OpenAI `response_format` that constrains the reply to calls of the offered tools. Strict mode
 * is off because it demands `additionalProperties: false` and every property required, which
 * request schemas seldom satisfy.
 */
export function toolCallsResponseFormat(specs: readonly ToolSpec[]): Record<string, unknown> {
  const callSchemas = specs.map((spec) => ({
    type: 'object',
    properties: { tool: { const: spec.name }, arguments: embeddable(spec.parameters) },
    required: ['tool', 'arguments'],
    additionalProperties: false,
  }));
  return {
    type: 'json_schema',
    json_schema: {
      name: 'tool_calls',
      strict: false,
      schema: {
        type: 'object',
        properties: { tool_calls: { type: 'array', items: { anyOf: callSchemas } } },
        required: ['tool_calls'],
        additionalProperties: false,
      },
    },
  };
}

/**
 * A tool's parameters as they can sit inside the response schema. Local `$ref`s would resolve
 * against the response schema's root instead of the tool's, so such schemas are loosened to any
 * object: the grammar then guides less, but every call is still validated against the original.
 */
function embeddable(parameters: JsonSchema): JsonSchema {
  if (JSON.stringify(parameters).includes('"$ref"')) return { type: 'object' };
  const { $schema: _dialect, $id: _id, ...rest } = parameters;
  return rest;
}

interface Attempt {
  content: string;
  step: StepRecord;
  calls: ValidToolCall[];
  unknown: string[];
  prose: string;
  /** Why the reply cannot be accepted; empty when it can. */
  problems: string[];
}

/**
 * Asks the tools model which tool calls carry out a request (and its answer), through
 * `generate` so the steps stream and are recorded like any other. A reply that cannot be read,
 * has an invalid call to an offered tool, or has no calls when one is required is sent back
 * once with the errors. If the second reply is bad too, no calls are returned, not the valid
 * part of it: the calls may depend on each other, and half a plan is worse than none. Calls to
 * tools not offered are dropped with a warning. Nothing is executed.
 */
export async function extractTools(context: PatternContext, stepIds: StepIds, options: ExtractToolsOptions): Promise<ExtractToolsResult> {
  const { specs, required = false, final = false } = options;
  if (specs.length === 0) throw new ValidationError('tool-call extraction needs at least one tool to offer');
  const role = options.role ?? 'tools';
  const responseFormat = context.models.role(role).structuredOutput ? toolCallsResponseFormat(specs) : undefined;

  const ask = async (name: string, messages: ChatMessage[]): Promise<Attempt> => {
    const outcome = await generate(context, stepIds, {
      name,
      role,
      messages,
      options: VERDICT_OPTIONS,
      kind: 'tools',
      ...(final && { final: true }),
      ...(responseFormat && { responseFormat }),
    });
    const parsed = parseToolCalls(outcome.content);
    if (!parsed.ok) return { ...outcome, calls: [], unknown: [], prose: '', problems: [parsed.error] };
    const checked = validateToolCalls(parsed.calls, specs);
    const problems = [...checked.errors];
    if (required && checked.calls.length === 0 && problems.length === 0) {
      problems.push('at least one call to an available tool is required');
    }
    return { ...outcome, calls: checked.calls, unknown: checked.unknown, prose: parsed.prose, problems };
  };

  const warnings: string[] = [];
  const warn = (stepId: string, message: string) => {
    warnings.push(message);
    context.events.emit({ type: 'warning', stepId, message });
  };
  const accept = (attempt: Attempt, steps: StepRecord[]): ExtractToolsResult => {
    if (attempt.unknown.length > 0) warn(attempt.step.id, `dropped calls to unknown tools: ${attempt.unknown.join(', ')}`);
    return {
      calls: attempt.calls.map((call, index) => ({ id: `call_${index + 1}`, ...call })),
      steps,
      prose: attempt.prose,
      warnings,
    };
  };

  const messages: ChatMessage[] = [
    {
      role: 'system',
      content: toolsSystemPrompt(specs.map(({ name, description, parameters }) => ({ name, ...(description !== undefined && { description }), parameters }))),
    },
    { role: 'user', content: toolsUserPrompt(options.request, options.answer) },
  ];
  const first = await ask(EXTRACT_TOOLS_STEP, messages);
  if (first.problems.length === 0) return accept(first, [first.step]);

  const availableNames = specs.map((spec) => spec.name).join(', ');
  const corrections =
    first.unknown.length > 0 ? [...first.problems, `unknown tools ${first.unknown.join(', ')} (available: ${availableNames})`] : first.problems;
  const second = await ask(EXTRACT_TOOLS_RETRY_STEP, [
    ...messages,
    { role: 'assistant', content: first.content },
    { role: 'user', content: toolsRetryPrompt(corrections) },
  ]);
  if (second.problems.length === 0) return accept(second, [first.step, second.step]);

  const message = `tool-call extraction gave up after a retry, no tool calls returned: ${second.problems.join('; ')}`;
  context.logger?.warn('tool-call extraction gave up', { step: second.step.id, problems: second.problems });
  warn(second.step.id, message);
  return { calls: [], steps: [first.step, second.step], prose: second.prose, warnings };
}
