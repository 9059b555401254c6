import type { Redis } from 'ioredis';
import type { Logger } from '@mageagent/core';
import type { PatternRegistry } from '@mageagent/patterns';
import type { CancelChannel, TaskEventBus, TaskQueue, TaskStore } from '@mageagent/tasks';

/** What the HTTP and socket handlers need; built once per process in main.ts. */
export interface ApiServices {
  redis: Redis;
  store: TaskStore;
  queue: TaskQueue;
  bus: TaskEventBus;
  cancels: CancelChannel;
  patterns: PatternRegistry;
  defaultPattern: string;
  logger: Logger;
  config: { bodyLimitBytes: number; ssePingMs: number; socketMaxSubscriptions: number; chatKeepAliveMs: number };
}
