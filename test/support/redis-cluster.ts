import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { findExecutable, redisAnswers } from '../../apps/launcher/src/redis-probe';

const run = promisify(execFile);

/** Whether nothing listens on the port (of 127.0.0.1). */
function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A port P such that P and P + 10000 (the cluster bus port Redis derives from it) are free.
 * Random in 20000–40000, so parallel suites rarely try the same one; the bus port stays < 65536.
 */
async function freeClusterPort(taken: Set<number>): Promise<number> {
  for (let tries = 0; tries < 200; tries++) {
    const port = 20_000 + Math.floor(Math.random() * 20_000);
    if (taken.has(port) || taken.has(port + 10_000)) continue;
    if ((await portIsFree(port)) && (await portIsFree(port + 10_000))) {
      taken.add(port);
      taken.add(port + 10_000);
      return port;
    }
  }
  throw new Error('no free port pair for a cluster node');
}

/** The binaries a local cluster needs, or the reason it cannot be started here. */
export function clusterBinaries(): { server: string; cli: string } | string {
  const server = findExecutable('redis-server');
  const cli = findExecutable('redis-cli');
  if (server === undefined) return 'redis-server is not on PATH (apt-get install redis-server)';
  if (cli === undefined) return 'redis-cli is not on PATH (apt-get install redis-tools)';
  return { server, cli };
}

/**
 * A real Redis Cluster of `masters` nodes (and `replicas` replicas of each) on free loopback
 * ports, in a temp directory: each node is `redis-server --cluster-enabled yes` without
 * persistence, joined with `redis-cli --cluster create`. `close()` kills the nodes and removes
 * the directory.
 */
export class RedisCluster {
  private constructor(
    readonly ports: number[],
    readonly dir: string,
    private readonly children: ChildProcess[],
    private readonly cliPath: string,
  ) {}

  static async start(masters = 3, replicas = 0): Promise<RedisCluster> {
    const binaries = clusterBinaries();
    if (typeof binaries === 'string') throw new Error(binaries);
    const dir = mkdtempSync(path.join(tmpdir(), 'mageagent-cluster-'));
    const taken = new Set<number>();
    const ports: number[] = [];
    for (let index = 0; index < masters * (1 + replicas); index++) ports.push(await freeClusterPort(taken));
    const children: ChildProcess[] = [];
    const cluster = new RedisCluster(ports, dir, children, binaries.cli);
    try {
      for (const port of ports) {
        const nodeDir = path.join(dir, String(port));
        mkdirSync(nodeDir);
        // The same flags as the brief's proof: cluster on, nothing persisted, loopback only.
        const args = [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          path.join(nodeDir, 'nodes.conf'),
          '--cluster-node-timeout',
          '5000',
          '--dir',
          nodeDir,
          '--save',
          '',
          '--appendonly',
          'no',
        ];
        children.push(spawn(binaries.server, args, { stdio: 'ignore' }));
      }
      for (const port of ports) await cluster.waitAnswers(port);
      await run(binaries.cli, ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], {
        timeout: 30_000,
      });
      await cluster.waitClusterOk();
      return cluster;
    } catch (error) {
      await cluster.close();
      throw error;
    }
  }

  /** `REDIS_CLUSTER_NODES` for the services: every node (one would do; ioredis discovers the rest). */
  get nodesEnv(): string {
    return this.ports.map((port) => `127.0.0.1:${port}`).join(',');
  }

  /** redis-cli against one node (plain mode, no redirects): the reply as text. */
  async cli(port: number, ...args: string[]): Promise<string> {
    const { stdout } = await run(this.cliPath, ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 });
    return stdout.trim();
  }

  private async waitAnswers(port: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!(await redisAnswers('127.0.0.1', port, 200))) {
      if (Date.now() > deadline) throw new Error(`cluster node ${port} did not answer within 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  /** Until every node says `cluster_state:ok` (all 16384 slots served, the nodes agree). */
  private async waitClusterOk(): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const states = await Promise.all(this.ports.map((port) => this.cli(port, 'CLUSTER', 'INFO')));
      if (states.every((info) => /cluster_state:ok/.test(info))) return;
      if (Date.now() > deadline) throw new Error(`cluster not ok within 30 s: ${states.map((info) => /cluster_state:\w+/.exec(info)?.[0]).join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Kills one node outright (SIGKILL), as a crashed machine. */
  async kill(port: number): Promise<void> {
    const child = this.children[this.ports.indexOf(port)];
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await exited;
  }

  /** The port of the master serving `slot`, as the node at `askPort` sees it. */
  async masterOf(slot: number, askPort: number): Promise<number> {
    const node = new Redis({ host: '127.0.0.1', port: askPort, lazyConnect: true });
    try {
      await node.connect();
      const ranges = (await node.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, ...unknown[]]]>;
      const range = ranges.find(([from, to]) => slot >= from && slot <= to);
      if (range === undefined) throw new Error(`no node serves slot ${slot}`);
      return Number(range[2][1]);
    } finally {
      node.disconnect();
    }
  }

  /** The port of `masterPort`'s first replica once it is online (synced), as the master reports it. */
  async onlineReplicaOf(masterPort: number): Promise<number | undefined> {
    const line = /^slave0:(.*)$/m.exec(await this.cli(masterPort, 'INFO', 'replication'))?.[1];
    if (line === undefined || !/state=online/.test(line)) return undefined;
    return Number(/port=(\d+)/.exec(line)?.[1]);
  }

  /** A read on a replica (READONLY first, or a cluster replica answers MOVED): the raw reply. */
  async readOnReplica(port: number, command: string, ...args: string[]): Promise<unknown> {
    const node = new Redis({ host: '127.0.0.1', port, lazyConnect: true });
    try {
      await node.connect();
      await node.call('READONLY');
      return await node.call(command, ...args);
    } finally {
      node.disconnect();
    }
  }

  async close(): Promise<void> {
    await Promise.all(
      this.children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGKILL');
          }),
      ),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}
