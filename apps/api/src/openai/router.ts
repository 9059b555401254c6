import express, { type ErrorRequestHandler, type RequestHandler, type Response } from 'express';
import type { TaskEvent, TaskRecord } from '@mageagent/core';
import type { TaskFollow } from '@mageagent/tasks';
import { clientLeft } from '../http-errors';
import { idempotencyKeyOf } from '../idempotency';
import { callerOf, pendingCountOf, requireScope } from '../auth/middleware';
import type { ApiServices } from '../services';
import type { Caller } from '../task-service';
import { buildChatCompletion } from './completion';
import { fromTaskError, OpenAIFacadeError, toOpenAIError } from './errors';
import { maxTokensOf, modelIdOf, parseChatRequest, patternOfModel, runsInBackground, toTaskRequest, type ChatCompletionRequest } from './request';
import { ChatStreamTranslator, type StreamFrame } from './stream';

/** OpenAI's model objects carry a creation time; the patterns' is when this process started. */
const SERVED_SINCE = Math.floor(Date.now() / 1000);

/** Chat calls in progress, each with how to end it when the api shuts down (its task goes on). */
const openChatCalls = new Map<Response, () => void>();

/** On shutdown: tells every open chat call that the server is going and where its task's result will be. */
export function endChatCalls(): void {
  for (const end of [...openChatCalls.values()]) end();
}

/**
 * The OpenAI-compatible API, to mount at `/v1`: the router and the error handler that answers
 * every `/v1` error (body-parser's included) in OpenAI's shape.
 */
export function openaiFacade(services: ApiServices): [RequestHandler, ErrorRequestHandler] {
  const router = express.Router();

  const modelObject = (pattern: string) => ({
    id: modelIdOf(pattern),
    object: 'model' as const,
    created: SERVED_SINCE,
    owned_by: 'mageagent',
    mageagent: { pattern, description: services.patterns.list().find((entry) => entry.name === pattern)?.description ?? '' },
  });

  router.get('/models', (_req, res) => {
    res.json({ object: 'list', data: services.patterns.names().map(modelObject) });
  });

  router.get('/models/:model', (req, res) => {
    res.json(modelObject(patternOfModel(req.params.model, services.patterns, null)));
  });

  router.post('/chat/completions', requireScope('tasks'), async (req, res) => {
    const request = parseChatRequest(req.body);
    const pattern = patternOfModel(request.model, services.patterns);
    const caller = callerOf(res);
    const count = pendingCountOf(res);
    const { task, replayed } = await services.tasks.create(caller, toTaskRequest(request, pattern), idempotencyKeyOf(req), count);
    // A replay created nothing, so nothing counted it yet.
    await count?.now();
    // The task id comes first, so a client whose call fails or times out can still find its task.
    res.setHeader('x-task-id', task.id);
    res.setHeader('x-request-id', task.id);
    // A repeated call (same Idempotency-Key and body) follows the first call's task instead of starting another.
    if (replayed) res.setHeader('idempotent-replayed', 'true');
    if (request.stream === true) await streamCompletion(services, caller, request, task, res);
    else await answerCompletion(services, caller, request, task, res);
  });

  router.all(['/models', '/models/:model', '/chat/completions'], (req) => {
    throw new OpenAIFacadeError(405, `Invalid method for URL (${req.method} ${req.originalUrl})`, { code: 'method_not_allowed' });
  });

  router.use((req) => {
    throw new OpenAIFacadeError(404, `Invalid URL (${req.method} ${req.originalUrl})`, { code: 'unknown_url' });
  });

  const errorHandler: ErrorRequestHandler = async (failure: unknown, req, res, _next) => {
    // A request still to be counted is counted now: past its key's limit, its answer is the 429.
    const count = pendingCountOf(res);
    const error = count === undefined ? failure : await count.answerFor(failure);
    const answer = toOpenAIError(error);
    if (answer.status >= 500 && answer.retryAfterSeconds === undefined && !(error instanceof OpenAIFacadeError)) {
      services.logger.error('openai facade request failed', { method: req.method, path: req.path, error: String(error), stack: (error as Error).stack });
    }
    if (res.headersSent) {
      res.end();
      return;
    }
    if (answer.retryable !== undefined) res.setHeader('x-should-retry', String(answer.retryable));
    if (answer.retryAfterSeconds !== undefined) res.setHeader('retry-after', String(answer.retryAfterSeconds));
    res.status(answer.status).json({ error: answer.body });
  };

  return [router, errorHandler];
}

interface CallFollowOptions {
  onEvent(event: TaskEvent): void;
  /** The follow ended on its own: the task reached its end, or the event stream failed. */
  onEnd(reason: 'terminal' | 'error', error?: unknown): void;
  /** The api is shutting down: answer the client; the task keeps running. */
  onShutdown(): void;
}

/**
 * Follows a task for the length of one HTTP call. A client that leaves before the answer cancels
 * the task through the same path as `POST /tasks/:id/cancel`, unless it asked for
 * `metadata.background: "true"`: nobody would read the answer, and the GPU time is better spent on
 * callers still waiting (SDKs that time out retry with a new call, i.e. a new task).
 */
