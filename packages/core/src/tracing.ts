import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { isMageError } from './errors';
import type { Logger } from './logger';

/**
 * Tracing for every process. Only `@opentelemetry/api` is imported statically: without an SDK
 * registered its calls are no-ops (a non-recording span, an empty carrier), so code creates spans
 * unconditionally and a process without OTEL_EXPORTER_OTLP_ENDPOINT pays next to nothing. The SDK
 * lives in ./tracing-sdk and is imported dynamically, only when an endpoint is configured.
 */

export { SpanKind, SpanStatusCode, type Attributes, type Span };

/** Instrumentation scope of every span the project creates. */
export const TRACER_NAME = 'mageagent';

export function tracer(): Tracer {
  return trace.getTracer(TRACER_NAME);
}

export interface Tracing {
  /** Whether an SDK was started (an OTLP endpoint is configured and OTEL_SDK_DISABLED is not true). */
  readonly enabled: boolean;
  /** Ends spans' export: flushes what is buffered, within `timeoutMs`. A no-op when disabled. */
  shutdown(timeoutMs?: number): Promise<void>;
}

const DISABLED: Tracing = { enabled: false, shutdown: async () => undefined };

/** Whether this process started the SDK (see startTracing). */
let sdkStarted = false;

/**
 * Whether spans are recorded in this process. Hot paths (every request, every new task) skip their
 * span work when not: the API's no-op spans are cheap, but not free at thousands of requests a second.
 */
export function tracingActive(): boolean {
  return sdkStarted;
}

/** Whether the environment asks for tracing: an OTLP endpoint (general or for traces), and the SDK not disabled. */
export function tracingConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim());
}

/**
 * Starts the tracing SDK when the environment configures an OTLP endpoint; otherwise loads
 * nothing. `defaultServiceName` is the service name unless OTEL_SERVICE_NAME says otherwise.
 * Call it first thing in main(), before spans are created.
 */
/** How a process treats trace context it receives. */
export interface TracingOptions {
  /**
   * True where the callers are not ours (the api): their `traceparent` sets the trace id, but not
   * whether the trace is recorded; the configured sampler decides as for a new trace.
   */
  untrustedRemoteParents?: boolean;
}

export async function startTracing(
  defaultServiceName: string,
  logger: Logger,
  env: NodeJS.ProcessEnv = process.env,
  options: TracingOptions = {},
): Promise<Tracing> {
  if (!tracingConfigured(env)) return DISABLED;
  // The one place the SDK is reached; a string the bundler keeps as a runtime import.
  const { startTracingSdk } = await import('./tracing-sdk');
  const tracing = await startTracingSdk(defaultServiceName, logger, env, options);
  sdkStarted = tracing.enabled;
  return tracing;
}

/** The active trace context as W3C headers (`traceparent`, `tracestate`), or undefined when there is none to pass on. */
export function traceCarrier(from: Context = context.active()): Record<string, string> | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(from, carrier);
  return carrier.traceparent === undefined ? undefined : carrier;
}

/** The context a carrier (`traceparent`, `tracestate`) describes, on top of the active one. */
export function contextFromCarrier(carrier: Record<string, unknown> | undefined): Context {
  if (carrier === undefined) return context.active();
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(carrier)) if (typeof value === 'string') headers[key] = value;
  return propagation.extract(context.active(), headers);
}

/**
 * Marks a span failed with the error's code only: a MageError's code (`MODEL_TIMEOUT`), else the
 * error's class name. Never the message: it may quote the prompt or the model's answer.
 */
export function setSpanError(span: Span, error: unknown): void {
  const code = errorCodeOf(error);
  span.setAttribute('error.type', code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: code });
}

export function errorCodeOf(error: unknown): string {
  if (isMageError(error)) return error.code;
  if (error instanceof Error) return error.name || 'Error';
  return 'unknown';
}

/**
 * Runs `fn` inside a new active span and ends it however `fn` ends: a throw marks it ERROR (the
 * code only, see setSpanError) and is rethrown.
 */
export async function inSpan<T>(
  name: string,
  options: { kind?: SpanKind; attributes?: Attributes; parent?: Context },
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const spanOptions = { ...(options.kind !== undefined && { kind: options.kind }), ...(options.attributes && { attributes: options.attributes }) };
  return tracer().startActiveSpan(name, spanOptions, options.parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      setSpanError(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}
