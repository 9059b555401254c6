import type { TaskEventPayload } from '@mageagent/core';
import type { ChatCallOptions, ChatModel, ChatRequest, ChatResponse } from '@mageagent/models';
import type { PatternContext } from './context';

/** How a fake model answers one call: text, or an error to throw. */
export type FakeAnswer = string | Error | ((request: ChatRequest, call: number) => string | Error | Promise<string | Error>);

/**
 * An in-process model implementing the real ChatModel interface, for pattern tests. Answers come
 * from a script (one entry per call, the last repeating) and every request is kept.
 */
export class FakeModel implements ChatModel {
  readonly requests: ChatRequest[] = [];
  readonly structuredOutput: boolean;
  /** Calls started and not yet finished, to check what runs at the same time. */
  inFlight = 0;
  maxInFlight = 0;

  constructor(
    readonly id: string,
    private readonly script: FakeAnswer[],
    options: { host?: string; structuredOutput?: boolean; delayMs?: number } = {},
  ) {
    this.host = options.host ?? 'fake-host';
    this.structuredOutput = options.structuredOutput ?? false;
    this.delayMs = options.delayMs ?? 0;
  }

  readonly host: string;
  private readonly delayMs: number;

  get calls(): number {
    return this.requests.length;
  }

  async chat(request: ChatRequest, options: ChatCallOptions = {}): Promise<ChatResponse> {
    const call = this.requests.length;
    this.requests.push(request);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      const entry = this.script[Math.min(call, this.script.length - 1)]!;
      const outcome = typeof entry === 'function' ? await entry(request, call) : entry;
      if (outcome instanceof Error) throw outcome;
      options.onDelta?.(outcome);
      const words = outcome.split(/\s+/).filter(Boolean).length;
      return { content: outcome, usage: { promptTokens: 10, completionTokens: words, totalTokens: 10 + words }, finishReason: 'stop', model: this.id };
    } finally {
      this.inFlight -= 1;
    }
  }
}

/** A PatternContext over fake models by role, collecting every event. */
export function fakeContext(models: Record<string, ChatModel>, signal: AbortSignal = new AbortController().signal) {
  const events: TaskEventPayload[] = [];
  const context: PatternContext = {
    models: {
      role: (name) => {
        const model = models[name];
        if (!model) throw new Error(`no fake model for role ${name}`);
        return model;
      },
      has: (name) => name in models,
    },
    events: { emit: (event) => events.push(event) },
    signal,
    retry: { retries: 1, baseDelayMs: 1, retryAfterMaxMs: 30_000 },
  };
  return { context, events };
}