async function followForCall(
  services: ApiServices,
  caller: Caller,
  request: ChatCompletionRequest,
  task: TaskRecord,
  res: Response,
  options: CallFollowOptions,
): Promise<void> {
  let follow: TaskFollow | undefined;
  openChatCalls.set(res, () => {
    options.onShutdown();
    follow?.close();
  });
  follow = services.tasks.follow(task, {
    onEvent: options.onEvent,
    onEnd: (reason, error) => {
      if (reason !== 'closed') options.onEnd(reason, error);
    },
  });
  const onClose = () => {
    openChatCalls.delete(res);
    if (res.writableEnded) return;
    follow?.close();
    if (runsInBackground(request)) return;
    services.tasks
      .cancel(caller.principal, task.id, 'client disconnected from the chat completion call')
      .catch((error: unknown) => services.logger.warn('could not cancel the task of a departed client', { taskId: task.id, error: String(error) }));
  };
  // The client may have left while the task was being created, before 'close' could be listened for.
  if (clientLeft(res.req, res)) onClose();
  else res.once('close', onClose);
  await follow.ready;
}

/** `stream: false`: waits for the task, then answers the completion or the task's error. */
async function answerCompletion(services: ApiServices, caller: Caller, request: ChatCompletionRequest, task: TaskRecord, res: Response): Promise<void> {
  const respond = (status: number, body: unknown) => {
    if (res.headersSent) return;
    openChatCalls.delete(res);
    res.status(status).json(body);
  };
  const respondError = (error: OpenAIFacadeError) => {
    // The shutdown answer may have gone out while the task was being read.
    if (res.headersSent) return;
    if (error.retryable !== undefined) res.setHeader('x-should-retry', String(error.retryable));
    respond(error.status, { error: error.body });
  };
  await followForCall(services, caller, request, task, res, {
    onEvent: () => undefined,
    onEnd: (reason, error) => {
      if (reason === 'error') {
        services.logger.warn('lost a task while waiting for it', { taskId: task.id, error: String(error) });
        respondError(lostTask(task.id));
        return;
      }
      services.tasks.get(caller.principal, task.id).then(
        (finished) => {
          if (finished.status === 'completed' && finished.result) {
            respond(200, buildChatCompletion(finished, finished.result, request.model, maxTokensOf(request)));
          } else {
            respondError(fromTaskError(finished.error ?? { code: 'INTERNAL', message: `the task ended ${finished.status}`, retryable: false }));
          }
        },
        (readError: unknown) => {
          services.logger.warn('could not read a finished task', { taskId: task.id, error: String(readError) });
          respondError(lostTask(task.id));
        },
      );
    },
    onShutdown: () => respondError(shuttingDown(task.id)),
  });
}

/** `stream: true`: the task's events as `chat.completion.chunk` SSE, ending with `data: [DONE]`. */
async function streamCompletion(services: ApiServices, caller: Caller, request: ChatCompletionRequest, task: TaskRecord, res: Response): Promise<void> {
  const maxTokens = maxTokensOf(request);
  const translator = new ChatStreamTranslator({
    task,
    model: request.model,
    includeUsage: request.stream_options?.include_usage === true,
    ...(maxTokens !== undefined && { maxTokens }),
  });
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  let lastWriteAt = Date.now();
  const write = (text: string) => {
    lastWriteAt = Date.now();
    res.write(text);
  };
  const writeFrames = (frames: StreamFrame[]) => {
    if (frames.length > 0) write(frames.map((frame) => `data: ${JSON.stringify(frame)}\n\n`).join(''));
  };
  // Comments keep proxies and clients with idle timeouts from cutting a call whose step is quiet
  // (a 72B model's first token, a review); OpenAI clients skip them.
  const keepAlive = setInterval(() => {
    if (Date.now() - lastWriteAt >= services.config.chatKeepAliveMs) write(': keep-alive\n\n');
  }, services.config.chatKeepAliveMs);
  const end = (frames: StreamFrame[], done: boolean) => {
    clearInterval(keepAlive);
    if (res.writableEnded) return;
    openChatCalls.delete(res);
    writeFrames(frames);
    res.end(done ? 'data: [DONE]\n\n' : undefined);
  };
  if (clientLeft(res.req, res)) clearInterval(keepAlive);
  else res.once('close', () => clearInterval(keepAlive));
  writeFrames([translator.start()]);

  await followForCall(services, caller, request, task, res, {
    onEvent: (event) => {
      const step = translator.accept(event);
      if (step.end === undefined) writeFrames(step.frames);
      else end(step.frames, step.end === 'done');
    },
    onEnd: (reason, error) => {
      if (reason === 'error') services.logger.warn('lost a task while streaming it', { taskId: task.id, error: String(error) });
      end([{ error: lostTask(task.id).body }], false);
    },
    onShutdown: () => end([{ error: shuttingDown(task.id).body }], false),
  });
}

const lostTask = (taskId: string) =>
  new OpenAIFacadeError(503, `lost track of the task; its outcome will be at GET /tasks/${taskId}`, { code: 'task_unavailable' }, false);

const shuttingDown = (taskId: string) =>
  new OpenAIFacadeError(
    503,
    `the server is shutting down; the task goes on and its outcome will be at GET /tasks/${taskId}`,
    { code: 'server_shutting_down' },
    false,
  );
