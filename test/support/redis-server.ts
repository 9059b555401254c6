import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { findExecutable, freePort, redisAnswers } from '../../apps/launcher/src/redis-probe';

/**
 * A private `redis-server` for tests that stop and restart Redis: its own port and data
 * directory, with AOF (by default fsynced on every write, `appendfsync always`), so what Redis
 * acknowledged before a SIGKILL is there after the restart, as with a production Redis that persists.
 */
export class RedisServer {
  private child: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    readonly dir: string,
    private readonly binary: string,
    private readonly appendfsync: 'always' | 'everysec',
  ) {}

  /**
   * `appendfsync: 'always'` (the default) keeps every acknowledged write across a SIGKILL;
   * `everysec` is faster and keeps them across a graceful stop (SIGTERM).
   */
  static async start(options: { appendfsync?: 'always' | 'everysec' } = {}): Promise<RedisServer> {
    const binary = findExecutable('redis-server');
    if (binary === undefined) throw new Error('redis-server is not on PATH: install it (apt-get install redis-server)');
    const dir = mkdtempSync(path.join(tmpdir(), 'mageagent-redis-'));
    const server = new RedisServer(await freePort(), dir, binary, options.appendfsync ?? 'always');
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts (again) on the same port and directory; resolves once it answers PING. */
  async start(): Promise<void> {
    if (this.running) return;
    const args = [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--dir',
      this.dir,
      '--save',
      '',
      '--appendonly',
      'yes',
      '--appendfsync',
      this.appendfsync,
    ];
    const child = spawn(this.binary, args, { stdio: 'ignore' });
    this.child = child;
    const deadline = Date.now() + 10_000;
    while (!(await redisAnswers('127.0.0.1', this.port, 200))) {
      if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode}`);
      if (Date.now() > deadline) throw new Error('redis-server did not answer within 10 s');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Stops it (SIGKILL by default: an outage, not a shutdown) and waits until it is gone. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (child === undefined || !this.running) return;
    child.kill('SIGCONT');
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await exited;
  }

  /** Freezes it (SIGSTOP): connections stay open and nothing answers, as with a hung server or a partition. */
  pause(): void {
    this.child?.kill('SIGSTOP');
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** Stops it for good and deletes its data. */
  async close(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
