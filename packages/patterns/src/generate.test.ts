import { CancelledError, ModelResponseError, ModelUnavailableError, type TaskEventPayload } from '@mageagent/core';
import type { ChatModel, ChatRequest, ChatCallOptions, ChatResponse } from '@mageagent/models';
import type { PatternContext } from './context';
import { generate, StepIds } from './generate';
import { PatternRegistry, runPattern } from './patterns';

/** A fake model implementing the real interface: answers from a script of outcomes. */
class ScriptedModel implements ChatModel {
  readonly id = 'fake-72b';
  readonly host = 'fake-host';
  calls = 0;
  constructor(private readonly outcomes: Array<Error | string>) {}

  async chat(_request: ChatRequest, options: ChatCallOptions = {}): Promise<ChatResponse> {
    const outcome = this.outcomes[Math.min(this.calls, this.outcomes.length - 1)]!;
    this.calls += 1;
    if (outcome instanceof Error) throw outcome;
    for (const word of outcome.split(' ')) options.onDelta?.(`${word} `);
    return { content: outcome, usage: { promptTokens: 3, completionTokens: 2, totalTokens: 5 }, finishReason: 'stop', model: this.id };
  }
}

function contextFor(model: ChatModel, signal = new AbortController().signal) {
  const events: TaskEventPayload[] = [];
  const context: PatternContext = {
    models: { role: () => model, has: () => true },
    events: { emit: (event) => events.push(event) },
    signal,
    retry: { retries: 2, baseDelayMs: 1 },
  };
  return { context, events };
}

const step = { name: 'primary', role: 'primary', messages: [{ role: 'user' as const, content: 'hi' }], options: {} };

test('a successful call emits started, deltas and completed, and records the step', async () => {
  const { context, events } = contextFor(new ScriptedModel(['hello there']));
  const outcome = await generate(context, new StepIds(), step);
  expect(outcome.content).toBe('hello there');
  expect(outcome.step).toMatchObject({ id: 'primary-1', role: 'primary', model: 'fake-72b', host: 'fake-host', attempt: 1 });
  expect(events.map((event) => event.type)).toEqual(['step.started', 'delta', 'delta', 'step.completed']);
});

test('retryable errors are retried, each retry announced, until the call succeeds', async () => {
  const model = new ScriptedModel([new ModelUnavailableError('down'), new ModelUnavailableError('still down'), 'finally']);
  const { context, events } = contextFor(model);
  const outcome = await generate(context, new StepIds(), step);
  expect(outcome).toMatchObject({ content: 'finally', step: { attempt: 3 } });
  expect(model.calls).toBe(3);
  expect(events.filter((event) => event.type === 'warning')).toHaveLength(2);
  expect(events.filter((event) => event.type === 'step.started').map((event) => event.type === 'step.started' && event.step.attempt)).toEqual([1, 2, 3]);
});

test('retries stop after the policy allows, and final errors are not retried', async () => {
  const down = new ScriptedModel([new ModelUnavailableError('down')]);
  await expect(generate(contextFor(down).context, new StepIds(), step)).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE' });
  expect(down.calls).toBe(3);
  const rejected = new ScriptedModel([new ModelResponseError('bad request')]);
  await expect(generate(contextFor(rejected).context, new StepIds(), step)).rejects.toMatchObject({ code: 'MODEL_ERROR' });
  expect(rejected.calls).toBe(1);
});

test('an abort during the backoff ends the step with the abort reason', async () => {
  const controller = new AbortController();
  const model = new ScriptedModel([new ModelUnavailableError('down')]);
  const { context } = contextFor(model, controller.signal);
  context.retry = { retries: 5, baseDelayMs: 10_000 };
  const running = generate(context, new StepIds(), step);
  setTimeout(() => controller.abort(new CancelledError('stop')), 20);
  await expect(running).rejects.toMatchObject({ code: 'CANCELLED', message: 'stop' });
  expect(model.calls).toBe(1);
});

test('runPattern runs primary and refuses an unknown pattern with the allowed names', async () => {
  const registry = new PatternRegistry();
  const { context } = contextFor(new ScriptedModel(['the answer']));
  const result = await runPattern(registry, 'primary', { messages: step.messages, options: {} }, context);
  expect(result).toMatchObject({ content: 'the answer', toolCalls: [], model: 'fake-72b', usage: { totalTokens: 5 } });
  expect(result.steps).toHaveLength(1);
  expect(() => registry.get('nope')).toThrow(/unknown pattern/);
});
