export { ApiKeyRegistry, type ApiKeysChange, type ApiKeysLog, type ApiKeysReloadOutcome, type ApiKeysWatchOptions } from './api-keys';
export { MAX_PRESENTED_KEY_CHARS, presentedKeyOf, type KeyHeader, type PresentedKey, type RequestHeaders } from './presented-key';
