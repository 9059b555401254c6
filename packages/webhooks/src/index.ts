export { type WebhookSecrets, DerivedWebhookSecrets, type DerivedWebhookSecretsOptions, deriveWebhookSecret, isWebhookSecret } from './secrets';
export { type WebhookSignatureHeaders, signWebhook, webhookIdFor } from './signing';
export { type AddressClass, classifyAddress } from './address-policy';
export {
  type WebhookTargetOptions,
  type WebhookTargetPrecheck,
  type WebhookTargetCheck,
  type WebhookTargetRefusal,
  precheckWebhookTarget,
  checkWebhookTarget,
} from './target';
export { type WebhookPost, type WebhookPostAnswer, postWebhook } from './post';
export { type WebhookBody, webhookBody } from './body';
export { WEBHOOK_QUEUE_NAME, type WebhookJobData, type WebhookRetryPolicy, webhookJobOptions } from './queue';
export { WebhookDispatcher, type WebhookDispatcherOptions } from './dispatcher';
export {
  createWebhookProcessor,
  createWebhookWorker,
  WebhookAttemptFailedError,
  type WebhookDeliveryOptions,
  type WebhookJobOutcome,
  type WebhookWorkerOptions,
} from './delivery';
