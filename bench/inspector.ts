import WebSocket from 'ws';

/** What `process.memoryUsage()` answers, in bytes. */
export interface MemoryUsage {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

interface Pending {
  resolve: (result: Record<string, unknown>) => void;
  reject: (error: Error) => void;
}

/**
 * A Chrome DevTools Protocol session with a Node process started with `--inspect`: what a
 * benchmark needs to look at another process's memory without any debug route in the product
 * (a full GC, `process.memoryUsage()`, live instances of a class).
 */
export class InspectorSession {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  private constructor(private readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const message = JSON.parse(String(data)) as { id?: number; result?: Record<string, unknown>; error?: unknown };
      if (message.id === undefined) return;
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (message.error !== undefined) waiter?.reject(new Error(`inspector: ${JSON.stringify(message.error)}`));
      else waiter?.resolve(message.result ?? {});
    });
    socket.on('close', () => {
      for (const waiter of this.pending.values()) waiter.reject(new Error('inspector: connection closed'));
      this.pending.clear();
    });
  }

  /** Connects to the `ws://…` address a process prints as `Debugger listening on …`. */
  static async connect(url: string): Promise<InspectorSession> {
    const socket = new WebSocket(url, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    return new InspectorSession(socket);
  }

  send(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Evaluates an expression in the process and returns its value (JSON-serialisable). */
  async evaluate<T>(expression: string): Promise<T> {
    const answer = await this.send('Runtime.evaluate', { expression, returnByValue: true });
    if (answer.exceptionDetails) throw new Error(`inspector: ${expression} threw ${JSON.stringify(answer.exceptionDetails)}`);
    return (answer.result as { value: T }).value;
  }

  /** A full, non-incremental GC; twice, since memory freed by the first one's finalizers needs a second. */
  async collectGarbage(): Promise<void> {
    await this.send('HeapProfiler.collectGarbage');
    await this.send('HeapProfiler.collectGarbage');
  }

  memoryUsage(): Promise<MemoryUsage> {
    return this.evaluate<MemoryUsage>('process.memoryUsage()');
  }

  /** How many objects whose prototype `prototypeExpression` evaluates to are alive (reachable or not yet collected). */
  async countInstances(prototypeExpression: string): Promise<number> {
    const prototype = (await this.send('Runtime.evaluate', { expression: prototypeExpression })).result as { objectId?: string };
    if (prototype.objectId === undefined) throw new Error(`inspector: ${prototypeExpression} is not an object`);
    const { objects } = (await this.send('Runtime.queryObjects', { prototypeObjectId: prototype.objectId })) as { objects: { objectId: string } };
    const length = await this.send('Runtime.callFunctionOn', {
      objectId: objects.objectId,
      functionDeclaration: 'function () { return this.length; }',
      returnByValue: true,
    });
    await this.send('Runtime.releaseObject', { objectId: objects.objectId });
    await this.send('Runtime.releaseObject', { objectId: prototype.objectId });
    return (length.result as { value: number }).value;
  }

  close(): void {
    this.socket.close();
  }
}
