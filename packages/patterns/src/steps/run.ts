import type { AggregationRecord, ChatMessage, CritiqueRecord, RouteDecision, SelectionRecord, StepRecord, TaskOptions, ToolCall } from '@mageagent/core';
import type { PatternContext, PatternInput } from '../context';
import { renderTemplate } from '../templates';
import { StepIds, type GenerateOutcome } from '../generate';

/** The current answer of a run, and how it was made (so a revision can continue that conversation). */
export interface Answer {
  content: string;
  model: string;
  role: string;
  /** What the answering call was sent, so a revision continues that conversation (its system prompt included). */
  messages: ChatMessage[];
  options: TaskOptions;
}

/** The state of one pattern run, shared by its steps (and by a routed-to pattern). */
export class PipelineRun {
  readonly stepIds = new StepIds();
  readonly steps: StepRecord[] = [];
  readonly outputs = new Map<string, string>();
  readonly toolCalls: ToolCall[] = [];
  readonly warnings: string[] = [];
  answer: Answer | undefined;
  /** Text a tools-only pipeline's model wrote around its calls; the content when there is no answer. */
  toolProse = '';
  approved: boolean | undefined;
  route: RouteDecision | undefined;
  aggregation: AggregationRecord | undefined;
  selection: SelectionRecord | undefined;
  critique: CritiqueRecord | undefined;
  /** An extractTools step has run (or decided not to): later ones in the same run do nothing. */
  extractionConsidered = false;
  stopped = false;
  pattern: string;
  /** The request as one text, quoted in reviewer, judge, tools and router prompts. */
  readonly requestText: string;
  /** The newest user message: what routing and tool-need rules look at. */
  readonly lastUserText: string;

  constructor(
    readonly input: PatternInput,
    readonly context: PatternContext,
    pattern: string,
  ) {
    this.pattern = pattern;
    this.requestText = conversationText(input.messages);
    this.lastUserText = [...input.messages].reverse().find((message) => message.role === 'user')?.content ?? this.requestText;
  }

  warn(message: string, stepId?: string): void {
    this.warnings.push(message);
    this.context.events.emit({ type: 'warning', message, ...(stepId !== undefined && { stepId }) });
  }

  record(outcome: GenerateOutcome): GenerateOutcome {
    this.steps.push(outcome.step);
    return outcome;
  }

  /** Options for steps whose output may become the answer: the request's, over the step's. */
  answerOptions(step: { temperature?: number; maxTokens?: number }): TaskOptions {
    const { temperature, maxTokens } = this.input.options;
    return {
      ...(step.temperature !== undefined && { temperature: step.temperature }),
      ...(step.maxTokens !== undefined && { maxTokens: step.maxTokens }),
      ...(temperature !== undefined && { temperature }),
      ...(maxTokens !== undefined && { maxTokens }),
    };
  }

  get responseFormat(): Record<string, unknown> | undefined {
    const format = this.input.responseFormat;
    return format && format.type !== 'text' ? format : undefined;
  }

  render(template: string): string {
    return renderTemplate(template, { request: this.requestText, answer: this.answer?.content ?? '', steps: this.outputs });
  }

  /** The conversation a step sends: the request's, or one rendered prompt; with an optional system message first. */
  messagesFor(step: { system?: string; prompt?: string }): ChatMessage[] {
    const system: ChatMessage[] = step.system === undefined ? [] : [{ role: 'system', content: this.render(step.system) }];
    if (step.prompt === undefined) return [...system, ...this.input.messages];
    return [...system, { role: 'user', content: this.render(step.prompt) }];
  }
}

/** One text for a conversation: the message itself when there is one, a labelled transcript otherwise. */
export function conversationText(messages: ChatMessage[]): string {
  const spoken = messages.filter((message) => message.role !== 'system');
  if (spoken.length === 1 && messages.length === 1) return spoken[0]!.content;
  return messages.map((message) => `${message.role}: ${message.content}`).join('\n\n');
}

export function truncate(text: string, length: number): string {
  return text.length <= length ? text : `${text.slice(0, length - 1)}…`;
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
