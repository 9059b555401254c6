import { hostname } from 'node:os';
import { context, diag, DiagLogLevel, propagation, trace } from '@opentelemetry/api';
import type { Sampler, SpanExporter } from '@opentelemetry/sdk-trace';
import { ConfigError } from './errors';
import type { Logger } from './logger';
import type { Tracing, TracingOptions } from './tracing';

/**
 * Starts the OpenTelemetry SDK. Reached only through `startTracing`'s dynamic import when an OTLP
 * endpoint is configured, and it imports the SDK packages dynamically too, so a process without
 * tracing never loads them (test/tracing.e2e.test.ts checks that on real processes).
 *
 * The exporters read OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT and the TLS settings
 * themselves; the trace SDK (2.x) does not read the sampler and batch settings for a provider built in code, so they are read here.
 */
export async function startTracingSdk(defaultServiceName: string, logger: Logger, env: NodeJS.ProcessEnv, options: TracingOptions = {}): Promise<Tracing> {
  // Dynamic imports of the packages themselves (not only of this module): a bundler that inlines
  // this file into the app's bundle keeps them as runtime imports, so they stay unloaded when off.
  const [sdk, { AsyncLocalStorageContextManager }, { W3CTraceContextPropagator }, resources] = await Promise.all([
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
  ]);
  const { defaultResource, detectResources, envDetector, resourceFromAttributes } = resources;
  const exporter = await createExporter(env);
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (envDetector) win over the defaults.
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': defaultServiceName, 'service.instance.id': `${hostname()}:${process.pid}` }))
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new sdk.TracerProvider({
    resource,
    sampler: samplerFromEnv(sdk, env, options),
    spanProcessors: [
      new sdk.BatchSpanProcessor({
        exporter,
        scheduledDelayMillis: positiveIntFromEnv(env, 'OTEL_BSP_SCHEDULE_DELAY', 5000),
        maxQueueSize: positiveIntFromEnv(env, 'OTEL_BSP_MAX_QUEUE_SIZE', 2048),
        maxExportBatchSize: positiveIntFromEnv(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512),
        exportTimeoutMillis: positiveIntFromEnv(env, 'OTEL_BSP_EXPORT_TIMEOUT', 30000),
      }),
    ],
  });
  // Globals only once the whole configuration was accepted (a ConfigError above leaves none set).
  // The SDK's own complaints (an unreachable collector, dropped spans) go to our log, once each kind.
  diag.setLogger(diagLogger(logger), { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  // Trace context only, no W3C baggage: a client's baggage header would otherwise ride through the
  // queue to the model servers.
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  logger.info('tracing on', { protocol: protocolOf(env), serviceName: String(resource.attributes['service.name']) });

  let shutdown: Promise<void> | undefined;
  return {
    enabled: true,
    shutdown(timeoutMs = 5000): Promise<void> {
      // Bounded: a collector that does not answer must not hold up the process's exit.
      shutdown ??= Promise.race([
        provider.shutdown().catch((error: unknown) => void logger.warn('trace export on shutdown failed', { error: String(error) })),
        new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref()),
      ]);
      return shutdown;
    },
  };
}

type Protocol = 'http/protobuf' | 'http/json';

function protocolOf(env: NodeJS.ProcessEnv): Protocol {
  const raw = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf').trim();
  if (raw === 'http/protobuf' || raw === 'http/json') return raw;
  throw new ConfigError(`OTEL_EXPORTER_OTLP_PROTOCOL=${JSON.stringify(raw)} is not supported: use http/protobuf (default) or http/json`);
}

async function createExporter(env: NodeJS.ProcessEnv): Promise<SpanExporter> {
  // Only the chosen exporter is loaded (each brings its own serialiser).
  if (protocolOf(env) === 'http/json') {
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    return new OTLPTraceExporter();
  }
  const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
  return new OTLPTraceExporter();
}

/** OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG as the spec defines them; default parentbased_always_on. */
export function samplerFromEnv(sdk: typeof import('@opentelemetry/sdk-trace'), env: NodeJS.ProcessEnv, options: TracingOptions = {}): Sampler {
  const { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, TraceIdRatioBasedSampler } = sdk;
  // With untrusted remote parents, a parent from another process (a client's traceparent) gives its
  // trace id but not the decision: the root sampler decides, so a caller cannot force its requests
  // to be recorded and exported. A parent within the process is followed as usual.
  const parentBased = (root: Sampler): Sampler =>
    new ParentBasedSampler(options.untrustedRemoteParents ? { root, remoteParentSampled: root, remoteParentNotSampled: root } : { root });
  const name = (env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').trim().toLowerCase();
  const ratio = (): number => {
    const raw = env.OTEL_TRACES_SAMPLER_ARG;
    const value = raw === undefined || raw.trim() === '' ? 1 : Number(raw);
    if (!Number.isFinite(value) || value < 0 || value > 1)
      throw new ConfigError(`OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1, got ${JSON.stringify(raw)}`);
    return value;
  };
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio());
    case 'parentbased_always_on':
      return parentBased(new AlwaysOnSampler());
    case 'parentbased_always_off':
      return parentBased(new AlwaysOffSampler());
    case 'parentbased_traceidratio':
      return parentBased(new TraceIdRatioBasedSampler(ratio()));
    default:
      throw new ConfigError(
        `OTEL_TRACES_SAMPLER=${JSON.stringify(name)} is not supported: use always_on, always_off, traceidratio or parentbased_{always_on,always_off,traceidratio}`,
      );
  }
}

function positiveIntFromEnv(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) throw new ConfigError(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return value;
}

/** The SDK's diagnostics through our logger; a repeated message is logged once a minute at most. */
function diagLogger(logger: Logger) {
  const lastLogged = new Map<string, number>();
  const log = (level: 'warn' | 'error') => (message: string) => {
    const now = Date.now();
    if ((lastLogged.get(message) ?? -Infinity) > now - 60_000) return;
    lastLogged.set(message, now);
    logger[level]('opentelemetry', { detail: message });
  };
  const ignore = () => undefined;
  return { error: log('error'), warn: log('warn'), info: ignore, debug: ignore, verbose: ignore };
}
