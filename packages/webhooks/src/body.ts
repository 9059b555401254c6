import { taskLinks, type TaskLinks, type TaskRecord, type TaskWebhook } from '@mageagent/core';

/** What a webhook POSTs: the task as `GET /tasks/:id` answers it, without the delivery attempts. */
export type WebhookBody = Omit<TaskRecord, 'webhook'> & { webhook: Omit<TaskWebhook, 'deliveries'> | null; links: TaskLinks };

export function webhookBody(task: TaskRecord): WebhookBody {
  // The attempts change with every delivery; a body that carried them would differ between retries.
  const webhook = task.webhook === null ? null : { url: task.webhook.url, events: task.webhook.events };
  return { ...task, webhook, links: taskLinks(task.id) };
}
