import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CancelledError, ConfigError, ModelResponseError, ModelTimeoutError, ModelUnavailableError, type MageError } from '@mageagent/core';
import { parseModelsConfig } from './config';
import { OpenAICompatibleModel } from './openai-client';
import { ModelRegistry } from './registry';
import { TracedModel } from './traced-model';
import type { ChatRequest } from './types';

type Handler = (request: IncomingMessage, response: ServerResponse, body: string) => void | Promise<void>;

interface TestServer {
  endpoint: string;
  close(): Promise<void>;
}

const servers: TestServer[] = [];

/** A real HTTP server on a free port; every handler sees the full request body. */
async function startServer(handler: Handler): Promise<TestServer> {
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      void handler(request, response, Buffer.concat(chunks).toString('utf8'));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const testServer: TestServer = {
    endpoint: `http://127.0.0.1:${port}/v1`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  servers.push(testServer);
  return testServer;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function model(endpoint: string, timeouts = { firstTokenMs: 2000, totalMs: 5000 }): OpenAICompatibleModel {
  return new OpenAICompatibleModel({ id: 'test-model', host: 'gpu-1', endpoint, timeouts, role: 'primary' });
}

const request: ChatRequest = { messages: [{ role: 'user', content: 'Say hello to the world, please.' }] };

function chunk(delta: Record<string, unknown>, finishReason: string | null = null): string {
  return JSON.stringify({
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1,
    model: 'served-model',
    choices: [{ index: 0, delta, finish_reason: finishReason }],
  });
}

function sseHeaders(response: ServerResponse): void {
  response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
}

async function expectRejection(promise: Promise<unknown>): Promise<MageError> {
  try {
    await promise;
  } catch (error) {
    return error as MageError;
  }
  throw new Error('expected the call to reject');
}

describe('OpenAICompatibleModel streaming', () => {
  it('reads a normal stream ending with [DONE] and sends the expected request', async () => {
    let seenBody: Record<string, unknown> = {};
    let seenHeaders: IncomingMessage['headers'] = {};
    let seenPath = '';
    const server = await startServer((incoming, response, body) => {
      seenBody = JSON.parse(body) as Record<string, unknown>;
      seenHeaders = incoming.headers;
      seenPath = incoming.url ?? '';
      sseHeaders(response);
      for (const piece of ['Hello', ' world', '!']) response.write(`data: ${chunk({ content: piece })}\n\n`);
      response.write(`data: ${chunk({}, 'stop')}\n\n`);
      response.end('data: [DONE]\n\n');
    });
    const client = new OpenAICompatibleModel({
      id: 'test-model',
      host: 'gpu-1',
      endpoint: `${server.endpoint}/`,
      apiKey: 'secret-key',
      timeouts: { firstTokenMs: 2000, totalMs: 5000 },
      defaults: { temperature: 0.3, maxTokens: 99 },
    });
    const deltas: string[] = [];
    const answer = await client.chat({ ...request, responseFormat: { type: 'json_object' } }, { onDelta: (text) => deltas.push(text) });

    expect(answer.content).toBe('Hello world!');
    expect(deltas).toEqual(['Hello', ' world', '!']);
    expect(answer.finishReason).toBe('stop');
    expect(answer.model).toBe('served-model');
    // No usage from the server: the prompt is estimated from characters, the completion from chunks.
    expect(answer.usage).toEqual({ promptTokens: 8, completionTokens: 3, totalTokens: 11 });
    expect(seenPath).toBe('/v1/chat/completions');
    expect(seenHeaders.authorization).toBe('Bearer secret-key');
    expect(seenBody).toEqual({
      model: 'test-model',
      messages: request.messages,
      temperature: 0.3,
      max_tokens: 99,
      stream: true,
      stream_options: { include_usage: true },
      response_format: { type: 'json_object' },
    });
  });

  it('tolerates keepalive comments, CRLF, a role-only first chunk and a usage chunk with no choices', async () => {
    const server = await startServer(async (_incoming, response) => {
      sseHeaders(response);
      response.write(': keepalive\r\n\r\n');
      await sleep(20);
      response.write(': keepalive\r\n\r\n');
      response.write(`data: ${chunk({ role: 'assistant' })}\r\n\r\n`);
      response.write(`data:${chunk({ content: 'Hi' })}\r\n\r\n`);
      response.write(`data: ${chunk({ content: ' there' }, 'length')}\r\n\r\n`);
      response.write(
        `data: ${JSON.stringify({ object: 'chat.completion.chunk', model: 'served-model', choices: [], usage: { prompt_tokens: 12, completion_tokens: 2, total_tokens: 14 } })}\r\n\r\n`,
      );
      response.end('data: [DONE]\r\n\r\n');
    });
    const deltas: string[] = [];
    const answer = await model(server.endpoint).chat(request, { onDelta: (text) => deltas.push(text) });
    expect(answer).toEqual({
      content: 'Hi there',
      usage: { promptTokens: 12, completionTokens: 2, totalTokens: 14 },
      finishReason: 'length',
      model: 'served-model',
    });
    expect(deltas).toEqual(['Hi', ' there']);
  });

  it('treats the end of the body as the end of the stream when [DONE] is missing', async () => {
    const server = await startServer((_incoming, response) => {
      sseHeaders(response);
      response.write(`data: ${chunk({ content: 'no' })}\n\n`);
      response.write(`data: ${chunk({ content: ' done' }, 'stop')}\n\n`);
      // The last event has no trailing newline at all.
      response.end(`data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 1, completion_tokens: 2 } })}`);
    });
    const answer = await model(server.endpoint).chat(request, { onDelta: () => undefined });
    expect(answer.content).toBe('no done');
    expect(answer.finishReason).toBe('stop');
    expect(answer.usage).toEqual({ promptTokens: 1, completionTokens: 2, totalTokens: 3 });
  });

  it('reassembles events and multi-byte characters split at arbitrary byte boundaries', async () => {
    const pieces = ['Grüße', ' aus', ' 東京', ' 🎉', ' ok'];
    const sse = Buffer.from(
      `${pieces.map((piece) => `data: ${chunk({ content: piece })}\n\n`).join('')}data: ${chunk({}, 'stop')}\n\ndata: [DONE]\n\n`,
      'utf8',
    );
    const server = await startServer(async (_incoming, response) => {
      response.socket?.setNoDelay(true);
      sseHeaders(response);
      // Odd slice sizes walk the cut points through every position, including inside 2-, 3- and 4-byte characters.
      let offset = 0;
      let size = 1;
      while (offset < sse.length) {
        response.write(sse.subarray(offset, offset + size));
        offset += size;
        size = (size % 7) + 2;
        await sleep(1);
      }
      response.end();
    });
    const deltas: string[] = [];
    const answer = await model(server.endpoint).chat(request, { onDelta: (text) => deltas.push(text) });
    expect(answer.content).toBe(pieces.join(''));
    expect(deltas).toEqual(pieces);
    expect(answer.finishReason).toBe('stop');
  });

  it('maps a malformed chunk to ModelResponseError', async () => {
    const server = await startServer((_incoming, response) => {
      sseHeaders(response);
      response.end('data: {"choices": [\n\n');
    });
    const error = await expectRejection(model(server.endpoint).chat(request, { onDelta: () => undefined }));
    expect(error).toBeInstanceOf(ModelResponseError);
    expect(error.retryable).toBe(false);
  });

  it('maps an error event inside the stream by its code', async () => {
    const server = await startServer((_incoming, response) => {
      sseHeaders(response);
      response.end(`data: ${JSON.stringify({ error: { message: 'overloaded', code: 503 } })}\n\n`);
    });
    const error = await expectRejection(model(server.endpoint).chat(request, { onDelta: () => undefined }));
    expect(error).toBeInstanceOf(ModelUnavailableError);
    expect(error.message).toContain('overloaded');
  });

  it('maps a socket closed mid-stream to ModelUnavailableError', async () => {
    const server = await startServer(async (_incoming, response) => {
      sseHeaders(response);
      response.write(`data: ${chunk({ content: 'partial' })}\n\n`);
      await sleep(20);
      response.socket?.destroy();
    });
    const deltas: string[] = [];
    const error = await expectRejection(model(server.endpoint).chat(request, { onDelta: (text) => deltas.push(text) }));
    expect(error).toBeInstanceOf(ModelUnavailableError);
    expect(error.retryable).toBe(true);
    expect(deltas).toEqual(['partial']);
  });

  it('passes an exception thrown by onDelta through unchanged', async () => {
    const server = await startServer((_incoming, response) => {
      sseHeaders(response);
      response.end(`data: ${chunk({ content: 'x' })}\n\ndata: [DONE]\n\n`);
    });
    const thrown = new Error('consumer failed');
    await expect(
      model(server.endpoint).chat(request, {
        onDelta: () => {
          throw thrown;
        },
      }),
    ).rejects.toBe(thrown);
  });
});

describe('OpenAICompatibleModel non-streaming', () => {
  it('reads a chat.completion JSON answer', async () => {
    let seenBody: Record<string, unknown> = {};
    const server = await startServer((_incoming, response, body) => {
      seenBody = JSON.parse(body) as Record<string, unknown>;
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(
        JSON.stringify({
          id: 'chatcmpl-2',
          object: 'chat.completion',
          model: 'served-model',
          choices: [{ index: 0, message: { role: 'assistant', content: 'A whole answer.' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 7, completion_tokens: 4, total_tokens: 11 },
        }),
      );
    });
    const answer = await model(server.endpoint).chat({ ...request, temperature: 0, maxTokens: 5 });
    expect(answer).toEqual({
      content: 'A whole answer.',
      usage: { promptTokens: 7, completionTokens: 4, totalTokens: 11 },
      finishReason: 'stop',
      model: 'served-model',
    });
    expect(seenBody).toEqual({ model: 'test-model', messages: request.messages, temperature: 0, max_tokens: 5, stream: false });
  });

  it('maps a malformed JSON body to ModelResponseError', async () => {
    const server = await startServer((_incoming, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"choices": [{"message": ');
    });
    const error = await expectRejection(model(server.endpoint).chat(request));
    expect(error).toBeInstanceOf(ModelResponseError);
    expect(error.retryable).toBe(false);
  });

  it('maps an answer without choices to ModelResponseError', async () => {
    const server = await startServer((_incoming, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"choices": []}');
    });
    await expect(model(server.endpoint).chat(request)).rejects.toBeInstanceOf(ModelResponseError);
  });
});

describe('OpenAICompatibleModel HTTP and network errors', () => {
  it.each([500, 503, 429])('maps HTTP %i to a retryable ModelUnavailableError with a body excerpt', async (status) => {
    const server = await startServer((_incoming, response) => {
      response.writeHead(status, { 'content-type': 'text/plain' });
      response.end('x'.repeat(2000));
    });
    const error = await expectRejection(model(server.endpoint).chat(request, { onDelta: () => undefined }));
    expect(error).toBeInstanceOf(ModelUnavailableError);
    expect(error.retryable).toBe(true);
    const details = error.details as { status: number; body: string };
    expect(details.status).toBe(status);
    expect(details.body).toHaveLength(500);
  });

  it.each([400, 404, 422])('maps HTTP %i to a final ModelResponseError', async (status) => {
    const server = await startServer((_incoming, response) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: { message: 'bad request', type: 'invalid_request_error' } }));
    });
    const error = await expectRejection(model(server.endpoint).chat(request));
    expect(error).toBeInstanceOf(ModelResponseError);
    expect(error.retryable).toBe(false);
    expect((error.details as { status: number; body: string }).status).toBe(status);
    expect((error.details as { status: number; body: string }).body).toContain('bad request');
  });

  it('maps a refused connection to ModelUnavailableError', async () => {
    const server = await startServer(() => undefined);
    await server.close();
    const error = await expectRejection(model(server.endpoint).chat(request));
    expect(error).toBeInstanceOf(ModelUnavailableError);
    expect(error.retryable).toBe(true);
    expect((error.details as { code?: string }).code).toBe('ECONNREFUSED');
  });

  it('maps an unresolvable host name to ModelUnavailableError', async () => {
    const error = await expectRejection(model('http://no-such-host.invalid/v1').chat(request));
    expect(error).toBeInstanceOf(ModelUnavailableError);
  });
});

describe('OpenAICompatibleModel Retry-After', () => {
  /** The error of one streaming call to a server that answers `status` with `headers`. */
  async function failureWith(status: number, headers: Record<string, string>): Promise<MageError> {
    const server = await startServer((_incoming, response) => {
      response.writeHead(status, { 'content-type': 'application/json', ...headers });
      response.end(JSON.stringify({ error: { message: 'busy', type: 'server_error' } }));
    });
    return expectRejection(model(server.endpoint).chat(request, { onDelta: () => undefined }));
  }

  it.each([
    [429, { 'retry-after': '2' }, 2000],
    [503, { 'retry-after': '0' }, 0],
    [500, { 'retry-after': ' 1.5 ' }, 1500],
    [503, { 'retry-after-ms': '1500.2' }, 1501],
    [429, { 'retry-after-ms': '250', 'retry-after': '7' }, 250],
    [503, { 'retry-after-ms': 'soon', 'retry-after': '3' }, 3000],
  ])('HTTP %i with %j: the error carries retryAfterMs %i, in details too', async (status, headers, expected) => {
    const error = await failureWith(status, headers);
    expect(error).toBeInstanceOf(ModelUnavailableError);
    expect(error.retryable).toBe(true);
    expect((error as ModelUnavailableError).retryAfterMs).toBe(expected);
    expect(error.details).toMatchObject({ status, retryAfterMs: expected });
  });

  it('reads an HTTP-date as the time left until it, and a date already past as 0', async () => {
    // HTTP-dates have whole seconds, so "3 s from now" is between 2 and 3 s away once truncated.
    const soon = new Date(Date.now() + 3000).toUTCString();
    const future = (await failureWith(503, { 'retry-after': soon })) as ModelUnavailableError;
    expect(future.retryAfterMs).toBeGreaterThan(1000);
    expect(future.retryAfterMs).toBeLessThanOrEqual(3000);
    const past = (await failureWith(429, { 'retry-after': 'Sun, 06 Nov 1994 08:49:37 GMT' })) as ModelUnavailableError;
    expect(past.retryAfterMs).toBe(0);
  });

  it.each([
    ['IMF-fixdate', 'Sat, 01 Jan 2060 00:00:00 GMT'],
    ['RFC 850 (two-digit year: 60 is 2060, not more than 50 years ahead)', 'Saturday, 01-Jan-60 00:00:00 GMT'],
    ['asctime', 'Sat Jan  1 00:00:00 2060'],
  ])('reads the %s format', async (_format, date) => {
    const error = (await failureWith(503, { 'retry-after': date })) as ModelUnavailableError;
    expect(Math.abs(error.retryAfterMs! - (Date.UTC(2060, 0, 1) - Date.now()))).toBeLessThan(5000);
  });

  it.each(['soon', '-5', '1e3', '0x10', '1,5', 'Sun, 31 Feb 2100 00:00:00 GMT', 'Sun, 06 Nov 1994 25:00:00 GMT', '5 apples'])(
    'ignores the garbage Retry-After %j',
    async (value) => {
      const error = (await failureWith(503, { 'retry-after': value, 'retry-after-ms': value })) as ModelUnavailableError;
      expect(error).toBeInstanceOf(ModelUnavailableError);
      expect(error.retryAfterMs).toBeUndefined();
      expect(error.details).not.toHaveProperty('retryAfterMs');
    },
  );

  it('leaves a final 4xx final, whatever Retry-After it carries', async () => {
    const error = await failureWith(400, { 'retry-after': '1' });
    expect(error).toBeInstanceOf(ModelResponseError);
    expect(error).not.toHaveProperty('retryAfterMs');
  });
});

describe('OpenAICompatibleModel timeouts and cancellation', () => {
  it('times out when the server never answers within firstTokenMs', async () => {
    const server = await startServer(() => undefined);
    const started = Date.now();
    const error = await expectRejection(model(server.endpoint, { firstTokenMs: 150, totalMs: 5000 }).chat(request));
    expect(error).toBeInstanceOf(ModelTimeoutError);
    expect(error.retryable).toBe(true);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('times out when headers and keepalives arrive but no token does', async () => {
    const server = await startServer(async (_incoming, response) => {
      sseHeaders(response);
      response.write(`data: ${chunk({ role: 'assistant' })}\n\n`);
      for (let beat = 0; beat < 20 && !response.destroyed; beat += 1) {
        response.write(': keepalive\n\n');
        await sleep(30);
      }
      response.end();
    });
    const error = await expectRejection(model(server.endpoint, { firstTokenMs: 150, totalMs: 5000 }).chat(request, { onDelta: () => undefined }));
    expect(error).toBeInstanceOf(ModelTimeoutError);
    expect((error.details as { kind: string }).kind).toBe('firstToken');
  });

  it('times out when the whole call exceeds totalMs even though tokens keep coming', async () => {
    const server = await startServer(async (_incoming, response) => {
      sseHeaders(response);
      for (let token = 0; token < 100 && !response.destroyed; token += 1) {
        response.write(`data: ${chunk({ content: 'tok ' })}\n\n`);
        await sleep(20);
      }
      response.end();
    });
    const error = await expectRejection(model(server.endpoint, { firstTokenMs: 1000, totalMs: 200 }).chat(request, { onDelta: () => undefined }));
    expect(error).toBeInstanceOf(ModelTimeoutError);
    expect((error.details as { kind: string }).kind).toBe('total');
  });

  it('cancels mid-stream: CancelledError, and the server sees the connection close', async () => {
    let serverSawClose!: () => void;
    const closed = new Promise<void>((resolve) => {
      serverSawClose = resolve;
    });
    const server = await startServer(async (incoming, response) => {
      incoming.on('close', () => serverSawClose());
      sseHeaders(response);
      for (let token = 0; token < 500 && !response.destroyed; token += 1) {
        response.write(`data: ${chunk({ content: 'tok ' })}\n\n`);
        await sleep(10);
      }
      response.end();
    });
    const controller = new AbortController();
    const deltas: string[] = [];
    const call = model(server.endpoint).chat(request, {
      signal: controller.signal,
      onDelta: (text) => {
        deltas.push(text);
        if (deltas.length === 3) controller.abort();
      },
    });
    const error = await expectRejection(call);
    expect(error).toBeInstanceOf(CancelledError);
    await closed;
    expect(deltas.length).toBeLessThan(10);
  });

  it('cancels while waiting for response headers', async () => {
    let serverSawClose!: () => void;
    const closed = new Promise<void>((resolve) => {
      serverSawClose = resolve;
    });
    const server = await startServer((incoming) => {
      incoming.on('close', () => serverSawClose());
    });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const error = await expectRejection(model(server.endpoint).chat(request, { signal: controller.signal }));
    expect(error).toBeInstanceOf(CancelledError);
    await closed;
  });

  it('does not send anything when the signal is already aborted', async () => {
    let requests = 0;
    const server = await startServer((_incoming, response) => {
      requests += 1;
      response.end();
    });
    const error = await expectRejection(model(server.endpoint).chat(request, { signal: AbortSignal.abort() }));
    expect(error).toBeInstanceOf(CancelledError);
    expect(requests).toBe(0);
  });
});

describe('OpenAICompatibleModel.fromRole and ModelRegistry', () => {
  const configText = `
hosts:
  gpu-a: { memoryGB: 64 }
  gpu-b: { memoryGB: 64 }
roles:
  primary:
    model: big-model
    endpoint: http://127.0.0.1:1/v1
    host: gpu-a
    apiKeyEnv: TEST_MODEL_KEY
  validator:
    model: small-model
    endpoint: http://127.0.0.1:2/v1
    host: gpu-b
`;

  it('builds one client per role and names the known roles for an unknown one', () => {
    const config = parseModelsConfig(configText, 'test', {});
    const registry = new ModelRegistry(config, { TEST_MODEL_KEY: 'k' });
    expect(registry.roles()).toEqual(['primary', 'validator']);
    expect(registry.hosts()).toEqual(['gpu-a', 'gpu-b']);
    expect(registry.has('validator')).toBe(true);
    expect(registry.has('judge')).toBe(false);
    // Every role's client is wrapped in its model-call span.
    expect(registry.role('validator')).toBeInstanceOf(TracedModel);
    expect(registry.role('primary').id).toBe('big-model');
    expect(registry.role('primary').host).toBe('gpu-a');
    expect(registry.roleConfig('validator').endpoint).toBe('http://127.0.0.1:2/v1');
    expect(() => registry.role('judge')).toThrow(ConfigError);
    expect(() => registry.role('judge')).toThrow(/known roles: primary, validator/);
  });

  it('refuses a role whose apiKeyEnv variable is not set', () => {
    const config = parseModelsConfig(configText, 'test', {});
    expect(() => new ModelRegistry(config, {})).toThrow(/TEST_MODEL_KEY/);
  });

  it('accepts a factory so tests can substitute fakes', () => {
    const config = parseModelsConfig(configText, 'test', {});
    const registry = new ModelRegistry(config, {}, (roleName, roleConfig) => ({
      id: `fake-${roleName}`,
      host: roleConfig.host,
      chat: async () => ({ content: '', usage: { promptTokens: 0, completionTokens: 0, totalTokens: 0 }, finishReason: 'stop', model: 'fake' }),
    }));
    expect(registry.role('primary').id).toBe('fake-primary');
  });
});
