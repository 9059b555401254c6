import type { TaskEvent, TaskRecord, TaskResult } from '@mageagent/core';
import {
  extensionOf,
  finishReasonOf,
  headOf,
  identityOf,
  toolCallsOf,
  usageOf,
  type ChatCompletionChunk,
  type ChunkDelta,
  type CompletionIdentity,
} from './completion';
import { fromTaskError, OpenAIFacadeError, type OpenAIErrorBody } from './errors';

/** What goes out as one `data:` line: a chunk, or OpenAI's mid-stream error object. */
export type StreamFrame = ChatCompletionChunk | { error: OpenAIErrorBody };

/** The frames one task event turns into, and whether the stream is over (`done` ends with `[DONE]`). */
export interface StreamStep {
  frames: StreamFrame[];
  end?: 'done' | 'error';
}

export interface ChatStreamOptions {
  task: Pick<TaskRecord, 'id' | 'pattern' | 'createdAt'>;
  /** The model id as requested. */
  model: string;
  /** `stream_options.include_usage`. */
  includeUsage: boolean;
  maxTokens?: number;
}

/**
 * Turns a task's events into `chat.completion.chunk`s. Deltas of steps marked `final` are the
 * answer and go out as `content`; every other step's deltas go out as `reasoning_content`. When the
 * result arrives, whatever of `result.content` has not been sent yet follows as content (all of it
 * when no step was final), so the content a client concatenates is exactly `result.content`.
 *
 * Sent content cannot be taken back, yet a final step can run again: a retried model call
 * (`step.started` with a higher attempt) or a task restarted after its worker died. The new run's
 * text is then held back while it repeats what was sent and streams on from where the client is;
 * should it say something else, the stream ends with an error naming the task, whose complete
 * answer stays available at `GET /tasks/:id` (the task is not cancelled).
 */
export class ChatStreamTranslator {
  private readonly identity: CompletionIdentity;
  /** Ids of the current run's final steps, in the order they started. */
  private finalStepOrder: string[] = [];
  /** Each final step's text in the current run; a retry starts its step afresh. */
  private finalTexts = new Map<string, string>();
  private sentContent = '';
  private lastReasoningSource: string | undefined;
  private readonly attempts = new Map<string, number>();
  private processingSeen = false;
  private ended = false;

  constructor(private readonly options: ChatStreamOptions) {
    this.identity = identityOf(options.task, options.model);
  }

  /** The first chunk: OpenAI announces the assistant role before any text. */
  start(): ChatCompletionChunk {
    return this.chunk({ role: 'assistant', content: '' });
  }

  accept(event: TaskEvent): StreamStep {
    if (this.ended) return { frames: [] };
    switch (event.type) {
      case 'status':
        if (event.status === 'processing') {
          // A second `processing` is a restart: the run's output so far is void.
          if (this.processingSeen) this.startNewRun();
          this.processingSeen = true;
        }
        if (event.status === 'cancelled')
          return this.fail(fromTaskError({ code: 'CANCELLED', message: event.reason ?? 'the task was cancelled', retryable: false }));
        if (event.status === 'failed') return this.fail(new OpenAIFacadeError(500, 'the task failed', { code: 'internal' }));
        if (event.status === 'completed') return this.fail(new OpenAIFacadeError(500, 'the task completed without a result', { code: 'internal' }));
        return { frames: [] };
      case 'step.started':
        this.attempts.set(event.step.id, event.step.attempt);
        if (event.step.final === true) {
          if (!this.finalTexts.has(event.step.id)) this.finalStepOrder.push(event.step.id);
          this.finalTexts.set(event.step.id, '');
        }
        return { frames: [] };
      case 'delta':
        return this.finalTexts.has(event.stepId) ? this.answerDelta(event.stepId, event.text) : this.reasoningDelta(event.stepId, event.text);
      case 'result':
        return this.finish(event.result);
      case 'error':
        return this.fail(fromTaskError(event.error));
      default:
        return { frames: [] };
    }
  }

  private startNewRun(): void {
    this.finalStepOrder = [];
    this.finalTexts = new Map();
  }

  private answerDelta(stepId: string, text: string): StreamStep {
    this.finalTexts.set(stepId, (this.finalTexts.get(stepId) ?? '') + text);
    const produced = this.finalStepOrder.map((id) => this.finalTexts.get(id) ?? '').join('');
    if (produced.startsWith(this.sentContent)) return { frames: this.content(produced) };
    // A repeated run still catching up with what the client already has.
    if (this.sentContent.startsWith(produced)) return { frames: [] };
    return this.diverged();
  }

  private reasoningDelta(stepId: string, text: string): StreamStep {
    if (text === '') return { frames: [] };
    // Each step's (or retried attempt's) reasoning starts on its own paragraph.
    const source = `${stepId}#${this.attempts.get(stepId) ?? 1}`;
    const separator = this.lastReasoningSource !== undefined && this.lastReasoningSource !== source ? '\n\n' : '';
    this.lastReasoningSource = source;
    return { frames: [this.chunk({ reasoning_content: separator + text })] };
  }

  /** Sends the part of `answer` the client does not have yet. */
  private content(answer: string): StreamFrame[] {
    const rest = answer.slice(this.sentContent.length);
    if (rest === '') return [];
    this.sentContent = answer;
    return [this.chunk({ content: rest })];
  }

  private finish(result: TaskResult): StreamStep {
    if (!result.content.startsWith(this.sentContent)) return this.diverged();
    const frames = this.content(result.content);
    toolCallsOf(result.toolCalls).forEach((call, index) => {
      frames.push(this.chunk({ tool_calls: [{ index, ...call }] }));
    });
    frames.push({
      ...this.chunk({}, finishReasonOf(result, this.options.maxTokens)),
      mageagent: extensionOf(this.options.task, result),
    });
    if (this.options.includeUsage) frames.push({ ...headOf(this.identity, 'chat.completion.chunk'), choices: [], usage: usageOf(result.usage) });
    this.ended = true;
    return { frames, end: 'done' };
  }

  private diverged(): StreamStep {
    return this.fail(
      new OpenAIFacadeError(
        500,
        `the answer was regenerated after part of it had been streamed, and the new text differs; the task goes on and its complete answer will be at GET /tasks/${this.options.task.id}`,
        { code: 'answer_diverged' },
      ),
    );
  }

  private fail(error: OpenAIFacadeError): StreamStep {
    this.ended = true;
    return { frames: [{ error: error.body }], end: 'error' };
  }

  private chunk(delta: ChunkDelta, finishReason: ChatCompletionChunk['choices'][number]['finish_reason'] = null): ChatCompletionChunk {
    return {
      ...headOf(this.identity, 'chat.completion.chunk'),
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
      ...(this.options.includeUsage && { usage: null }),
    };
  }
}
