/**
 * ScheduledModel around an in-process fake model, with the real lease on Redis.
 */
import { performance } from 'node:perf_hooks';
import { CancelledError, ModelUnavailableError } from '@mageagent/core';
import type { ModelCallRecord, ModelObserver } from '../observer';
import type { ChatCallOptions, ChatModel, ChatRequest, ChatResponse } from '../types';
import { HostHealth } from './host-health';
import { ScheduledModel } from './scheduled-model';
import { SchedulingTestBed, until } from './test-support';

const bed = new SchedulingTestBed();
afterEach(() => bed.closeSchedulers());
afterAll(() => bed.close());

interface Call {
  label: string;
  startedAt: number;
  endedAt?: number;
}

/** Answers after `delayMs` (or the `[[ms=N]]` in the prompt); records when each call ran. */
class SlowModel implements ChatModel {
  readonly id = 'fake-model';
  readonly calls: Call[] = [];
  aborted = 0;
  constructor(
    readonly host: string,
    private readonly delayMs: number,
  ) {}

  async chat(request: ChatRequest, options: ChatCallOptions = {}): Promise<ChatResponse> {
    const label = request.messages[0]?.content ?? '';
    const call: Call = { label, startedAt: performance.now() };
    this.calls.push(call);
    const ms = Number(/\[\[ms=(\d+)\]\]/.exec(label)?.[1] ?? this.delayMs);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      options.signal?.addEventListener('abort', () => {
        clearTimeout(timer);
        this.aborted += 1;
        reject(new CancelledError('call cancelled'));
      });
    });
    call.endedAt = performance.now();
    return { content: label, usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 }, finishReason: 'stop', model: this.id };
  }
}

const ask = (model: ChatModel, label: string, options: ChatCallOptions = {}) => model.chat({ messages: [{ role: 'user', content: label }] }, options);

test('the second of two calls on one host waits for the first and reports how long', async () => {
  const host = bed.newHost();
  const model = new ScheduledModel(new SlowModel(host, 100), await bed.scheduler({ [host]: 1 }));
  const [first, second] = await Promise.all([ask(model, 'a'), ask(model, 'b')]);
  const waits = [first.waitMs!, second.waitMs!].sort((a, b) => a - b);
  expect(waits[1]).toBeGreaterThanOrEqual(90);
  expect(waits[0]).toBeLessThan(waits[1]! - 50);
  expect(first).toMatchObject({ content: 'a', model: 'fake-model' });
});

test('a call to a host that is down fails fast with MODEL_UNAVAILABLE without reaching the model', async () => {
  const host = bed.newHost();
  await bed.admin.set(
    bed.leases.keys.health(host),
    JSON.stringify({ status: 'down', checkedAt: new Date().toISOString(), error: 'ECONNREFUSED', intervalMs: 60_000 }),
  );
  const health = new HostHealth({
    redis: bed.connection(),
    prefix: bed.prefix,
    targets: [{ host, url: 'http://127.0.0.1:1/v1/models', headers: {} }],
    intervalMs: 60_000,
    timeoutMs: 100,
    probe: false,
  });
  await health.start();
  const inner = new SlowModel(host, 10);
  const model = new ScheduledModel(inner, await bed.scheduler({ [host]: 1 }, { health }));
  const startedAt = performance.now();
  const failure = await ask(model, 'x').catch((error: unknown) => error);
  expect(failure).toBeInstanceOf(ModelUnavailableError);
  expect((failure as ModelUnavailableError).message).toMatch(new RegExp(`host ${host} is down .*ECONNREFUSED`));
  expect(performance.now() - startedAt).toBeLessThan(500);
  expect(inner.calls).toHaveLength(0);
  await health.stop();
});

test('a lost lease stops the call with a retryable MODEL_UNAVAILABLE', async () => {
  const host = bed.newHost();
  const inner = new SlowModel(host, 5000);
  const model = new ScheduledModel(inner, await bed.scheduler({ [host]: 1 }, { leaseTtlMs: 300 }));
  const call = ask(model, 'long').catch((error: unknown) => error);
  await until(() => inner.calls.length === 1, 'the call to start');
  await bed.admin.del(bed.leases.keys.holders(host));
  const failure = await call;
  expect(failure).toBeInstanceOf(ModelUnavailableError);
  expect(failure).toMatchObject({ retryable: true, message: expect.stringMatching(/lease on host .* lost/) });
  expect(inner.aborted).toBe(1);
});

test("a call aborted by its caller ends with the caller's error and frees the host at once", async () => {
  const host = bed.newHost();
  const inner = new SlowModel(host, 5000);
  const model = new ScheduledModel(inner, await bed.scheduler({ [host]: 1 }));
  const controller = new AbortController();
  const call = ask(model, 'long', { signal: controller.signal }).catch((error: unknown) => error);
  await until(() => inner.calls.length === 1, 'the call to start');
  controller.abort(new CancelledError('task was cancelled'));
  expect(await call).toBeInstanceOf(CancelledError);
  const next = await ask(model, '[[ms=1]] next');
  // The aborted call would have held the host for 5 s.
  expect(next.waitMs).toBeLessThan(1000);
});

