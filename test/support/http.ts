import type { TaskEvent, TaskRecord } from '@mageagent/core';

export interface JsonResponse<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
}

export async function requestJson<T = any>(url: string, init: RequestInit = {}): Promise<JsonResponse<T>> {
  const response = await fetch(url, init);
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text for the assertion message
  }
  return { status: response.status, headers: response.headers, body: body as T };
}

export const postJson = <T = any>(url: string, body: unknown) =>
  requestJson<T>(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

export async function createTask(api: string, body: Record<string, unknown>): Promise<string> {
  const response = await postJson<{ id: string }>(`${api}/tasks`, body);
  if (response.status !== 202) throw new Error(`POST /tasks answered ${response.status}: ${JSON.stringify(response.body)}`);
  return response.body.id;
}

/** Polls GET /tasks/:id until the task is terminal. */
export async function waitForTask(api: string, taskId: string, timeoutMs = 20_000): Promise<TaskRecord> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await requestJson<TaskRecord>(`${api}/tasks/${taskId}`);
    if (['completed', 'failed', 'cancelled'].includes(body.status)) return body;
    if (Date.now() > deadline) throw new Error(`task ${taskId} still ${body.status} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Polls until `check` returns a value other than undefined. */
export async function eventually<T>(check: () => Promise<T | undefined>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export interface SseFrame {
  id?: string;
  event?: string;
  data?: string;
}

export interface SseRead {
  status: number;
  headers: Headers;
  frames: SseFrame[];
  comments: string[];
  events: TaskEvent[];
  /** True when the server closed the stream (rather than `stop` returning true). */
  closedByServer: boolean;
}

/**
 * Reads an SSE stream with fetch until the server closes it or `stop(events)` says to stop
 * (then the client disconnects).
 */
export async function readSse(
  url: string,
  headers: Record<string, string> = {},
  stop: (events: TaskEvent[]) => boolean = () => false,
  timeoutMs = 20_000,
): Promise<SseRead> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  const response = await fetch(url, { headers, signal: controller.signal });
  const read: SseRead = { status: response.status, headers: response.headers, frames: [], comments: [], events: [], closedByServer: false };
  if (!response.body || response.status !== 200) {
    clearTimeout(timer);
    return read;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        read.closedByServer = true;
        break;
      }
      buffer += decoder.decode(value, { stream: true });
      let boundary: number;
      let stopped = false;
      while ((boundary = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        const frame: SseFrame = {};
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) read.comments.push(line.slice(1).trim());
          else if (line.startsWith('id: ')) frame.id = line.slice(4);
          else if (line.startsWith('event: ')) frame.event = line.slice(7);
          else if (line.startsWith('data: ')) frame.data = (frame.data ?? '') + line.slice(6);
        }
        if (frame.data !== undefined) {
          read.frames.push(frame);
          read.events.push(JSON.parse(frame.data) as TaskEvent);
          if (stop(read.events)) stopped = true;
        }
      }
      if (stopped) break;
    }
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
  return read;
}
