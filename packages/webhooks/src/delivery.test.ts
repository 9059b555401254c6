import { Webhook } from 'standardwebhooks';
import type { TaskRecord, WebhookEvent } from '@mageagent/core';
import type { TaskStore } from '@mageagent/tasks';
import { queuedTask } from '../../tasks/src/test-tasks';
import { DerivedWebhookSecrets, deriveWebhookSecret } from './secrets';
import { startTestDelivery, TEST_WEBHOOK_MASTER, type TestDelivery, type TestDeliveryOptions } from './test-delivery';
import { startTestReceiver, type TestReceiver } from './test-receiver';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const result = { content: 'done', toolCalls: [], steps: [], usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 }, model: 'm' };

let receiver: TestReceiver;
const running: TestDelivery[] = [];

beforeAll(async () => {
  // 500 for the first two POSTs to /flaky, 204 otherwise.
  receiver = await startTestReceiver((request, earlier) => (request.path === '/flaky' && earlier < 2 ? 500 : request.path === '/broken' ? 500 : 204));
});

afterAll(() => receiver.close());

afterEach(async () => {
  await Promise.all(running.splice(0).map((delivery) => delivery.stop()));
  receiver.received.length = 0;
});

/** A test delivery on the shared Redis, stopped (and its keys deleted) after the test. */
function startDelivery(options: Omit<TestDeliveryOptions, 'redisUrl'> = {}): Promise<TestDelivery> {
  return startTestDelivery({ redisUrl: REDIS_URL, ...options }).then((delivery) => {
    running.push(delivery);
    return delivery;
  });
}

/** Creates a task with a webhook and ends it as `status`. */
async function endTask(store: TaskStore, url: string, status: WebhookEvent, overrides: Partial<TaskRecord> = {}, events?: WebhookEvent[]): Promise<string> {
  const task = queuedTask({ tenant: 'acme', webhook: { url, events: events ?? ['completed', 'failed', 'cancelled'], deliveries: [] }, ...overrides });
  await store.create(task);
  if (status === 'cancelled') {
    await store.cancel(task.id);
  } else {
    await store.transition(task.id, { from: ['queued'], to: 'processing' });
    if (status === 'completed') await store.complete(task.id, result);
    else await store.fail(task.id, { code: 'MODEL_ERROR', message: 'bad answer', retryable: false });
  }
  return task.id;
}