test('a call refused with a Retry-After gives the host back before its caller sees the error', async () => {
  const host = bed.newHost();
  const busy: ChatModel = {
    id: 'fake-model',
    host,
    chat: async () => {
      throw new ModelUnavailableError('server answered HTTP 429', { retryAfterMs: 60_000 });
    },
  };
  const model = new ScheduledModel(busy, await bed.scheduler({ [host]: 1 }));
  const failure = await ask(model, 'x').catch((error: unknown) => error);
  expect(failure).toMatchObject({ code: 'MODEL_UNAVAILABLE', retryAfterMs: 60_000 });
  // The retry loop waits out the Retry-After after this point: the host must already be free for others.
  expect((await bed.leases.inspect(host, 1)).leases).toEqual([]);
});

test('a short call submitted behind three compete-shaped tasks starts before any of them finishes', async () => {
  const host = bed.newHost();
  const inner = new SlowModel(host, 40);
  // Two processes, as workers would be; compete = two solutions at once, then a judge.
  const models = [new ScheduledModel(inner, await bed.scheduler({ [host]: 1 })), new ScheduledModel(inner, await bed.scheduler({ [host]: 1 }))];
  const finished: number[] = [];
  const compete = async (index: number) => {
    const model = models[index % 2]!;
    await Promise.all([ask(model, `compete-${index}-a`, { owner: `compete-${index}` }), ask(model, `compete-${index}-b`, { owner: `compete-${index}` })]);
    await ask(model, `compete-${index}-judge`, { owner: `compete-${index}` });
    finished.push(performance.now());
  };
  const competes = [0, 1, 2].map(compete);
  await until(async () => (await bed.waitersOn(host)) === 5, 'the six solutions to be running or queued');
  const tools = await ask(models[1]!, 'tools', { owner: 'tools' });
  const toolsCall = inner.calls.find((call) => call.label === 'tools')!;
  await Promise.all(competes);
  expect(toolsCall.startedAt).toBeLessThan(Math.min(...finished));
  // Lease per call: the judges come after the short call, which queued behind the six solutions only.
  expect(inner.calls.map((call) => call.label).indexOf('tools')).toBe(6);
  expect(tools.waitMs).toBeGreaterThan(0);
  // One at a time throughout.
  const sorted = [...inner.calls].sort((a, b) => a.startedAt - b.startedAt);
  for (let index = 1; index < sorted.length; index += 1) expect(sorted[index]!.startedAt).toBeGreaterThanOrEqual(sorted[index - 1]!.endedAt!);
});

test('calls on two hosts run at the same time; on one host, one after the other', async () => {
  const [hostA, hostB] = [bed.newHost(), bed.newHost()];
  const scheduler = await bed.scheduler({ [hostA]: 1, [hostB]: 1 });
  const onA = new SlowModel(hostA, 100);
  const onB = new SlowModel(hostB, 100);
  const a = new ScheduledModel(onA, scheduler);
  const b = new ScheduledModel(onB, scheduler);
  const startedAt = performance.now();
  await Promise.all([ask(a, 'a'), ask(b, 'b')]);
  expect(performance.now() - startedAt).toBeLessThan(180);
  await Promise.all([ask(a, 'a2'), ask(a, 'a3')]);
  const [second, third] = onA.calls.slice(1);
  expect(Math.max(second!.startedAt, third!.startedAt)).toBeGreaterThanOrEqual(Math.min(second!.endedAt!, third!.endedAt!));
});

test('the observer hears each call once: its lease wait, busy time, outcome, duration and usage (cancelled and failed calls too)', async () => {
  const host = bed.newHost();
  const heard: { granted: number[]; released: number[]; calls: ModelCallRecord[] } = { granted: [], released: [], calls: [] };
  const observer: ModelObserver = {
    leaseGranted: (seenHost, waitMs) => seenHost === host && heard.granted.push(waitMs),
    leaseReleased: (seenHost, heldMs) => seenHost === host && heard.released.push(heldMs),
    modelCall: (record) => heard.calls.push(record),
  };
  const inner = new SlowModel(host, 60);
  const model = new ScheduledModel(inner, await bed.scheduler({ [host]: 1 }), 'primary', observer);
  await ask(model, 'ok');

  const controller = new AbortController();
  const cancelled = ask(model, 'cancel me [[ms=5000]]', { signal: controller.signal });
  await until(() => inner.calls.length === 2, 'the second call to start');
  controller.abort(new CancelledError('caller left'));
  await expect(cancelled).rejects.toBeInstanceOf(CancelledError);

  const failing = new ScheduledModel(
    { id: 'broken', host, chat: async () => Promise.reject(new ModelUnavailableError('connection refused')) },
    await bed.scheduler({ [host]: 1 }),
    'validator',
    observer,
  );
  await expect(ask(failing, 'x')).rejects.toBeInstanceOf(ModelUnavailableError);

  expect(heard.calls.map(({ role, host: callHost, outcome, usage, errorCode }) => ({ role, callHost, outcome, usage, errorCode }))).toEqual([
    { role: 'primary', callHost: host, outcome: 'ok', usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 }, errorCode: undefined },
    { role: 'primary', callHost: host, outcome: 'cancelled', usage: undefined, errorCode: undefined },
    { role: 'validator', callHost: host, outcome: 'error', usage: undefined, errorCode: 'MODEL_UNAVAILABLE' },
  ]);
  expect(heard.calls[0]!.durationMs).toBeGreaterThanOrEqual(50);
  expect(heard.granted).toHaveLength(3);
  expect(heard.released).toHaveLength(3);
  expect(heard.released[0]).toBeGreaterThanOrEqual(50);
});
