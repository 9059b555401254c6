export { type WebhookSecrets, DerivedWebhookSecrets, type DerivedWebhookSecretsOptions, deriveWebhookSecret, isWebhookSecret } from './secrets';
export { type WebhookSignatureHeaders, signWebhook, webhookIdFor } from './signing';
