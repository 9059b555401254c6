import { errorCodeOf, inSpan, SpanKind } from '@mageagent/core';
import type { ChatCallOptions, ChatModel, ChatRequest, ChatResponse } from './types';

/**
 * A span per model call (`chat <model>`, CLIENT), with OpenTelemetry's gen_ai attributes where
 * they fit and the role and GPU host; the host lease wait and the HTTP request (which carries the
 * `traceparent` header) happen inside it. Deliberately absent: the messages and the answer
 * (gen_ai.input.messages / output.messages), which are the users' data.
 */
export class TracedModel implements ChatModel {
  readonly id: string;
  readonly host: string;
  readonly structuredOutput?: boolean;

  constructor(
    private readonly role: string,
    private readonly inner: ChatModel,
  ) {
    this.id = inner.id;
    this.host = inner.host;
    if (inner.structuredOutput !== undefined) this.structuredOutput = inner.structuredOutput;
  }

  chat(request: ChatRequest, options?: ChatCallOptions): Promise<ChatResponse> {
    const attributes = {
      'gen_ai.operation.name': 'chat',
      'gen_ai.request.model': this.id,
      'mageagent.role': this.role,
      'mageagent.host': this.host,
      'mageagent.streaming': options?.onDelta !== undefined,
      ...(request.temperature !== undefined && { 'gen_ai.request.temperature': request.temperature }),
      ...(request.maxTokens !== undefined && { 'gen_ai.request.max_tokens': request.maxTokens }),
    };
    return inSpan(`chat ${this.id}`, { kind: SpanKind.CLIENT, attributes }, async (span) => {
      try {
        const response = await this.inner.chat(request, options);
        span.setAttributes({
          'mageagent.outcome': 'ok',
          'gen_ai.response.model': response.model,
          'gen_ai.usage.input_tokens': response.usage.promptTokens,
          'gen_ai.usage.output_tokens': response.usage.completionTokens,
          ...(response.finishReason !== null && { 'gen_ai.response.finish_reasons': [response.finishReason] }),
          ...(response.waitMs !== undefined && { 'mageagent.lease.wait_ms': response.waitMs }),
        });
        return response;
      } catch (error) {
        span.setAttribute('mageagent.outcome', errorCodeOf(error));
        throw error;
      }
    });
  }
}
