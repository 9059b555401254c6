/**
 * Webhooks across processes: the api stores the webhook with the task, a worker ends the task, the
 * transition puts it in the outbox, a worker's dispatcher queues the delivery and a worker POSTs it,
 * signed, to a real receiver on this machine.
 */
import { Webhook } from 'standardwebhooks';
import type { TaskRecord } from '@mageagent/core';
import { deriveWebhookSecret } from '@mageagent/webhooks';
import { startTestReceiver, type TestReceiver } from '../packages/webhooks/src/test-receiver';
import { createTask, eventually, postJson, requestJson, waitForTask } from './support/http';
import { startTestStack, type TestStack } from './support/stack';

const WEBHOOK_SECRET = 'the end-to-end master webhook secret, 32+ characters';
let service: TestStack;
let receiver: TestReceiver;

beforeAll(async () => {
  receiver = await startTestReceiver();
  service = await startTestStack({
    env: { WEBHOOK_SECRET, WEBHOOK_ALLOW_PRIVATE: 'true', WEBHOOK_BACKOFF_MS: '50', WEBHOOK_ATTEMPTS: '3' },
  });
}, 60_000);

afterAll(async () => {
  await service?.stop();
  await receiver?.close();
}, 30_000);

/** The webhook the receiver got for a task, verified with the open-mode tenant's secret. */
async function verifiedDelivery(taskId: string): Promise<{ body: Record<string, unknown>; headers: Record<string, string> }> {
  const request = await eventually(
    async () => receiver.received.find((received) => received.headers['webhook-id'] === `msg_${taskId}`),
    10_000,
    `the webhook of ${taskId}`,
  );
  const headers = request.headers as Record<string, string>;
  const body = new Webhook(deriveWebhookSecret(WEBHOOK_SECRET, 'default')).verify(request.body, headers) as Record<string, unknown>;
  return { body, headers };
}

/** The task once its delivery is recorded on it. */
const withDelivery = (taskId: string) =>
  eventually(
    async () => {
      const task = (await requestJson<TaskRecord>(`${service.api}/tasks/${taskId}`)).body;
      return task.webhook && task.webhook.deliveries.length > 0 ? task : undefined;
    },
    10_000,
    `the delivery recorded on ${taskId}`,
  );

test('a task that completes is POSTed to its webhook, signed, as GET /tasks/:id shows it', async () => {
  const url = `${receiver.url}/done`;
  const taskId = await createTask(service.api, { prompt: 'say something', pattern: 'primary', webhook: { url } });
  expect((await waitForTask(service.api, taskId)).status).toBe('completed');
  const { body, headers } = await verifiedDelivery(taskId);
  expect(headers['content-type']).toBe('application/json');

  const task = await withDelivery(taskId);
  expect(task.webhook?.deliveries).toEqual([expect.objectContaining({ webhookId: `msg_${taskId}`, attempt: 1, status: 204, ok: true })]);
  const { webhook, ...rest } = task as TaskRecord & { links: unknown };
  expect(body).toEqual({ ...rest, webhook: { url, events: ['completed', 'failed', 'cancelled'] } });
});

test('a cancelled task gets its webhook too', async () => {
  const taskId = await createTask(service.api, {
    prompt: 'wait for me [[sim: hang]]',
    pattern: 'primary',
    webhook: { url: `${receiver.url}/cancelled`, events: ['cancelled'] },
  });
  expect((await postJson(`${service.api}/tasks/${taskId}/cancel`, {})).body.status).toBe('cancelled');
  const { body } = await verifiedDelivery(taskId);
  expect(body).toMatchObject({ id: taskId, status: 'cancelled', error: { code: 'CANCELLED' } });
  expect((await withDelivery(taskId)).webhook?.deliveries).toEqual([expect.objectContaining({ ok: true, status: 204 })]);
});