/** Waits until the task's delivery job is finished (completed or given up) and answers its state. */
async function settled(delivery: TestDelivery, taskId: string): Promise<{ state: string; returnvalue: unknown; task: TaskRecord }> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    // The state first: a job read before it is, could be one read while it was still running.
    const state = await delivery.queue.getJobState(taskId);
    const job = state === 'completed' || state === 'failed' ? await delivery.queue.getJob(taskId) : undefined;
    if (job) return { state, returnvalue: job.returnvalue, task: await delivery.store.require(taskId) };
    if (Date.now() > deadline) throw new Error(`delivery job of ${taskId} still ${state} after 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('a completed task is POSTed as GET /tasks/:id shows it, signed with its tenant’s secret', async () => {
  const delivery = await startDelivery();
  const taskId = await endTask(delivery.store, `${receiver.url}/hook`, 'completed');
  const [received] = await receiver.waitFor(1);
  if (!received) throw new Error('nothing received');
  expect(received.headers['content-type']).toBe('application/json');
  expect(received.headers['webhook-id']).toBe(`msg_${taskId}`);
  const headers = received.headers as Record<string, string>;
  const body = new Webhook(deriveWebhookSecret(TEST_WEBHOOK_MASTER, 'acme')).verify(received.body, headers);
  expect(body).toMatchObject({
    id: taskId,
    tenant: 'acme',
    status: 'completed',
    result,
    webhook: { url: `${receiver.url}/hook`, events: ['completed', 'failed', 'cancelled'] },
    links: { self: `/tasks/${taskId}` },
  });
  expect(body).not.toHaveProperty('webhook.deliveries');
  // Another tenant's secret (what a forger would have) does not verify.
  expect(() => new Webhook(deriveWebhookSecret(TEST_WEBHOOK_MASTER, 'globex')).verify(received.body, headers)).toThrow();

  const { state, task } = await settled(delivery, taskId);
  expect(state).toBe('completed');
  expect(task.webhook?.deliveries).toEqual([
    { webhookId: `msg_${taskId}`, attempt: 1, at: expect.any(String), durationMs: expect.any(Number), status: 204, ok: true },
  ]);
});

test('a receiver that answers 500 twice gets the same webhook-id three times; every attempt is on the task', async () => {
  const delivery = await startDelivery();
  const taskId = await endTask(delivery.store, `${receiver.url}/flaky`, 'cancelled');
  const received = await receiver.waitFor(3);
  expect(new Set(received.map((request) => request.headers['webhook-id']))).toEqual(new Set([`msg_${taskId}`]));
  for (const request of received) {
    expect(new Webhook(deriveWebhookSecret(TEST_WEBHOOK_MASTER, 'acme')).verify(request.body, request.headers as Record<string, string>)).toMatchObject({
      status: 'cancelled',
    });
  }
  const { state, task } = await settled(delivery, taskId);
  expect(state).toBe('completed');
  expect(task.webhook?.deliveries.map(({ webhookId, attempt, status, ok, error }) => ({ webhookId, attempt, status, ok, error }))).toEqual([
    { webhookId: `msg_${taskId}`, attempt: 1, status: 500, ok: false, error: 'the receiver answered HTTP 500' },
    { webhookId: `msg_${taskId}`, attempt: 2, status: 500, ok: false, error: 'the receiver answered HTTP 500' },
    { webhookId: `msg_${taskId}`, attempt: 3, status: 204, ok: true, error: undefined },
  ]);
});

test('a receiver that never succeeds gets WEBHOOK_ATTEMPTS attempts, then the delivery is given up', async () => {
  const delivery = await startDelivery({ attempts: 2 });
  const taskId = await endTask(delivery.store, `${receiver.url}/broken`, 'failed');
  const { state, task } = await settled(delivery, taskId);
  expect(state).toBe('failed');
  expect(task.webhook?.deliveries.map((attempt) => [attempt.attempt, attempt.status])).toEqual([
    [1, 500],
    [2, 500],
  ]);
});

test('only the statuses the webhook asked for are delivered', async () => {
  const delivery = await startDelivery();
  const skipped = await endTask(delivery.store, `${receiver.url}/only-failed`, 'completed', {}, ['failed']);
  const sent = await endTask(delivery.store, `${receiver.url}/only-failed`, 'failed', {}, ['failed']);
  expect(await settled(delivery, skipped)).toMatchObject({ state: 'completed', returnvalue: 'not subscribed', task: { webhook: { deliveries: [] } } });
  expect(await settled(delivery, sent)).toMatchObject({ state: 'completed', returnvalue: 'delivered' });
  expect(receiver.received.map((request) => JSON.parse(request.body).id)).toEqual([sent]);
});

test('private, loopback and metadata targets are refused without WEBHOOK_ALLOW_PRIVATE: one failed attempt each, no retries', async () => {
  const delivery = await startDelivery({ allowPrivate: false, attempts: 3 });
  const targets = [
    `${receiver.url}/hook`,
    'http://10.1.2.3/hook',
    'http://169.254.169.254/latest/meta-data/',
    `http://[::1]:${receiver.port}/hook`,
    `http://localhost:${receiver.port}/hook`,
  ];
  const taskIds = await Promise.all(targets.map((url) => endTask(delivery.store, url, 'completed')));
  for (const [index, taskId] of taskIds.entries()) {
    const { state, task } = await settled(delivery, taskId);
    expect({ url: targets[index], state }).toEqual({ url: targets[index], state: 'failed' });
    expect(task.webhook?.deliveries).toEqual([
      {
        webhookId: `msg_${taskId}`,
        attempt: 1,
        at: expect.any(String),
        durationMs: expect.any(Number),
        ok: false,
        error: expect.stringMatching(/^target refused: /),
      },
    ]);
  }
  expect(receiver.received).toHaveLength(0);
});

test('a host name that does not resolve is recorded as such (not as a refused target) and retried like an unreachable receiver', async () => {
  const delivery = await startDelivery({ attempts: 2 });
  const taskId = await endTask(delivery.store, 'http://no-such-host.invalid/hook', 'completed');
  const { state, task } = await settled(delivery, taskId);
  expect(state).toBe('failed');
  expect(task.webhook?.deliveries).toEqual(
    [1, 2].map((attempt) => expect.objectContaining({ attempt, ok: false, error: expect.stringMatching(/^could not resolve no-such-host\.invalid \(/) })),
  );
});

test('a tenant without a secret gets a failed attempt saying so, not an unsigned webhook, and no retries', async () => {
  const delivery = await startDelivery({ secrets: new DerivedWebhookSecrets({}) });
  const taskId = await endTask(delivery.store, `${receiver.url}/hook`, 'completed');
  const { state, task } = await settled(delivery, taskId);
  expect(state).toBe('failed');
  expect(task.webhook?.deliveries).toEqual([
    expect.objectContaining({ attempt: 1, ok: false, error: expect.stringMatching(/no webhook signing secret for tenant "acme"/) }),
  ]);
  expect(receiver.received).toHaveLength(0);
});
