// The public API of @mageagent/models: the names other workspaces import (apps, other packages,
// tests, bench), listed by name so that everything else stays internal and tsc catches a name
// removed while still in use. Export a name here only when another workspace needs it.
export { DEFAULT_MODELS_CONFIG_PATH, loadModelsConfig, type ModelsConfig, parseModelsConfig } from './config';
export type { ModelObserver } from './observer';
export { OpenAICompatibleModel } from './openai-client';
export { ModelRegistry } from './registry';
export { HostHealth, probeTargetsFromConfig } from './scheduling/host-health';
export { HostScheduler } from './scheduling/host-scheduler';
export { type HostReport, HostStatsReader } from './scheduling/host-stats';
export { scheduledModelFactory } from './scheduling/scheduled-model';
export type { ChatCallOptions, ChatModel, ChatRequest, ChatResponse } from './types';
