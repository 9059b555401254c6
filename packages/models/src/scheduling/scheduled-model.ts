import { performance } from 'node:perf_hooks';
import { CancelledError, inSpan, isMageError } from '@mageagent/core';
import type { RoleConfig } from '../config';
import type { ModelCallOutcome, ModelObserver } from '../observer';
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
    /** The config role this model serves (labels what `observer` hears); defaults to the model id. */
    private readonly role: string = inner.id,
    private readonly observer: ModelObserver = {},
  ) {
    this.id = inner.id;
    this.host = inner.host;
    if (inner.structuredOutput !== undefined) this.structuredOutput = inner.structuredOutput;
  }

  async chat(request: ChatRequest, options: ChatCallOptions = {}): Promise<ChatResponse> {
    const lease = await inSpan(
      'host lease wait',
      { attributes: { 'mageagent.host': this.host, ...(options.priority && { 'mageagent.task.priority': options.priority }) } },
      async (span) => {
        const granted = await this.scheduler.acquire(this.host, {
          ...(options.priority !== undefined && { priority: options.priority }),
          ...(options.owner !== undefined && { owner: options.owner }),
          ...(options.signal !== undefined && { signal: options.signal }),
        });
        span.setAttribute('mageagent.lease.wait_ms', granted.waitMs);
        return granted;
      },
    );
    this.observer.leaseGranted?.(this.host, lease.waitMs);
    // A lost lease stops the HTTP call: another process may already be generating on the host.
    const signal = options.signal === undefined ? lease.lost : AbortSignal.any([options.signal, lease.lost]);
    const startedAt = performance.now();
    try {
      const response = await this.inner.chat(request, { ...options, signal });
      this.observe('ok', startedAt, { usage: response.usage });
      return { ...response, waitMs: lease.waitMs };
    } catch (error) {
      // The inner model saw a plain abort; say why, as a retryable error, unless the caller aborted too.
      const thrown = lease.lost.aborted && options.signal?.aborted !== true ? (lease.lost.reason as Error) : error;
      const cancelled = options.signal?.aborted === true || thrown instanceof CancelledError;
      this.observe(cancelled ? 'cancelled' : 'error', startedAt, cancelled ? {} : { errorCode: isMageError(thrown) ? thrown.code : 'INTERNAL' });
      throw thrown;
    } finally {
      // Busy time is the time the slot was ours, measured here because the lease is this call's.
      const heldMs = performance.now() - startedAt;
      await lease.release();
      this.observer.leaseReleased?.(this.host, heldMs);
    }
  }

  private observe(outcome: ModelCallOutcome, startedAt: number, extra: { usage?: ChatResponse['usage']; errorCode?: string }): void {
    this.observer.modelCall?.({ role: this.role, host: this.host, outcome, durationMs: performance.now() - startedAt, ...extra });
  }
}

/**
 * Builds every role's OpenAI-compatible client behind the host scheduler (for ModelRegistry).
 * This is the one place every model call of a worker passes, so the observer sees them all.
 */
export function scheduledModelFactory(scheduler: HostScheduler, observer?: ModelObserver): ChatModelFactory {
  return (roleName: string, roleConfig: RoleConfig, env: NodeJS.ProcessEnv) =>
    new ScheduledModel(OpenAICompatibleModel.fromRole(roleName, roleConfig, env), scheduler, roleName, observer);
}
