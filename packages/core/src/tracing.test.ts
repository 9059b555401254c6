/**
 * Tracing's configuration: when it is on, which sampler OTEL_TRACES_SAMPLER names, and what is
 * refused at start-up (a clear ConfigError, not a process that silently exports nothing).
 */
import { ROOT_CONTEXT, SpanKind, TraceFlags, trace } from '@opentelemetry/api';
import * as sdk from '@opentelemetry/sdk-trace';
import { ConfigError } from './errors';
import { capturedLogger } from './test-logger';
import { startTracing, tracingConfigured } from './tracing';
import { samplerFromEnv } from './tracing-sdk';

describe('tracingConfigured', () => {
  it('is on only with an OTLP endpoint (general or for traces) and the SDK not disabled', () => {
    expect(tracingConfigured({})).toBe(false);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: '' })).toBe(false);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBe(true);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' })).toBe(true);
    expect(tracingConfigured({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_SDK_DISABLED: 'true' })).toBe(false);
  });
});

describe('samplerFromEnv', () => {
  const sampler = (env: NodeJS.ProcessEnv) => samplerFromEnv(sdk, env).toString();

  it('defaults to parent-based always-on, and reads the spec names and the ratio', () => {
    expect(sampler({})).toMatch(/^ParentBased\{root=AlwaysOnSampler/);
    expect(sampler({ OTEL_TRACES_SAMPLER: 'always_off' })).toBe('AlwaysOffSampler');
    expect(sampler({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' })).toBe('TraceIdRatioBased{0.25}');
    expect(sampler({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.1' })).toMatch(/^ParentBased\{root=TraceIdRatioBased\{0.1\}/);
    expect(sampler({ OTEL_TRACES_SAMPLER: 'parentbased_always_off' })).toMatch(/^ParentBased\{root=AlwaysOffSampler/);
  });

  it('with untrusted remote parents, a remote sampled parent does not force recording: the root decides', () => {
    const remote = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: TraceFlags.SAMPLED,
      isRemote: true,
    });
    const decide = (options: { untrustedRemoteParents?: boolean }) =>
      samplerFromEnv(sdk, { OTEL_TRACES_SAMPLER: 'parentbased_always_off' }, options).shouldSample(
        remote,
        '0af7651916cd43dd8448eb211c80319c',
        'POST /tasks',
        SpanKind.SERVER,
        {},
        [],
      ).decision;
    expect(decide({})).toBe(sdk.SamplingDecision.RECORD_AND_SAMPLED);
    expect(decide({ untrustedRemoteParents: true })).toBe(sdk.SamplingDecision.NOT_RECORD);
    // A parent within the process is still followed.
    const local = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      traceFlags: TraceFlags.SAMPLED,
    });
    expect(
      samplerFromEnv(sdk, { OTEL_TRACES_SAMPLER: 'parentbased_always_off' }, { untrustedRemoteParents: true }).shouldSample(
        local,
        '0af7651916cd43dd8448eb211c80319c',
        'x',
        SpanKind.INTERNAL,
        {},
        [],
      ).decision,
    ).toBe(sdk.SamplingDecision.RECORD_AND_SAMPLED);
  });

  it('refuses an unknown sampler or a ratio outside [0, 1]', () => {
    expect(() => sampler({ OTEL_TRACES_SAMPLER: 'jaeger_remote' })).toThrow(ConfigError);
    expect(() => sampler({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' })).toThrow(/between 0 and 1/);
  });
});

describe('startTracing', () => {
  it('is a no-op without an endpoint', async () => {
    const tracing = await startTracing('mageagent-test', capturedLogger().logger, {});
    expect(tracing.enabled).toBe(false);
    await expect(tracing.shutdown()).resolves.toBeUndefined();
  });

  it('refuses a protocol it does not ship (grpc) at start-up', async () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4317', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' };
    await expect(startTracing('mageagent-test', capturedLogger().logger, env)).rejects.toThrow(/http\/protobuf \(default\) or http\/json/);
  });
});
