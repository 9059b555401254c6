import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { deleteKeysWithPrefix } from '@mageagent/tasks';
import type { TaskEvent } from '@mageagent/core';
import { Stack, type LineSink, type ServiceProcess, type StackOptions } from '../../apps/launcher/src/stack';
import { eventually, requestJson } from './http';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface TestStack {
  stack: Stack;
  api: string;
  sim: string;
  prefix: string;
  /** Everything the children printed, for failure diagnostics. */
  output: string[];
  stop(): Promise<void>;
}

/**
 * Starts simulator, api and workers as real processes on free ports with a private Redis key
 * prefix; `stop()` ends them and deletes every key under the prefix.
 */
/** A sink that keeps every line the children print (for failure diagnostics), and echoes them with TEST_LOGS=1. */
export function collectOutput(output: string[]): LineSink {
  return (name, line) => {
    output.push(`[${name}] ${line}`);
    if (process.env.TEST_LOGS === '1') process.stdout.write(`[${name}] ${line}\n`);
  };
}

export async function startTestStack(options: Partial<StackOptions> = {}): Promise<TestStack> {
  const prefix = `test-${randomUUID().slice(0, 8)}`;
  const output: string[] = [];
  const stack = new Stack({
    redisUrl: REDIS_URL,
    prefix,
    apiPort: 0,
    simPort: 0,
    workers: 2,
    workerConcurrency: 4,
    sink: collectOutput(output),
    ...options,
    env: {
      LOG_LEVEL: 'warn',
      SIM_SPEEDUP: '1000',
      MODEL_RETRY_BASE_MS: '20',
      JOB_LOCK_MS: '2000',
      // Short, so a dead worker's host lease lapses within the tests' patience.
      HOST_LEASE_TTL_MS: '2000',
      HOST_HEALTH_INTERVAL_MS: '300',
      HOST_HEALTH_TIMEOUT_MS: '1000',
      ...options.env,
    },
  });
  try {
    await stack.start();
  } catch (error) {
    await stack.stop().catch(() => undefined);
    throw new Error(`${String(error)}\n${output.slice(-40).join('\n')}`);
  }
  return {
    stack,
    api: stack.apiUrl,
    sim: stack.simUrl ?? '',
    prefix,
    output,
    async stop() {
      await stack.stop();
      await deleteTestKeys(prefix);
    },
  };
}

/** Deletes every key a test stack (or a launcher given REDIS_PREFIX) wrote under `prefix`. */
export async function deleteTestKeys(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    await deleteKeysWithPrefix(redis, prefix);
    // redis-semaphore puts its own `mutex:` in front of the health probe lock's key.
    await deleteKeysWithPrefix(redis, `mutex:${prefix}`);
  } finally {
    redis.disconnect();
  }
}

export async function eventsOf(service: TestStack, taskId: string): Promise<TaskEvent[]> {
  return (await requestJson<{ events: TaskEvent[] }>(`${service.api}/tasks/${taskId}/events`)).body.events;
}

/** Waits until the task streams tokens; returns the worker running it (its `host:pid` name and process). */
export async function streamingWorker(service: TestStack, taskId: string): Promise<{ name: string; process: ServiceProcess }> {
  const name = await eventually(
    async () => {
      const events = await eventsOf(service, taskId);
      const processing = events.find((event) => event.type === 'status' && event.status === 'processing');
      return events.some((event) => event.type === 'delta') && processing?.type === 'status' ? processing.worker : undefined;
    },
    10_000,
    'the task to stream',
  );
  const process = service.stack.workers.find((worker) => worker.child.pid === Number(name.split(':').pop()));
  if (process === undefined) throw new Error(`no worker process for ${name}`);
  return { name, process };
}
