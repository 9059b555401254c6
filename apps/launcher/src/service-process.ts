import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { StartFailedError, type ExitStatus, type SupervisedProcess } from './supervisor';

// apps/launcher/src and apps/launcher/dist (the bundle) are both three levels below the root.
export const ROOT = path.resolve(__dirname, '../../..');
/** The TypeScript entries, run through tsx (development, tests). */
export const ENTRIES = {
  'model-sim': path.join(ROOT, 'apps/model-sim/src/main.ts'),
  api: path.join(ROOT, 'apps/api/src/main.ts'),
  worker: path.join(ROOT, 'apps/worker/src/main.ts'),
} as const;
/** The bundles `npm run build` writes (production). */
export const COMPILED_ENTRIES = {
  'model-sim': path.join(ROOT, 'apps/model-sim/dist/main.js'),
  api: path.join(ROOT, 'apps/api/dist/main.js'),
  worker: path.join(ROOT, 'apps/worker/dist/main.js'),
} as const;
export type ServiceKind = keyof typeof ENTRIES;

/**
 * NODE_OPTIONS of the production image (the Dockerfile sets the same; test/build.e2e.test.ts checks),
 * given to compiled services here too so they run as in the image. V8's young generation otherwise
 * grows to 2 × 16 MB semi-spaces under load and stays there: 4 MB ones keep about 20 MB of RSS off
 * every api and worker process for more, cheap, scavenges (docs/operate/build.md has the figures).
 */
export const PRODUCTION_NODE_OPTIONS = '--max-semi-space-size=4';

/** Whether this launcher is itself the bundle (`node apps/launcher/dist/main.js`). */
const LAUNCHER_IS_COMPILED = path.basename(__dirname) === 'dist';

function runsCompiled(env: NodeJS.ProcessEnv): boolean {
  return env.MAGEAGENT_COMPILED === undefined || env.MAGEAGENT_COMPILED === '' ? LAUNCHER_IS_COMPILED : env.MAGEAGENT_COMPILED === '1';
}

/** The environment of a service: compiled ones get the image's NODE_OPTIONS unless NODE_OPTIONS is set. */
export function serviceEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return runsCompiled(env) && env.NODE_OPTIONS === undefined ? { ...env, NODE_OPTIONS: PRODUCTION_NODE_OPTIONS } : env;
}

/**
 * The node arguments that run a service: its bundle when MAGEAGENT_COMPILED=1 (or, unset, when the
 * launcher itself runs compiled), else its TypeScript entry through tsx. A missing bundle is an
 * error rather than a silent fall-back to the sources, so a compiled run never measures tsx.
 */
export function serviceCommand(kind: ServiceKind, env: NodeJS.ProcessEnv): string[] {
  if (!runsCompiled(env)) return ['--import', 'tsx', ENTRIES[kind]];
  const bundle = COMPILED_ENTRIES[kind];
  if (!existsSync(bundle)) throw new Error(`${path.relative(ROOT, bundle)} does not exist: run \`npm run build\` first (or unset MAGEAGENT_COMPILED)`);
  return ['--enable-source-maps', bundle];
}

interface ReadyMessage {
  type: 'ready';
  service: string;
  port?: number;
}

export interface ServiceProcess extends SupervisedProcess {
  kind: ServiceKind;
  /** The port the service reported when ready (api, model-sim). */
  port?: number;
}

export type LineSink = (name: string, line: string) => void;

export const printPrefixed: LineSink = (name, line) => process.stdout.write(`[${name}] ${line}\n`);

/** Passes a child's stdout and stderr to `sink` line by line; returns its last lines, for a start-up failure's message. */
export function followOutput(child: ChildProcess, name: string, sink: LineSink, keep = 20): string[] {
  const recent: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    readline.createInterface({ input: stream }).on('line', (line) => {
      recent.push(line);
      if (recent.length > keep) recent.shift();
      sink(name, line);
    });
  }
  return recent;
}

/** Resolves with the exit code (or signal name) when the child ends. */
export function exitStatusOf(child: ChildProcess): Promise<ExitStatus> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
}

export interface StartServiceOptions {
  /** How long the service may take to report ready before it is killed and the start fails (default 30 s). */
  readyTimeoutMs?: number;
  /** Aborting it kills the service if it is not ready yet (the start then fails). */
  signal?: AbortSignal;
}

/**
 * Starts one service as a child process running its TypeScript entry through tsx (or its bundle:
 * see serviceCommand), with its output prefixed, and resolves once it reports `ready` over IPC. Rejects with a
 * StartFailedError when it ends (or is killed: timeout, abort) before that.
 */
export async function startService(
  kind: ServiceKind,
  name: string,
  env: NodeJS.ProcessEnv,
  sink: LineSink,
  { readyTimeoutMs = 30_000, signal }: StartServiceOptions = {},
): Promise<ServiceProcess> {
  if (signal?.aborted) throw new StartFailedError(`${name} was not started: its stack is stopping`, 'not started');
  // NODE_ARGS: extra node flags for every service (e.g. --max-old-space-size=512, --cpu-prof).
  const nodeArgs = (env.NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, ...serviceCommand(kind, env)], {
    env: serviceEnv(env),
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    // Own process group: a terminal's Ctrl-C reaches only the launcher, which stops the
    // services in order; a child whose launcher dies sees its IPC channel close and stops.
    detached: true,
  });
  const recent = followOutput(child, name, sink);
  const exited = exitStatusOf(child);
  const ready = await new Promise<ReadyMessage>((resolve, reject) => {
    let killedBecause: string | undefined;
    const kill = (because: string) => {
      killedBecause ??= because;
      child.kill('SIGKILL');
    };
    // A child that never becomes ready must not linger: it is killed, and the start fails once it is gone.
    const timer = setTimeout(() => kill(`did not become ready within ${readyTimeoutMs} ms`), readyTimeoutMs);
    const abort = () => kill('was stopped before it was ready');
    signal?.addEventListener('abort', abort, { once: true });
    const settle = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
    };
    child.on('message', (message: ReadyMessage) => {
      if (message?.type !== 'ready') return;
      settle();
      resolve(message);
    });
    void exited.then((exit) => {
      settle();
      reject(new StartFailedError(`${name} ${killedBecause ?? `exited (${exit}) before it was ready`}:\n${recent.join('\n')}`, exit));
    });
  });
  return { name, kind, child, port: ready.port, exited };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function stopService(service: SupervisedProcess, graceMs = 15_000): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  const timer = setTimeout(() => service.child.kill('SIGKILL'), graceMs);
  await service.exited;
  clearTimeout(timer);
}

/** Whether a process with this pid exists (a zombie counts until its parent reaps it). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
