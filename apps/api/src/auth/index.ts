export { ApiKeyRegistry, type ApiKeysChange, type ApiKeysLog, type ApiKeysReloadOutcome, type ApiKeysWatchOptions } from './api-keys';
export {
  ApiKeyEntrySchema,
  ApiKeysEnv,
  ApiKeysFileSchema,
  parseApiKeysFile,
  readApiKeysFile,
  type ApiKeyEntry,
  type ApiKeysFile,
  type LimitsOverride,
  type ParsedApiKeysFile,
  type TenantSettings,
} from './api-keys-file';
export { API_KEY_PREFIX, generateApiKey, generateWebhookSecret, sha256Hex } from './key-material';
export { MAX_PRESENTED_KEY_CHARS, presentedKeyOf, type KeyHeader, type PresentedKey, type RequestHeaders } from './presented-key';
