import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { CancelledError, ModelResponseError, ModelUnavailableError, type MageError, type TaskEventPayload } from '@mageagent/core';
import { OpenAICompatibleModel, type ChatModel, type ChatRequest, type ChatCallOptions, type ChatResponse } from '@mageagent/models';
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
    retry: { retries: 2, baseDelayMs: 1, retryAfterMaxMs: 30_000 },
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
  context.retry = { retries: 5, baseDelayMs: 10_000, retryAfterMaxMs: 30_000 };
  const running = generate(context, new StepIds(), step);
  setTimeout(() => controller.abort(new CancelledError('stop')), 20);
  await expect(running).rejects.toMatchObject({ code: 'CANCELLED', message: 'stop' });
  expect(model.calls).toBe(1);
});

describe('Retry-After from a real model server', () => {
  const closers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    await Promise.all(closers.splice(0).map((close) => close()));
  });

  /**
   * An OpenAI-compatible server whose first `failures` calls answer `status` with the headers
   * `headers()` gives at that moment; later calls stream "recovered". Records when each call arrived.
   */
  async function flakyModel(failures: number, status: number, headers: () => Record<string, string>) {
    const arrivals: number[] = [];
    const server = createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        arrivals.push(performance.now());
        if (arrivals.length <= failures) {
          response.writeHead(status, { 'content-type': 'application/json', ...headers() });
          response.end(JSON.stringify({ error: { message: 'busy', type: 'server_error' } }));
          return;
        }
        response.writeHead(200, { 'content-type': 'text/event-stream' });
        response.end(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'recovered' }, finish_reason: 'stop' }] })}\n\ndata: [DONE]\n\n`);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    );
    const { port } = server.address() as AddressInfo;
    const model = new OpenAICompatibleModel({
      id: 'flaky',
      host: 'gpu-1',
      endpoint: `http://127.0.0.1:${port}/v1`,
      timeouts: { firstTokenMs: 2000, totalMs: 5000 },
    });
    /** Milliseconds between the failed call's arrival and its retry's. */
    const waited = () => arrivals[1]! - arrivals[0]!;
    return { model, arrivals, waited };
  }

  const warnings = (events: TaskEventPayload[]) => events.flatMap((event) => (event.type === 'warning' ? [event.message] : []));
  /** The delay a warning announces, and whether it says the server asked for it. */
  const announced = (message: string) => {
    const match = /retry 1 of 2 in (\d+) ms( as the server asked \(Retry-After\))?$/.exec(message);
    return { delayMs: Number(match?.[1]), fromServer: match?.[2] !== undefined };
  };
  // setTimeout may fire a millisecond early by rounding; everything else only adds to the wait.
  const TIMER_SLACK_MS = 2;

  it.each([
    ['Retry-After in seconds', 503, () => ({ 'retry-after': '1' }), 1000, 1000],
    // Whole seconds, so 1 to 2 s, less the few ms between the server's clock reading and the client's.
    ['an HTTP-date 2 s ahead', 503, () => ({ 'retry-after': new Date(Date.now() + 2000).toUTCString() }), 900, 2000],
    ['retry-after-ms', 429, () => ({ 'retry-after-ms': '300' }), 300, 300],
  ])('waits out %s before the retry, and says so', async (_case, status, headers, atLeastMs, announcedAtMost) => {
    const { model, arrivals, waited } = await flakyModel(1, status, headers);
    const { context, events } = contextFor(model);
    const outcome = await generate(context, new StepIds(), step);
    expect(outcome).toMatchObject({ content: 'recovered', step: { attempt: 2 } });
    expect(arrivals).toHaveLength(2);
    const [warning] = warnings(events);
    const { delayMs, fromServer } = announced(warning!);
    expect(fromServer).toBe(true);
    expect(delayMs).toBeGreaterThanOrEqual(atLeastMs);
    expect(delayMs).toBeLessThanOrEqual(announcedAtMost);
    expect(waited()).toBeGreaterThanOrEqual(delayMs - TIMER_SLACK_MS);
    // Upper bounds only tell a wait of this length from a far longer one: loaded machines are slow.
    expect(waited()).toBeLessThan(delayMs + 1500);
  });

  it('ignores a garbage Retry-After and keeps its own backoff', async () => {
    const { model, waited } = await flakyModel(1, 503, () => ({ 'retry-after': 'in a while', 'retry-after-ms': '-5' }));
    const { context, events } = contextFor(model);
    await expect(generate(context, new StepIds(), step)).resolves.toMatchObject({ content: 'recovered' });
    expect(announced(warnings(events)[0]!)).toEqual({ delayMs: expect.any(Number), fromServer: false });
    expect(waited()).toBeLessThan(1000);
  });

  it('keeps its own backoff when that is the longer wait', async () => {
    const { model, waited } = await flakyModel(1, 503, () => ({ 'retry-after-ms': '10' }));
    const { context, events } = contextFor(model);
    context.retry = { ...context.retry, baseDelayMs: 250 };
    await generate(context, new StepIds(), step);
    const { delayMs, fromServer } = announced(warnings(events)[0]!);
    expect(fromServer).toBe(false);
    expect(delayMs).toBeGreaterThanOrEqual(250);
    expect(waited()).toBeGreaterThanOrEqual(delayMs - TIMER_SLACK_MS);
  });

  it('fails at once, still retryable, when the server asks for longer than the cap', async () => {
    const { model, arrivals } = await flakyModel(1, 429, () => ({ 'retry-after': '120' }));
    const { context, events } = contextFor(model);
    const started = performance.now();
    const error = (await generate(context, new StepIds(), step).catch((failure: unknown) => failure)) as MageError;
    expect(performance.now() - started).toBeLessThan(5000);
    expect(error).toBeInstanceOf(ModelUnavailableError);
    expect(error).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryable: true, retryAfterMs: 120_000, details: { status: 429 } });
    expect(error.message).toContain('the server asked for a wait of 120000 ms (Retry-After), longer than the 30000 ms a step waits');
    expect(arrivals).toHaveLength(1);
    expect(warnings(events)).toEqual([]);
  });

  it('stops waiting the moment the task is cancelled', async () => {
    const { model, arrivals } = await flakyModel(1, 503, () => ({ 'retry-after': '20' }));
    const controller = new AbortController();
    const { context } = contextFor(model, controller.signal);
    const running = generate(context, new StepIds(), step);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const abortedAt = performance.now();
    controller.abort(new CancelledError('stop'));
    await expect(running).rejects.toMatchObject({ code: 'CANCELLED', message: 'stop' });
    expect(performance.now() - abortedAt).toBeLessThan(2000);
    expect(arrivals).toHaveLength(1);
  });
});

test('runPattern runs primary and refuses an unknown pattern with the allowed names', async () => {
  const registry = new PatternRegistry();
  const { context } = contextFor(new ScriptedModel(['the answer']));
  const result = await runPattern(registry, 'primary', { messages: step.messages, options: {} }, context);
  expect(result).toMatchObject({ content: 'the answer', toolCalls: [], model: 'fake-72b', usage: { totalTokens: 5 } });
  expect(result.steps).toHaveLength(1);
  expect(() => registry.get('nope')).toThrow(/unknown pattern/);
});
