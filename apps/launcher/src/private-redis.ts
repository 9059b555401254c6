import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { freePort, redisAnswers, redisReply } from './redis-probe';
import { exitStatusOf, followOutput, isAlive, printPrefixed, stopService, type LineSink } from './service-process';
import { StartFailedError, supervisorFor, type SupervisedProcess, type SupervisionOptions, type Supervisor } from './supervisor';

export interface PrivateRedisOptions {
  /** The redis-server executable. */
  binary: string;
  /** Directory of the append-only file; created when missing. Absolute. */
  dataDir: string;
  sink?: LineSink;
  /** Start redis-server again (same port, same directory) when it ends on its own. */
  supervise?: SupervisionOptions;
  /** How long redis-server may take to answer (loading a large append-only file takes a while). */
  readyTimeoutMs?: number;
}

export interface RedisProcess extends SupervisedProcess {
  port: number;
}

/** The launcher's claim on a data directory: which launcher uses it, and its redis-server's port. */
interface DataDirectoryClaim {
  launcherPid: number;
  port?: number;
}

const CLAIM_FILE = 'launcher.json';
const NAME = 'redis';

/**
 * A redis-server the launcher runs for itself when no Redis is configured: persistent (an
 * append-only file in `dataDir`, so accepted tasks survive a restart), on a free port that it
 * keeps when it is restarted, since every service was given its URL.
 */
export class PrivateRedis {
  /** The current redis-server process. */
  process?: RedisProcess;
  private port?: number;
  private readonly lifetime = new AbortController();
  private readonly supervisor?: Supervisor;
  private stopped?: Promise<void>;
  private claimed = false;

  constructor(private readonly options: PrivateRedisOptions) {
    this.supervisor = supervisorFor(options.supervise, () => this.stop());
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  private get claimPath(): string {
    return path.join(this.options.dataDir, CLAIM_FILE);
  }

  async start(): Promise<this> {
    mkdirSync(this.options.dataDir, { recursive: true });
    await this.claimDataDirectory();
    try {
      const port = await freePort();
      this.port = port;
      this.process = await this.startServer(port);
      writeFileSync(this.claimPath, JSON.stringify({ launcherPid: process.pid, port } satisfies DataDirectoryClaim));
      this.supervisor?.watch(
        this.process,
        () => this.startServer(port),
        (next) => (this.process = next),
      );
      return this;
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  /** Stops redis-server (SIGTERM: it writes what it has to its append-only file) and cancels any restart. Idempotent. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.lifetime.abort();
      await this.supervisor?.stop();
      if (this.process) await stopService(this.process);
      // Released only while it is still this launcher's (never throws: stop() runs on the way out).
      if (this.claimed && readClaim(this.claimPath)?.launcherPid === process.pid) rmSync(this.claimPath, { force: true });
    })();
    return this.stopped;
  }

  /**
   * Two redis-servers appending to one file would ruin it, so a directory serves one launcher
   * at a time. A redis-server left running by a launcher that was killed outright is shut down
   * (cleanly) first.
   */
  private async claimDataDirectory(): Promise<void> {
    const { dataDir } = this.options;
    for (let attempt = 0; ; attempt += 1) {
      try {
        writeFileSync(this.claimPath, JSON.stringify({ launcherPid: process.pid } satisfies DataDirectoryClaim), { flag: 'wx' });
        this.claimed = true;
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw claimError(dataDir, error);
      }
      const previous = readClaim(this.claimPath);
      if (previous && isAlive(previous.launcherPid)) throw claimError(dataDir, `the launcher with pid ${previous.launcherPid} uses it`);
      if (previous?.port !== undefined) await this.shutDownOrphan(previous.port);
      unlinkSync(this.claimPath);
    }
  }

  private async shutDownOrphan(port: number): Promise<void> {
    const directory = await redisReply('127.0.0.1', port, ['CONFIG', 'GET', 'dir']);
    // Only the redis-server of this directory: the port may belong to something else by now.
    if (!directory?.includes(`\r\n${realpathSync(this.options.dataDir)}\r\n`)) return;
    (this.options.sink ?? printPrefixed)(NAME, `shutting down the redis-server on port ${port} that a killed launcher left running on ${this.options.dataDir}`);
    await redisReply('127.0.0.1', port, ['SHUTDOWN']);
    for (let tries = 0; tries < 200 && (await redisAnswers('127.0.0.1', port)); tries += 1) await delay(50);
  }

  private async startServer(port: number): Promise<RedisProcess> {
    const { binary, dataDir, readyTimeoutMs = 60_000 } = this.options;
    const signal = this.lifetime.signal;
    if (signal.aborted) throw new StartFailedError(`${NAME} was not started: stopping`, 'not started');
    // appendfsync always: a write is on disk before Redis acknowledges it, so a task the api accepted
    // survives even a crash of Redis (everysec could lose the last second). Redis fsyncs once per
    // event-loop turn for every client's writes, so the cost is one fsync per turn, not per command.
    const args = [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dataDir,
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--save',
      '',
      '--loglevel',
      'warning',
    ];
    // Own process group, like the services: a terminal's Ctrl-C must not stop Redis before the workers hand their jobs back.
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const recent = followOutput(child, NAME, this.options.sink ?? printPrefixed);
    const exited = exitStatusOf(child);
    let exit: number | string | undefined;
    void exited.then((status) => (exit = status));
    const deadline = Date.now() + readyTimeoutMs;
    let killedBecause: string | undefined;
    while (!(await redisAnswers('127.0.0.1', port))) {
      if (exit === undefined && (signal.aborted || Date.now() > deadline)) {
        killedBecause = signal.aborted ? 'was stopped before it answered' : `did not answer within ${readyTimeoutMs} ms`;
        child.kill('SIGKILL');
        await exited;
      }
      if (exit !== undefined) {
        throw new StartFailedError(`redis-server on port ${port} ${killedBecause ?? `exited (${exit}) before it answered`}:\n${recent.join('\n')}`, exit);
      }
      await delay(50);
    }
    return { name: NAME, child, port, exited };
  }
}

function readClaim(file: string): DataDirectoryClaim | undefined {
  try {
    const claim = JSON.parse(readFileSync(file, 'utf8')) as Partial<DataDirectoryClaim>;
    return typeof claim.launcherPid === 'number' ? { launcherPid: claim.launcherPid, port: claim.port } : undefined;
  } catch {
    return undefined;
  }
}

function claimError(dataDir: string, cause: unknown): Error {
  const why = typeof cause === 'string' ? cause : cause instanceof Error ? cause.message : String(cause);
  return new Error(
    `cannot use ${dataDir} for the private Redis (${why}): stop that launcher, or set REDIS_DATA_DIR to another directory, or REDIS_URL to a Redis of your own`,
  );
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
