import type { RoleConfig } from '../config';
import { OpenAICompatibleModel } from '../openai-client';
import type { ChatModelFactory } from '../registry';
import type { ChatCallOptions, ChatModel, ChatRequest, ChatResponse } from '../types';
import type { HostScheduler } from './host-scheduler';

/**
 * A ChatModel that holds a lease on its GPU host for the length of each call: it waits its turn
 * (by the call's priority, then arrival), runs the call while the lease renews in the background,
 * and releases it the moment the call ends, however it ends. The lease is per call, not per task,
 * so tasks interleave between steps. `waitMs` in the response is the time spent queueing.
 */
export class ScheduledModel implements ChatModel {
  readonly id: string;
  readonly host: string;
  readonly structuredOutput?: boolean;

  constructor(
    private readonly inner: ChatModel,
    private readonly scheduler: HostScheduler,
  ) {
    this.id = inner.id;
    this.host = inner.host;
    if (inner.structuredOutput !== undefined) this.structuredOutput = inner.structuredOutput;
  }

  async chat(request: ChatRequest, options: ChatCallOptions = {}): Promise<ChatResponse> {
    const lease = await this.scheduler.acquire(this.host, {
      ...(options.priority !== undefined && { priority: options.priority }),
      ...(options.owner !== undefined && { owner: options.owner }),
      ...(options.signal !== undefined && { signal: options.signal }),
    });
    // A lost lease stops the HTTP call: another process may already be generating on the host.
    const signal = options.signal === undefined ? lease.lost : AbortSignal.any([options.signal, lease.lost]);
    try {
      const response = await this.inner.chat(request, { ...options, signal });
      return { ...response, waitMs: lease.waitMs };
    } catch (error) {
      // The inner model saw a plain abort; say why, as a retryable error, unless the caller aborted too.
      if (lease.lost.aborted && options.signal?.aborted !== true) throw lease.lost.reason as Error;
      throw error;
    } finally {
      await lease.release();
    }
  }
}

/** Builds every role's OpenAI-compatible client behind the host scheduler (for ModelRegistry). */
export function scheduledModelFactory(scheduler: HostScheduler): ChatModelFactory {
  return (roleName: string, roleConfig: RoleConfig, env: NodeJS.ProcessEnv) =>
    new ScheduledModel(OpenAICompatibleModel.fromRole(roleName, roleConfig, env), scheduler);
}
