// The public API of @mageagent/core: the names other workspaces import (apps, other packages,
// tests, bench), listed by name so that everything else stays internal and tsc catches a name
// removed while still in use. Export a name here only when another workspace needs it.
export {
  type ApiKeyEntry,
  ApiKeyEntrySchema,
  ApiKeysEnv,
  type ApiKeysFile,
  NameSchema,
  parseApiKeysFile,
  type ParsedApiKeysFile,
  readApiKeysFile,
  readKeysText,
} from './api-keys-file';
export { DEFAULT_REDIS_URL, intEnv, logOptionsOf, parseEnv, PatternsEnv, RedisEnv } from './env';
export {
  CancelledError,
  ConfigError,
  ConflictError,
  ForbiddenError,
  IdempotencyConflictError,
  isMageError,
  isRetryable,
  MageError,
  ModelResponseError,
  ModelTimeoutError,
  ModelUnavailableError,
  NotFoundError,
  PayloadTooLargeError,
  QueueFullError,
  RateLimitedError,
  RequestRateExceededError,
  ServiceUnavailableError,
  TaskTimeoutError,
  toErrorBody,
  UnauthorizedError,
  ValidationError,
} from './errors';
export { OPEN_MODE_PRINCIPAL, type Principal, type QuotaLimits, type Scope } from './identity';
export { generateApiKey, generateWebhookSecret, sha256Hex } from './key-material';
export { createLogger, type Logger } from './logger';
export { quote } from './quote';
export {
  addUsage,
  type AggregationRecord,
  boundedText,
  type ChatMessage,
  type ChatMessageInput,
  type CreateTaskRequest,
  CreateTaskRequestSchema,
  type CritiqueRecord,
  isTerminal,
  MAX_CONTENT_PARTS,
  MAX_MESSAGES,
  MAX_TEXT_CHARS,
  normaliseMessage,
  type ResponseFormat,
  ResponseFormatSchema,
  type RouteDecision,
  type SelectionRecord,
  type StepInfo,
  type StepKind,
  type StepPosition,
  type StepRecord,
  type TaskErrorInfo,
  type TaskEvent,
  type TaskEventPayload,
  type TaskOptions,
  TaskOptionsSchema,
  type TaskPriority,
  type TaskRecord,
  type TaskResult,
  type TaskStatus,
  TaskStatuses,
  type TaskWebhook,
  type TokenUsage,
  type ToolCall,
  type ToolChoice,
  ToolChoiceSchema,
  type ToolDefinition,
  ToolDefinitionSchema,
  type WebhookDelivery,
  type WebhookEvent,
  WebhookEvents,
  zeroUsage,
  zodIssuesToDetails,
} from './schemas';
export { onShutdown } from './shutdown';
export type { ClientToServerEvents, ServerToClientEvents } from './socket-events';
export { taskLinks, type TaskLinks } from './task-links';
export { TurnBatcher } from './turn-batcher';
export {
  contextFromCarrier,
  errorCodeOf,
  inSpan,
  setSpanError,
  type Span,
  SpanKind,
  SpanStatusCode,
  startTracing,
  tracingActive,
  type TracingOptions,
  traceCarrier,
  tracer,
} from './tracing';
export { type ProbeServer, sendNoStore, startProbeServer } from './probe-server';
export { z } from 'zod';
