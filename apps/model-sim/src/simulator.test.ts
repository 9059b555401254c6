import { fork } from 'node:child_process';
import path from 'node:path';
import { CancelledError, ModelResponseError, ModelTimeoutError, ModelUnavailableError, type TaskEventPayload } from '@mageagent/core';
import { OpenAICompatibleModel, loadModelsConfig } from '@mageagent/models';
import { generate, reviewSystemPrompt, reviewUserPrompt, StepIds, type PatternContext } from '@mageagent/patterns';
import { FailTimesCounter } from './fail-times';
import {
  SIMULATOR_OWNER,
  createSimulator,
  inventText,
  modelsFromConfig,
  parseDirectives,
  splitIntoTokens,
  type Simulator,
  type SimulatorOptions,
  type SimulatorStats,
} from './simulator';

const REPO_ROOT = path.resolve(__dirname, '../../..');

/** Instant by default so only the timing tests wait. */
const FAST_MODEL = { id: 'fast', host: 'gpu-a', ttftMs: 0, tokensPerSecond: 0, defaultTokens: 12 };
const SLOW_MODEL = { id: 'slow', host: 'gpu-b', ttftMs: 1000, tokensPerSecond: 10, defaultTokens: 5 };

let simulator: Simulator;
let baseUrl: string;

async function start(options: SimulatorOptions = { models: [FAST_MODEL, SLOW_MODEL] }): Promise<void> {
  simulator = createSimulator(options);
  const port = await simulator.listen(0);
  baseUrl = `http://127.0.0.1:${port}`;
}

afterEach(async () => {
  await simulator?.close();
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(check: (stats: SimulatorStats) => boolean, timeoutMs = 2000): Promise<SimulatorStats> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stats = simulator.stats();
    if (check(stats)) return stats;
    if (Date.now() > deadline) throw new Error(`condition not met; stats: ${JSON.stringify(stats)}`);
    await sleep(10);
  }
}

