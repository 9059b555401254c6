/**
 * `npm start` as a user runs it: the launcher process keeps its services running (a worker
 * killed outright is restarted and the launcher says so), SIGTERM stops every child and exits
 * 0, and a crash loop stops everything and exits 1.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';
import { createTask, eventually, requestJson, waitForTask } from './support/http';
import { childrenOf, descendantsOf, isAlive, type ProcessEntry } from './support/processes';
import { deleteTestKeys, REDIS_URL } from './support/stack';

const ROOT = path.resolve(__dirname, '..');

interface Launcher {
  pid: number;
  lines: string[];
  exited: Promise<number | null>;
  /** Waits for a line matching `pattern` and answers its match. */
  line(pattern: RegExp, what: string): Promise<RegExpExecArray>;
  /** Its running services (simulator, api, workers). */
  services(): ProcessEntry[];
  kill(signal: NodeJS.Signals): void;
}

const launchers: Array<{ launcher: Launcher; prefix: string }> = [];

/**
 * Runs the `npm start` entry with one worker on free ports, against the test Redis under a private
 * prefix: the launcher itself, or (`viaNpm`) `npm start` as a user or a supervisor runs it.
 */
function startLauncher(env: NodeJS.ProcessEnv = {}, viaNpm = false): Launcher {
  const prefix = `test-${randomUUID().slice(0, 8)}`;
  const [command, args] = viaNpm ? ['npm', ['start']] : [process.execPath, ['--import', 'tsx', 'apps/launcher/src/main.ts']];
  const child = spawn(command, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: '0',
      SIM_PORT: '0',
      REDIS_URL,
      REDIS_PREFIX: prefix,
      WORKERS: '1',
      LOG_LEVEL: 'warn',
      SIM_SPEEDUP: '1000',
      JOB_LOCK_MS: '2000',
      HOST_LEASE_TTL_MS: '2000',
      RESTART_BACKOFF_MS: '100',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    readline.createInterface({ input: stream }).on('line', (text) => {
      lines.push(text);
      if (process.env.TEST_LOGS === '1') process.stdout.write(`${text}\n`);
    });
  }
  const launcher: Launcher = {
    pid: child.pid!,
    lines,
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
    line: (pattern, what) =>
      eventually(
        async () => lines.map((text) => pattern.exec(text)).find((match) => match !== null) ?? undefined,
        60_000,
        `${what}; the launcher said:\n${lines.join('\n')}`,
      ),
    services: () => childrenOf(child.pid!).filter((entry) => /apps\/[a-z-]+\/src\/main\.ts/.test(entry.command)),
    kill: (signal) => child.kill(signal),
  };
  launchers.push({ launcher, prefix });
  return launcher;
}

afterEach(async () => {
  for (const { launcher, prefix } of launchers.splice(0)) {
    if (isAlive(launcher.pid)) {
      launcher.kill('SIGTERM');
      await launcher.exited;
    }
    await deleteTestKeys(prefix);
  }
}, 30_000);

async function killTheWorker(launcher: Launcher): Promise<{ api: string; worker: ProcessEntry }> {
  const [, api] = await launcher.line(/^\[mageagent\] ready: api on (http:\/\/127\.0\.0\.1:\d+)/, 'the launcher to be ready');
  const worker = launcher.services().find((entry) => entry.command.includes('apps/worker/src/main.ts'));
  if (worker === undefined) throw new Error(`no worker among the launcher's children: ${JSON.stringify(launcher.services())}`);
  process.kill(worker.pid, 'SIGKILL');
  return { api: api!, worker };
}

test('a worker killed outright is restarted, the launcher says so and stays up; SIGTERM stops everything with exit code 0', async () => {
  const launcher = startLauncher();
  const { api, worker } = await killTheWorker(launcher);

  await launcher.line(/^\[mageagent\] worker-1 exited \(signal SIGKILL\); restart 1 \(1 of 5 allowed in 60000 ms\) in \d+ ms$/, 'the restart to be announced');
  const [, pid] = await launcher.line(/^\[mageagent\] worker-1 restarted \(pid (\d+), restart 1\)$/, 'the worker to be back');
  expect(Number(pid)).not.toBe(worker.pid);
  expect(isAlive(launcher.pid)).toBe(true);
  expect((await requestJson(`${api}/healthz`)).status).toBe(200);
  // The launcher runs one worker: the restarted one runs this.
  const task = await waitForTask(api, await createTask(api, { prompt: 'after the restart', pattern: 'primary' }), 30_000);
  expect(task.status).toBe('completed');

  const running = launcher.services();
  expect(running.map((entry) => /apps\/([a-z-]+)\//.exec(entry.command)?.[1]).sort()).toEqual(['api', 'model-sim', 'worker']);
  launcher.kill('SIGTERM');
  expect(await launcher.exited).toBe(0);
  expect(launcher.lines).toContain('[mageagent] stopped');
  // The launcher waited for each of them before it exited.
  expect(running.filter((entry) => isAlive(entry.pid))).toEqual([]);
}, 90_000);

test('SIGTERM to the npm process of `npm start` (as a supervisor sends it) stops the launcher and every service', async () => {
  const launcher = startLauncher({}, true);
  const [, api] = await launcher.line(/^\[mageagent\] ready: api on (http:\/\/127\.0\.0\.1:\d+)/, 'the launcher to be ready');
  // npm runs the script through a shell, which must hand the signal on: the script execs node.
  const running = descendantsOf(launcher.pid);
  const survivors = () => running.filter((entry) => isAlive(entry.pid));
  try {
    const names = running.map((entry) => /apps\/([a-z-]+)\/src\/main\.ts/.exec(entry.command)?.[1]).filter((name) => name !== undefined);
    expect(names.sort()).toEqual(['api', 'launcher', 'model-sim', 'worker']);
    launcher.kill('SIGTERM');
    await launcher.exited;
    await eventually(async () => (survivors().length === 0 ? true : undefined), 20_000, 'the launcher and its services to exit');
    await expect(fetch(`${api}/healthz`)).rejects.toThrow();
  } finally {
    // Whatever failed, nothing is left running for the other suites (an orphan would hold jest's pipes).
    for (const entry of survivors()) process.kill(entry.pid, 'SIGKILL');
  }
}, 90_000);

test('a crash loop stops everything and exits 1 (RESTART_MAX=0: the first crash is one)', async () => {
  const launcher = startLauncher({ RESTART_MAX: '0' });
  await killTheWorker(launcher);
  const running = launcher.services();

  expect(await launcher.exited).toBe(1);
  expect(launcher.lines).toContain(
    '[mageagent] worker-1 exited (signal SIGKILL) after 0 restart(s) within 60000 ms (RESTART_MAX 0): a crash loop; stopping everything',
  );
  expect(launcher.lines).toContain('[mageagent] stopped');
  expect(running.filter((entry) => isAlive(entry.pid))).toEqual([]);
}, 90_000);
