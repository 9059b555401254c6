import type { Redis } from 'ioredis';
import type { Logger } from '@mageagent/core';
import type { HostStatsReader } from '@mageagent/models';
import type { PatternRegistry } from '@mageagent/patterns';
import type { CancelChannel, TaskEventBus, TaskIntake, TaskQueue, TaskStore } from '@mageagent/tasks';

/** What the HTTP and socket handlers need; built once per process in main.ts. */
export interface ApiServices {
  redis: Redis;
  store: TaskStore;
  queue: TaskQueue;
  /** Writes new tasks (record and job), batched per event-loop turn. */
  intake: TaskIntake;
  bus: TaskEventBus;
  cancels: CancelChannel;
  patterns: PatternRegistry;
  /** Live state of the GPU hosts of the model config, for GET /hosts. */
  hosts: HostStatsReader;
  defaultPattern: string;
  logger: Logger;
  config: { bodyLimitBytes: number; ssePingMs: number; socketMaxSubscriptions: number; chatKeepAliveMs: number };
  /** Set once the api is shutting down: requests still arriving on open connections are turned away. */
  lifecycle: { draining: boolean };
}