function chat(body: Record<string, unknown>, urlPath = '/v1/chat/completions', signal?: AbortSignal): Promise<Response> {
  return fetch(`${baseUrl}${urlPath}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal,
  });
}

const userMessage = (content: string) => [{ role: 'user', content }];

interface ChatCompletion {
  model: string;
  object: string;
  choices: Array<{ message: { content: string }; finish_reason: string }>;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

/** The JSON payloads of an SSE body, `[DONE]` kept as the string. */
function ssePayloads(text: string): Array<Record<string, unknown> | '[DONE]'> {
  return text
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => line.slice(6))
    .map((data) => (data === '[DONE]' ? '[DONE]' : (JSON.parse(data) as Record<string, unknown>)));
}

describe('parseDirectives', () => {
  it('reads keys, flags, several blocks with later keys winning, and keeps unknown keys', () => {
    const text = 'Hi [[sim: tokens=5; TPS = 20 ; hang]] there [[SIM:tokens=7;judge=A;;]] and [[other: x=1]]';
    expect(parseDirectives(text)).toEqual({ tokens: '7', tps: '20', hang: true, judge: 'A' });
  });

  it('returns nothing when there is no block', () => {
    expect(parseDirectives('plain [sim: tokens=3] text')).toEqual({});
  });
});

describe('text generation', () => {
  it('invents the requested number of tokens that join back to the text', () => {
    const text = inventText(42, 25);
    const tokens = splitIntoTokens(text);
    expect(tokens).toHaveLength(25);
    expect(tokens.join('')).toBe(text);
    expect(text).toMatch(/^[A-Z].*\.$/);
    expect(inventText(42, 25)).toBe(text);
    expect(inventText(43, 25)).not.toBe(text);
  });

  it('invents variants of the same length that never repeat each other, variant 0 being the plain text', () => {
    expect(inventText(42, 25, 0)).toBe(inventText(42, 25));
    const variants = Array.from({ length: 300 }, (_unused, variant) => inventText(42, 25, variant));
    expect(new Set(variants).size).toBe(300);
    for (const variant of variants) expect(splitIntoTokens(variant)).toHaveLength(25);
    // Even one-word answers: the word itself spells the variant, for the first 80.
    expect(new Set(Array.from({ length: 80 }, (_unused, variant) => inventText(7, 1, variant))).size).toBe(80);
    expect(new Set(Array.from({ length: 500 }, (_unused, variant) => inventText(7, 2, variant))).size).toBe(500);
  });
});

describe('modelsFromConfig', () => {
  it('serves every role of the shipped simulator config with its sim speeds', () => {
    const models = modelsFromConfig(loadModelsConfig(path.join(REPO_ROOT, 'config/models.sim.yaml'), {}));
    const primary = models.find((model) => model.roles.includes('primary'));
    expect(models.length).toBeGreaterThanOrEqual(4);
    expect(primary).toMatchObject({ host: 'sim-mac', tokensPerSecond: 8, ttftMs: 1500, defaultTokens: 120 });
  });
});

describe('model simulator HTTP', () => {
  it('answers the same request with the same text, and another prompt with another', async () => {
    await start();
    const ask = async (prompt: string) => (await (await chat({ model: 'fast', messages: userMessage(prompt) })).json()) as ChatCompletion;
    const first = await ask('Tell me about queues.');
    const second = await ask('Tell me about queues.');
    const other = await ask('Tell me about hosts.');
    expect(first.object).toBe('chat.completion');
    expect(first.model).toBe('fast');
    expect(first.choices[0]?.message.content).toBe(second.choices[0]?.message.content);
    expect(first.choices[0]?.message.content).not.toBe(other.choices[0]?.message.content);
    expect(splitIntoTokens(first.choices[0]?.message.content ?? '')).toHaveLength(12);
    expect(first.choices[0]?.finish_reason).toBe('stop');
    expect(first.usage).toEqual({ prompt_tokens: 6, completion_tokens: 12, total_tokens: 18 });
  });

  it('streams a role-only chunk, one chunk per token, a finish chunk, a usage chunk and [DONE]', async () => {
    await start();
    const messages = userMessage('Stream please.');
    const response = await chat({ model: 'fast', messages, stream: true, stream_options: { include_usage: true } });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const payloads = ssePayloads(await response.text());
    const chunks = payloads.slice(0, -1) as Array<{ object: string; model: string; choices: Array<Record<string, unknown>>; usage?: unknown }>;
    expect(payloads.at(-1)).toBe('[DONE]');
    expect(chunks.every((chunk) => chunk.object === 'chat.completion.chunk' && chunk.model === 'fast')).toBe(true);
    expect(chunks[0]?.choices[0]).toMatchObject({ delta: { role: 'assistant' }, finish_reason: null });
    const contentChunks = chunks.slice(1, -2);
    expect(contentChunks).toHaveLength(12);
    expect(chunks.at(-2)?.choices[0]).toMatchObject({ delta: {}, finish_reason: 'stop' });
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: 12 } });

    const streamed = contentChunks.map((chunk) => (chunk.choices[0]?.delta as { content: string } | undefined)?.content).join('');
    const whole = (await (await chat({ model: 'fast', messages })).json()) as ChatCompletion;
    expect(streamed).toBe(whole.choices[0]?.message.content);
  });

  it('leaves out the usage chunk unless include_usage is asked for', async () => {
    await start();
    const payloads = ssePayloads(await (await chat({ model: 'fast', messages: userMessage('x'), stream: true })).text());
    expect(payloads.some((payload) => payload !== '[DONE]' && 'usage' in payload)).toBe(false);
  });

  it('honours tokens= and cuts at max_tokens with finish_reason "length"', async () => {
    await start();
    const five = (await (await chat({ model: 'fast', messages: userMessage('[[sim: tokens=5]] go') })).json()) as ChatCompletion;
    expect(five.usage.completion_tokens).toBe(5);
    expect(five.choices[0]?.finish_reason).toBe('stop');
    const cut = (await (await chat({ model: 'fast', messages: userMessage('[[sim: tokens=50]] go'), max_tokens: 4 })).json()) as ChatCompletion;
    expect(cut.usage.completion_tokens).toBe(4);
    expect(cut.choices[0]?.finish_reason).toBe('length');
  });

  it('answers error= with that status and an OpenAI error body, counted in errors', async () => {
    await start();
    const failed = await chat({ model: 'fast', messages: userMessage('[[sim: error=500]]') });
    expect(failed.status).toBe(500);
    expect(((await failed.json()) as { error: { type: string } }).error.type).toBe('server_error');
    const limited = await chat({ model: 'fast', messages: userMessage('[[sim: error=429]]'), stream: true });
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('1');
    await limited.text();
    expect(simulator.stats()).toMatchObject({ requests: 2, errors: 2, inFlight: 0, aborted: 0 });
  });

  it('keeps a hang call in flight until the client aborts, then counts it as aborted', async () => {
    await start();
    const controller = new AbortController();
    const call = chat({ model: 'fast', messages: userMessage('[[sim: hang]]') }, '/v1/chat/completions', controller.signal);
    await waitFor((stats) => stats.inFlight === 1);
    await sleep(50);
    expect(simulator.stats().inFlight).toBe(1);
    controller.abort();
    await expect(call).rejects.toThrow();
    const stats = await waitFor((current) => current.inFlight === 0);
    expect(stats.aborted).toBe(1);
    expect(stats.inFlightByHost).toEqual({ 'gpu-a': 0 });
  });

  it('drops the connection after disconnect-after=N streamed tokens', async () => {
    await start();
    const response = await chat({ model: 'fast', messages: userMessage('[[sim: disconnect-after=3; tps=200]]'), stream: true });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let received = '';
    await expect(
      (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          received += decoder.decode(value, { stream: true });
        }
      })(),
    ).rejects.toThrow();
    const payloads = ssePayloads(received);
    expect(payloads).toHaveLength(4); // the role chunk and three tokens
    expect(payloads).not.toContain('[DONE]');
    const stats = await waitFor((current) => current.inFlight === 0);
    expect(stats).toMatchObject({ disconnects: 1, aborted: 0 });
  });

  it('counts calls by the /hosts/<host> prefix and tracks concurrency per host', async () => {
    await start();
    const slowCall = (urlPath: string) => chat({ model: 'fast', messages: userMessage('[[sim: ttft=150]] hi') }, urlPath).then((response) => response.json());
    await Promise.all([
      slowCall('/hosts/gpu-x/v1/chat/completions'),
      slowCall('/hosts/gpu-x/v1/chat/completions'),
      slowCall('/hosts/gpu-x/v1/chat/completions'),
      slowCall('/hosts/gpu-y/v1/chat/completions'),
      slowCall('/v1/chat/completions'),
    ]);
    const stats = simulator.stats({ includeCalls: true });
    expect(stats.requests).toBe(5);
    expect(stats.maxInFlight).toBe(5);
    expect(stats.maxInFlightByHost).toEqual({ 'gpu-x': 3, 'gpu-y': 1, 'gpu-a': 1 });
    expect(stats.requestsByHost).toEqual({ 'gpu-x': 3, 'gpu-y': 1, 'gpu-a': 1 });
    expect(stats.requestsByModel).toEqual({ fast: 5 });
    expect(stats.inFlight).toBe(0);
    expect(stats.busyMsByHost['gpu-x']).toBeGreaterThanOrEqual(140);
    expect(stats.busyMsByHost['gpu-x']).toBeLessThan(1000);
    expect(stats.calls).toHaveLength(5);
    expect(stats.calls?.[0]).toMatchObject({ model: 'fast', aborted: false });
    expect(stats.calls![0]!.endedAt - stats.calls![0]!.startedAt).toBeGreaterThanOrEqual(140);

    const overHttp = (await (await fetch(`${baseUrl}/sim/stats?calls=1`)).json()) as SimulatorStats;
    expect(overHttp.calls).toHaveLength(5);
    expect(((await (await fetch(`${baseUrl}/sim/stats`)).json()) as SimulatorStats).calls).toBeUndefined();
  });

  it('resets counters without letting a call that spans the reset drive inFlight negative', async () => {
    await start();
    await (await chat({ model: 'fast', messages: userMessage('one') })).json();
    const spanning = chat({ model: 'fast', messages: userMessage('[[sim: ttft=150]] two') }).then((response) => response.json());
    await waitFor((stats) => stats.inFlight === 1);
    const reset = await fetch(`${baseUrl}/sim/reset`, { method: 'POST' });
    expect(reset.status).toBe(200);
    expect(simulator.stats()).toMatchObject({ requests: 0, inFlight: 1, maxInFlight: 1, aborted: 0, requestsByModel: {} });
    await spanning;
    const stats = await waitFor((current) => current.inFlight === 0);
    expect(stats).toMatchObject({ requests: 0, inFlight: 0, inFlightByHost: { 'gpu-a': 0 } });
    expect(simulator.stats({ includeCalls: true }).calls).toEqual([]);
  });

  it('answers an unknown model with an OpenAI-style 404', async () => {
    await start();
    const response = await chat({ model: 'gpt-nope', messages: userMessage('hi') });
    expect(response.status).toBe(404);
    expect(((await response.json()) as { error: Record<string, unknown> }).error).toMatchObject({
      type: 'invalid_request_error',
      param: 'model',
      code: 'model_not_found',
    });
    expect(simulator.stats().requests).toBe(0);
  });

  it('rejects malformed bodies with 400', async () => {
    await start();
    const response = await fetch(`${baseUrl}/v1/chat/completions`, { method: 'POST', body: '{nope' });
    expect(response.status).toBe(400);
    expect((await chat({ model: 'fast', messages: [] })).status).toBe(400);
  });

  it('lists its models as simulator-owned, with or without a host prefix, and answers /health', async () => {
    await start();
    for (const urlPath of ['/v1/models', '/hosts/gpu-z/v1/models']) {
      const list = (await (await fetch(`${baseUrl}${urlPath}`)).json()) as { object: string; data: Array<{ id: string; owned_by: string }> };
      expect(list.object).toBe('list');
      expect(list.data.map((model) => model.id)).toEqual(['fast', 'slow']);
      expect(list.data.every((model) => model.owned_by === SIMULATOR_OWNER)).toBe(true);
    }
    expect((await fetch(`${baseUrl}/health`)).status).toBe(200);
    expect((await fetch(`${baseUrl}/nowhere`)).status).toBe(404);
  });

  it('applies speedup to configured timing and takes directive timing as absolute', async () => {
    await start({ models: [SLOW_MODEL], speedup: 10 });
    // Configured: ttft 1000/10 = 100 ms, then 5 tokens at 100 tokens/s (4 gaps of 10 ms).
    let started = performance.now();
    await (await chat({ model: 'slow', messages: userMessage('x') })).json();
    let elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(130);
    expect(elapsed).toBeLessThan(600);
    // Directives: ttft 20 ms, 5 tokens at 50 tokens/s (4 gaps of 20 ms), not divided by the speedup.
    started = performance.now();
    await (await chat({ model: 'slow', messages: userMessage('[[sim: ttft=20; tps=50]] x'), stream: true })).text();
    elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(95);
    expect(elapsed).toBeLessThan(600);
  });

  it('sends keepalive comments while a long first token is pending', async () => {
    await start();
    const text = await (await chat({ model: 'fast', messages: userMessage('[[sim: ttft=1150; tokens=2]]'), stream: true })).text();
    expect(text.startsWith(': keepalive\n\n')).toBe(true);
    expect(ssePayloads(text).at(-1)).toBe('[DONE]');
  });

  it('answers many zero-latency calls quickly', async () => {
    await start();
    const started = performance.now();
    for (let batch = 0; batch < 10; batch += 1) {
      await Promise.all(
        Array.from({ length: 20 }, async (_unused, index) =>
          (await chat({ model: 'fast', messages: userMessage(`call ${batch}-${index}`), stream: index % 2 === 0 })).text(),
        ),
      );
    }
    expect(performance.now() - started).toBeLessThan(5000);
    expect(simulator.stats()).toMatchObject({ requests: 200, inFlight: 0, aborted: 0 });
  });
});

describe('sampling (temperature)', () => {
  const answer = async (prompt: string, extra: Record<string, unknown> = {}) =>
    ((await (await chat({ model: 'fast', messages: userMessage(prompt), ...extra })).json()) as ChatCompletion).choices[0]?.message.content ?? '';

  it('answers every sample of a request at temperature > 0 with another text, the first being the temperature-0 text', async () => {
    await start();
    const deterministic = await answer('Tell me about queues.');
    const samples = [];
    for (let sample = 0; sample < 4; sample += 1) samples.push(await answer('Tell me about queues.', { temperature: 0.7 }));
    expect(new Set(samples).size).toBe(4);
    expect(samples[0]).toBe(deterministic);
    for (const text of samples) expect(splitIntoTokens(text)).toHaveLength(FAST_MODEL.defaultTokens);
    // Other requests count on their own.
    expect(await answer('Tell me about hosts.', { temperature: 0.7 })).toBe(await answer('Tell me about hosts.'));
  });

  it('answers the same text at temperature 0 or without one, however often asked', async () => {
    await start();
    const texts = [await answer('Tell me about queues.', { temperature: 0.7 })];
    for (const extra of [{ temperature: 0 }, {}, { temperature: 0 }, { temperature: null }]) texts.push(await answer('Tell me about queues.', extra));
    expect(new Set(texts).size).toBe(1);
  });

  it('streams a sample as it answers it whole, variant by variant', async () => {
    await start();
    const streamed = await (await chat({ model: 'fast', messages: userMessage('Stream a sample.'), stream: true, temperature: 1 })).text();
    const deltas = ssePayloads(streamed).flatMap((payload) =>
      payload === '[DONE]' ? [] : (payload.choices as Array<{ delta: { content?: string } }>).map((choice) => choice.delta.content ?? ''),
    );
    expect(deltas.join('')).toBe(await answer('Stream a sample.'));
    expect(await answer('Stream a sample.', { temperature: 1 })).not.toBe(deltas.join(''));
  });

  it("logs each call's role, temperature and variant; a reset starts the samples over", async () => {
    await start();
    await answer('Count me.', { temperature: 0.7 });
    await answer('Count me.', { temperature: 0.7 });
    await answer('Count me.', { temperature: 0 });
    await answer('Count me.');
    const review = [
      { role: 'system', content: reviewSystemPrompt() },
      { role: 'user', content: reviewUserPrompt('Count me.', 'Counted.') },
    ];
    await chat({ model: 'fast', messages: review, temperature: 0.2 });
    await (await chat({ model: 'fast', messages: userMessage('Count me. [[sim: error=503]]'), temperature: 0.7 })).text();
    const response = await fetch(`${baseUrl}/sim/stats?calls=1`);
    const { calls } = (await response.json()) as SimulatorStats;
    expect(calls?.map(({ role, temperature, variant }) => ({ role, temperature, variant }))).toEqual([
      { role: 'answer', temperature: 0.7, variant: 0 },
      { role: 'answer', temperature: 0.7, variant: 1 },
      { role: 'answer', temperature: 0, variant: 0 },
      { role: 'answer', temperature: null, variant: 0 },
      { role: 'reviewer', temperature: 0.2, variant: 0 },
      { role: 'answer', temperature: 0.7, variant: 0 },
    ]);
    await fetch(`${baseUrl}/sim/reset`, { method: 'POST' });
    expect(await answer('Count me.', { temperature: 0.7 })).toBe(await answer('Count me.'));
  });

  it('counts only answered samples: a sample that failed and is retried answers what a healthy first call would', async () => {
    await start();
    const prompt = 'Sample me. [[sim: error=500; fail-times=1]]';
    const failed = await chat({ model: 'fast', messages: userMessage(prompt), temperature: 0.7 });
    expect(failed.status).toBe(500);
    await failed.text();
    const retried = await answer(prompt, { temperature: 0.7 });
    expect(retried).toBe(await answer(prompt));
    expect(await answer(prompt, { temperature: 0.7 })).not.toBe(retried);
  });
});

describe('fault directives', () => {
  /** Status and hint headers of one non-streaming call, its body read to the end. */
  async function answerTo(prompt: string, model = 'fast') {
    const response = await chat({ model, messages: userMessage(prompt) });
    await response.text();
    return { status: response.status, retryAfter: response.headers.get('retry-after'), retryAfterMs: response.headers.get('retry-after-ms') };
  }

  /** The `data:` payloads of an SSE body as raw text, so a broken one can be looked at. */
  const dataLines = (text: string) =>
    text
      .split('\n')
      .filter((line) => line.startsWith('data: '))
      .map((line) => line.slice(6));

  it('answers any 4xx/5xx error= status, with retry-after= and retry-after-ms= sent verbatim as headers', async () => {
    await start();
    expect(await answerTo('[[sim: error=503; retry-after=2]]')).toEqual({ status: 503, retryAfter: '2', retryAfterMs: null });
    expect(await answerTo('[[sim: error=429; retry-after=7]]')).toEqual({ status: 429, retryAfter: '7', retryAfterMs: null });
    expect(await answerTo('[[sim: error=500; retry-after-ms=250]]')).toEqual({ status: 500, retryAfter: null, retryAfterMs: '250' });
    expect(await answerTo('[[sim: error=503; retry-after=Sun, 06 Nov 2094 08:49:37 GMT]]')).toMatchObject({ retryAfter: 'Sun, 06 Nov 2094 08:49:37 GMT' });
    expect(await answerTo('[[sim: error=503; retry-after=soon]]')).toMatchObject({ retryAfter: 'soon' });
    expect(await answerTo('[[sim: error=503]]')).toEqual({ status: 503, retryAfter: null, retryAfterMs: null });
    expect(await answerTo('[[sim: error=418]]')).toMatchObject({ status: 418 });
    expect(await answerTo('[[sim: error=599]]')).toMatchObject({ status: 599 });
    expect(simulator.stats()).toMatchObject({ requests: 8, errors: 8 });
  });

  it('malformed-after=N streams N good tokens, then a data: line that is not JSON, and ends the body', async () => {
    await start();
    const text = await (await chat({ model: 'fast', messages: userMessage('[[sim: malformed-after=3]]'), stream: true })).text();
    const data = dataLines(text);
    expect(data).toHaveLength(5); // the role chunk, three tokens, the broken chunk
    const good = data.slice(0, 4).map((line) => JSON.parse(line) as { choices: Array<{ delta: Record<string, string> }> });
    expect(good.slice(1).every((chunk) => typeof chunk.choices[0]?.delta.content === 'string')).toBe(true);
    expect(() => JSON.parse(data[4]!)).toThrow();
    expect(text).not.toContain('[DONE]');
    const flag = dataLines(await (await chat({ model: 'fast', messages: userMessage('[[sim: malformed]]'), stream: true })).text());
    expect(flag).toHaveLength(2);
    expect(() => JSON.parse(flag[1]!)).toThrow();
    expect(simulator.stats()).toMatchObject({ malformed: 2, aborted: 0, disconnects: 0, inFlight: 0 });
  });

  it('malformed answers a non-streaming call with a 200 JSON body that does not parse', async () => {
    await start();
    const response = await chat({ model: 'fast', messages: userMessage('[[sim: malformed-after=2]]') });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/json');
    const body = await response.text();
    expect(body.startsWith('{"id":"chatcmpl-sim-')).toBe(true);
    expect(() => JSON.parse(body)).toThrow();
    expect(simulator.stats().malformed).toBe(1);
  });

  it('fail-times=N: the first N identical calls obey the fault, later ones are answered; reset forgets', async () => {
    await start();
    const flaky = '[[sim: error=500; fail-times=2]] flaky';
    const statuses = [];
    for (let call = 0; call < 4; call += 1) statuses.push((await answerTo(flaky)).status);
    expect(statuses).toEqual([500, 500, 200, 200]);
    // Other messages, or the same ones to another model, are another request with its own count.
    expect((await answerTo('[[sim: error=500; fail-times=2]] other')).status).toBe(500);
    expect((await answerTo(flaky, 'slow')).status).toBe(500);
    expect((await answerTo('[[sim: error=500; fail-times=0]] never')).status).toBe(200);
    await fetch(`${baseUrl}/sim/reset`, { method: 'POST' });
    expect((await answerTo(flaky)).status).toBe(500);
  });

  it('fail-times applies to every fault: a disconnect, then a whole answer', async () => {
    await start();
    const body = { model: 'fast', messages: userMessage('[[sim: disconnect-after=1; fail-times=1]]'), stream: true };
    await expect((await chat(body)).text()).rejects.toThrow();
    expect(dataLines(await (await chat(body)).text()).at(-1)).toBe('[DONE]');
    expect((await waitFor((stats) => stats.inFlight === 0)).disconnects).toBe(1);
  });

  it('remembers a bounded number of requests for fail-times, forgetting the oldest first', () => {
    const counter = new FailTimesCounter(2);
    const fails = (content: string) => counter.apply({ error: '500', 'fail-times': '1' }, 'm', [{ role: 'user', content }]).error !== undefined;
    expect([fails('a'), fails('b'), fails('a')]).toEqual([true, true, false]);
    expect(fails('c')).toBe(true); // full: "a" is forgotten
    expect(fails('a')).toBe(true); // new again ("b" is forgotten)
    expect(fails('c')).toBe(false);
  });
});

describe('OpenAICompatibleModel against the simulator', () => {
  const client = (modelId: string, endpoint = `${baseUrl}/v1`, timeouts = { firstTokenMs: 2000, totalMs: 5000 }) =>
    new OpenAICompatibleModel({ id: modelId, host: 'gpu-a', endpoint, timeouts });
  const request = (content: string) => ({ messages: [{ role: 'user' as const, content }] });

  it('streams and answers whole with the same text and the simulator-reported usage', async () => {
    await start();
    const deltas: string[] = [];
    const streamed = await client('fast').chat(request('integration'), { onDelta: (text) => deltas.push(text) });
    const whole = await client('fast').chat(request('integration'));
    expect(streamed.content).toBe(whole.content);
    expect(deltas).toHaveLength(12);
    expect(deltas.join('')).toBe(streamed.content);
    expect(streamed).toMatchObject({ finishReason: 'stop', model: 'fast', usage: { completionTokens: 12 } });
    expect(whole.usage).toEqual(streamed.usage);
  });

  it('streams through keepalives and a /hosts/ prefix with real timing', async () => {
    await start();
    const deltas: string[] = [];
    const answer = await client('fast', `${baseUrl}/hosts/gpu-q/v1`).chat(request('[[sim: ttft=1100; tps=100; tokens=10]]'), {
      onDelta: (text) => deltas.push(text),
    });
    expect(deltas).toHaveLength(10);
    expect(answer.usage.completionTokens).toBe(10);
    expect(simulator.stats().requestsByHost).toEqual({ 'gpu-q': 1 });
  });

  it('maps simulated failures to the documented errors', async () => {
    await start();
    await expect(client('fast').chat(request('[[sim: error=503]]'))).rejects.toBeInstanceOf(ModelUnavailableError);
    await expect(client('fast').chat(request('[[sim: error=400]]'))).rejects.toBeInstanceOf(ModelResponseError);
    await expect(client('nope').chat(request('x'))).rejects.toBeInstanceOf(ModelResponseError);
    await expect(client('fast').chat(request('[[sim: disconnect-after=2; tps=100]]'), { onDelta: () => undefined })).rejects.toBeInstanceOf(
      ModelUnavailableError,
    );
    await expect(
      client('fast', undefined, { firstTokenMs: 100, totalMs: 5000 }).chat(request('[[sim: hang]]'), { onDelta: () => undefined }),
    ).rejects.toBeInstanceOf(ModelTimeoutError);
    const stats = await waitFor((current) => current.inFlight === 0);
    expect(stats).toMatchObject({ errors: 2, disconnects: 1, aborted: 1 });
  });

  it('carries the Retry-After of a simulated 429/503 onto the error, and ignores a garbage one', async () => {
    await start();
    const call = (prompt: string) => client('fast').chat(request(prompt));
    await expect(call('[[sim: error=429; retry-after=2]]')).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE', retryAfterMs: 2000 });
    await expect(call('[[sim: error=503; retry-after-ms=250]]')).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE', retryAfterMs: 250 });
    await expect(call('[[sim: error=503; retry-after=soon]]')).rejects.toMatchObject({ code: 'MODEL_UNAVAILABLE', retryAfterMs: undefined });
  });

  it('classifies malformed chunks and bodies as a final MODEL_ERROR, at once', async () => {
    await start();
    const started = performance.now();
    const deltas: string[] = [];
    await expect(client('fast').chat(request('[[sim: malformed-after=2]]'), { onDelta: (text) => deltas.push(text) })).rejects.toMatchObject({
      name: ModelResponseError.name,
      code: 'MODEL_ERROR',
      retryable: false,
    });
    expect(deltas).toHaveLength(2);
    await expect(client('fast').chat(request('[[sim: malformed]]'))).rejects.toMatchObject({ code: 'MODEL_ERROR' });
    expect(performance.now() - started).toBeLessThan(5000);
    expect(await waitFor((stats) => stats.inFlight === 0)).toMatchObject({ malformed: 2 });
  });

  it('hang-after=N: a stream that goes silent mid-answer ends in MODEL_TIMEOUT at totalMs', async () => {
    await start();
    const deltas: string[] = [];
    const started = performance.now();
    await expect(
      // A first-token limit a loaded machine cannot miss, so it is the total limit that ends the silence.
      client('fast', undefined, { firstTokenMs: 1000, totalMs: 1500 }).chat(request('[[sim: hang-after=2]]'), {
        onDelta: (text) => deltas.push(text),
      }),
    ).rejects.toMatchObject({ name: ModelTimeoutError.name, details: { kind: 'total' } });
    expect(deltas).toHaveLength(2);
    expect(performance.now() - started).toBeGreaterThanOrEqual(1495);
    expect((await waitFor((stats) => stats.inFlight === 0)).aborted).toBe(1);
  });

  it('a role pointed at a closed port fails with a retryable MODEL_UNAVAILABLE (ECONNREFUSED)', async () => {
    await start();
    const endpoint = `${baseUrl}/v1`;
    await simulator.close();
    await expect(client('fast', endpoint).chat(request('x'))).rejects.toMatchObject({
      name: ModelUnavailableError.name,
      retryable: true,
      details: { code: 'ECONNREFUSED' },
    });
  });

  it('a server that answers 500 twice and then recovers costs a step nothing but retries', async () => {
    await start();
    const events: TaskEventPayload[] = [];
    const context: PatternContext = {
      models: { role: () => client('fast'), has: () => true },
      events: { emit: (event) => events.push(event) },
      signal: new AbortController().signal,
      retry: { retries: 2, baseDelayMs: 1, retryAfterMaxMs: 30_000 },
    };
    const prompt = 'Summarise the queue design. [[sim: error=500; fail-times=2]]';
    const outcome = await generate(context, new StepIds(), { name: 'primary', role: 'primary', messages: [{ role: 'user', content: prompt }], options: {} });
    expect(outcome.step.attempt).toBe(3);
    expect(events.filter((event) => event.type === 'warning')).toHaveLength(2);
    // The answer is the one the same request gets from a healthy server.
    expect(outcome.content).toBe((await client('fast').chat(request(prompt))).content);
    expect(simulator.stats()).toMatchObject({ requests: 4, errors: 2 });
  });

  it('cancels mid-stream, and the simulator sees the call aborted', async () => {
    await start();
    const controller = new AbortController();
    const deltas: string[] = [];
    const call = client('fast').chat(request('[[sim: tokens=500; tps=100]]'), {
      signal: controller.signal,
      onDelta: (text) => {
        deltas.push(text);
        if (deltas.length === 3) controller.abort();
      },
    });
    await expect(call).rejects.toBeInstanceOf(CancelledError);
    const stats = await waitFor((current) => current.inFlight === 0);
    expect(stats.aborted).toBe(1);
    expect(deltas.length).toBeLessThan(10);
  });
});

describe('model simulator process (main.ts)', () => {
  it('starts on a free port, reports ready over IPC, serves the config models and exits 0 on SIGTERM', async () => {
    const child = fork(path.join(__dirname, 'main.ts'), [], {
      cwd: REPO_ROOT,
      env: { ...process.env, SIM_PORT: '0', LOG_LEVEL: 'warn' },
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const ready = await new Promise<{ type: string; service: string; port: number }>((resolve, reject) => {
        child.once('message', (message) => resolve(message as { type: string; service: string; port: number }));
        child.once('exit', (code) => reject(new Error(`model-sim exited early with ${code}`)));
      });
      expect(ready).toMatchObject({ type: 'ready', service: 'model-sim' });
      expect(ready.port).toBeGreaterThan(0);
      const list = (await (await fetch(`http://127.0.0.1:${ready.port}/v1/models`)).json()) as { data: Array<{ id: string }> };
      expect(list.data.map((model) => model.id)).toContain('sim/qwen2.5-72b-instruct-8bit');
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });
});
