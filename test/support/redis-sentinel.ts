import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { findExecutable, freePort, redisAnswers } from '../../apps/launcher/src/redis-probe';

const run = promisify(execFile);

/** The binaries a local Sentinel setup needs (redis-server runs a Sentinel with `--sentinel`), or why it cannot run here. */
export function sentinelBinaries(): { server: string; cli: string } | string {
  const server = findExecutable('redis-server');
  const cli = findExecutable('redis-cli');
  if (server === undefined) return 'redis-server is not on PATH (apt-get install redis-server)';
  if (cli === undefined) return 'redis-cli is not on PATH (apt-get install redis-tools)';
  return { server, cli };
}

/**
 * A master, one replica and one Sentinel (quorum 1) on free loopback ports, in a temp directory,
 * nothing persisted. The Sentinel declares the master down after 1 s without answers and fails
 * over to the replica. `close()` kills them all and removes the directory.
 */
export class RedisSentinelSetup {
  readonly name = 'mymaster';
  private readonly children = new Map<number, ChildProcess>();

  private constructor(
    readonly masterPort: number,
    readonly replicaPort: number,
    readonly sentinelPort: number,
    readonly dir: string,
    private readonly binaries: { server: string; cli: string },
  ) {}

  static async start(): Promise<RedisSentinelSetup> {
    const binaries = sentinelBinaries();
    if (typeof binaries === 'string') throw new Error(binaries);
    const dir = mkdtempSync(path.join(tmpdir(), 'mageagent-sentinel-'));
    const setup = new RedisSentinelSetup(await freePort(), await freePort(), await freePort(), dir, binaries);
    try {
      const data = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
      setup.spawn(setup.masterPort, ['--port', String(setup.masterPort), ...data, '--dbfilename', 'master.rdb']);
      setup.spawn(setup.replicaPort, [
        '--port',
        String(setup.replicaPort),
        ...data,
        '--dbfilename',
        'replica.rdb',
        '--replicaof',
        '127.0.0.1',
        String(setup.masterPort),
      ]);
      await setup.waitAnswers(setup.masterPort);
      await setup.waitAnswers(setup.replicaPort);
      await setup.waitFor(async () => /master_link_status:up/.test(await setup.cli(setup.replicaPort, 'INFO', 'replication')), 'the replica to sync');
      // Sentinel rewrites its config file, so it gets one of its own in the temp directory.
      const config = path.join(dir, 'sentinel.conf');
      writeFileSync(
        config,
        [
          `port ${setup.sentinelPort}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor ${setup.name} 127.0.0.1 ${setup.masterPort} 1`,
          `sentinel down-after-milliseconds ${setup.name} 1000`,
          `sentinel failover-timeout ${setup.name} 5000`,
          `sentinel parallel-syncs ${setup.name} 1`,
          '',
        ].join('\n'),
      );
      setup.spawn(setup.sentinelPort, [config, '--sentinel']);
      await setup.waitAnswers(setup.sentinelPort);
      // Until the Sentinel has found the replica, a failover would have nowhere to go.
      await setup.waitFor(
        async () => /num-slaves\n1\b/.test(await setup.cli(setup.sentinelPort, 'SENTINEL', 'MASTER', setup.name)),
        'the sentinel to discover the replica',
      );
      return setup;
    } catch (error) {
      await setup.close();
      throw error;
    }
  }

  /** `REDIS_SENTINELS` for the services. */
  get sentinelsEnv(): string {
    return `127.0.0.1:${this.sentinelPort}`;
  }

  /** The port the Sentinel currently names as the master. */
  async currentMasterPort(): Promise<number> {
    const answer = await this.cli(this.sentinelPort, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.name);
    return Number(answer.split('\n')[1]);
  }

  /**
   * Until `port` is a replica in sync with the master (`role:slave`, link up) and the Sentinel
   * counts it as a healthy replica (flags just `slave`), so a failover may go to it.
   */
  async waitReplicating(port: number): Promise<void> {
    await this.waitFor(
      async () => {
        const info = await this.cli(port, 'INFO', 'replication');
        if (!/role:slave/.test(info) || !/master_link_status:up/.test(info)) return false;
        const replicas = await this.cli(this.sentinelPort, 'SENTINEL', 'REPLICAS', this.name);
        const lines = replicas.split('\n');
        // redis-cli prints the replicas' fields as name/value lines: find this one's flags.
        const at = lines.findIndex((line, index) => line === 'port' && lines[index + 1] === String(port));
        const flags = at < 0 ? undefined : lines.slice(at).indexOf('flags');
        return flags !== undefined && flags >= 0 && lines[at + flags + 1] === 'slave';
      },
      `${port} to replicate, as the Sentinel sees it`,
      30_000,
    );
  }

  /** Kills a node outright (SIGKILL), as a crashed machine. */
  async kill(port: number): Promise<void> {
    const child = this.children.get(port);
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await exited;
  }

  async cli(port: number, ...args: string[]): Promise<string> {
    const { stdout } = await run(this.binaries.cli, ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 });
    return stdout.trim();
  }

  async close(): Promise<void> {
    for (const port of this.children.keys()) await this.kill(port);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private spawn(port: number, args: string[]): void {
    this.children.set(port, spawn(this.binaries.server, args, { stdio: 'ignore' }));
  }

  private async waitAnswers(port: number): Promise<void> {
    await this.waitFor(() => redisAnswers('127.0.0.1', port, 200), `redis on ${port} to answer`);
  }

  private async waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
