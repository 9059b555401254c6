import { Webhook } from 'standardwebhooks';

/** The Standard Webhooks headers of one signed message. */
export interface WebhookSignatureHeaders {
  'webhook-id': string;
  /** Unix seconds. */
  'webhook-timestamp': string;
  /** `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. */
  'webhook-signature': string;
}

/**
 * The `webhook-id` of a task's delivery: the same for every attempt, so a receiver that saw an
 * attempt succeed (and only its answer was lost) recognises the retry as a duplicate.
 */
export function webhookIdFor(taskId: string): string {
  return `msg_${taskId}`;
}

/**
 * Signs one attempt with the standardwebhooks reference implementation. Each attempt is signed at its
 * own time: receivers refuse timestamps more than five minutes off, and retries span longer.
 */
export function signWebhook(secret: string, webhookId: string, body: string, at: Date): WebhookSignatureHeaders {
  return {
    'webhook-id': webhookId,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(webhookId, at, body),
  };
}
