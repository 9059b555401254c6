/**
 * The production build as the image runs it: `npm run build` (the command the Dockerfile's build
 * stage runs, read from the Dockerfile), then the simulator, a worker and the api started from
 * their bundles with the image's own command line, and a task run end to end through them. The
 * Dockerfile's runtime stage is checked to hold no sources or tests, and the bundles to load only
 * production dependencies (what `npm ci --omit=dev` leaves in the image).
 */
import { execFileSync, execSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { PRODUCTION_NODE_OPTIONS, serviceCommand, serviceEnv } from '../apps/launcher/src/service-process';
import { createTask, eventually, readSse, requestJson, waitForTask } from './support/http';
import { childrenOf } from './support/processes';
import { deleteTestKeys, REDIS_URL } from './support/stack';

const ROOT = path.resolve(__dirname, '..');

interface Stage {
  name: string;
  from: string;
  /** Instructions after FROM, continuation lines joined, comments dropped. */
  instructions: Array<{ keyword: string; args: string }>;
}

/** The Dockerfile's stages; `\`-continued lines are joined and comments dropped. */
function parseDockerfile(text: string): { stages: Stage[]; comments: string[] } {
  const comments: string[] = [];
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#')) {
      comments.push(line.slice(1).trim());
      continue;
    }
    if (line === '' && pending === '') continue;
    pending += (pending ? ' ' : '') + line.replace(/\\$/, '').trim();
    if (!line.endsWith('\\')) {
      if (pending) logical.push(pending);
      pending = '';
    }
  }
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    if (keyword.toUpperCase() === 'FROM') {
      const [, image = '', name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args) ?? [];
      stages.push({ name: name ?? String(stages.length), from: image, instructions: [] });
    } else {
      stages.at(-1)?.instructions.push({ keyword: keyword.toUpperCase(), args });
    }
  }
  return { stages, comments };
}

/** A RUN's command, without BuildKit flags such as `--mount=…`. */
const runCommand = (args: string) => args.replace(/^(--\S+\s+)+/, '').trim();

const dockerfile = parseDockerfile(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
const stage = (name: string) => {
  const found = dockerfile.stages.find((candidate) => candidate.name === name);
  if (!found) throw new Error(`the Dockerfile has no stage "${name}"`);
  return found;
};
const runtime = dockerfile.stages.at(-1)!;
/** CMD of the image: the api. */
const apiCommand = JSON.parse(runtime.instructions.find((instruction) => instruction.keyword === 'CMD')!.args) as string[];
/** The documented commands of the other services, from the Dockerfile's header comment. */
const documentedCommand = (service: string) => {
  const line = dockerfile.comments.find((comment) => new RegExp(`^${service}(\\s|\\s\\(default\\)\\s)\\s*node `).test(comment));
  if (!line) throw new Error(`the Dockerfile does not document the ${service} command`);
  return line
    .replace(/^\S+\s+(\(default\)\s+)?/, '')
    .trim()
    .split(/\s+/);
};

interface Running {
  name: string;
  child: ChildProcess;
  output: string[];
  exited: Promise<unknown>;
  port?: number;
}
const running: Running[] = [];
const prefix = `test-${randomUUID().slice(0, 8)}`;

/** Starts `argv` (a command from the Dockerfile, `node` first) in the repository, as the image would in /app; resolves when it reports ready. */
async function start(name: string, argv: string[], env: NodeJS.ProcessEnv): Promise<Running> {
  expect(argv[0]).toBe('node');
  const child = spawn(process.execPath, argv.slice(1), { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  const output: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) readline.createInterface({ input: stream }).on('line', (line) => output.push(`[${name}] ${line}`));
  const service: Running = { name, child, output, exited: new Promise((resolve) => child.once('exit', resolve)) };
  running.push(service);
  const ready = await new Promise<{ port?: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready in 15 s:\n${output.join('\n')}`)), 15_000);
    child.on('message', (message: { type?: string; port?: number }) => {
      if (message?.type !== 'ready') return;
      clearTimeout(timer);
      resolve(message);
    });
    void service.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${String(code)}) before it was ready:\n${output.join('\n')}`));
    });
  });
  service.port = ready.port;
  return service;
}

const buildCommands = stage('build')
  .instructions.filter((instruction) => instruction.keyword === 'RUN')
  .map((instruction) => runCommand(instruction.args));

beforeAll(() => {
  // Exactly what the build stage runs, in the order it runs it.
  for (const command of buildCommands) execSync(command, { cwd: ROOT, stdio: 'pipe', timeout: 120_000 });
}, 150_000);

afterAll(async () => {
  for (const service of running.reverse()) {
    service.child.kill('SIGTERM');
    await service.exited;
  }
  await deleteTestKeys(prefix);
}, 30_000);

describe('the Dockerfile', () => {
  test('builds with `npm run build` and runs the bundles with source maps', () => {
    expect(buildCommands).toEqual(['npm run build']);
    expect(apiCommand).toEqual(['node', '--enable-source-maps', 'apps/api/dist/main.js']);
    expect(documentedCommand('api')).toEqual(apiCommand);
    expect(documentedCommand('worker')).toEqual(['node', '--enable-source-maps', 'apps/worker/dist/main.js']);
    expect(documentedCommand('model-sim')).toEqual(['node', '--enable-source-maps', 'apps/model-sim/dist/main.js']);
    // The launcher's compiled mode runs the very same files with the same flags.
    for (const kind of ['api', 'worker', 'model-sim'] as const) {
      expect(serviceCommand(kind, { MAGEAGENT_COMPILED: '1' })).toEqual([documentedCommand(kind)[1], path.join(ROOT, documentedCommand(kind)[2]!)]);
    }
  });

  test('the runtime stage holds production node_modules, bundles and config only: no sources, no tests, not root', () => {
    expect(runtime.from).toBe('node:22-bookworm-slim');
    const copies = runtime.instructions.filter((instruction) => instruction.keyword === 'COPY' || instruction.keyword === 'ADD');
    expect(copies.length).toBeGreaterThan(0);
    for (const { keyword, args } of copies) {
      expect(keyword).toBe('COPY');
      const from = /--from=(\S+)/.exec(args)?.[1];
      const paths = args.replace(/--\S+/g, '').trim().split(/\s+/);
      const sources = paths.slice(0, -1);
      if (from === 'prod-deps') {
        expect(sources).toEqual(['/app']);
      } else if (from === 'build') {
        for (const source of sources) expect(source).toMatch(/^\/app\/apps\/[a-z-]+\/dist$/);
      } else {
        expect(from).toBeUndefined();
        expect(sources).toEqual(['config']);
      }
      for (const source of sources) expect(source).not.toMatch(/(^|\/)(src|test|tests|bench)(\/|$)|\.ts$/);
    }
    // What prod-deps copies into /app: manifests only, and it installs without dev dependencies.
    const prodDeps = stage('prod-deps');
    for (const { args } of prodDeps.instructions.filter((instruction) => instruction.keyword === 'COPY')) {
      for (const source of args.trim().split(/\s+/).slice(0, -1)) expect(source).toMatch(/(^|\/)(package\.json|package-lock\.json)$/);
    }
    expect(prodDeps.instructions.filter((instruction) => instruction.keyword === 'RUN').map((instruction) => runCommand(instruction.args))).toEqual([
      'npm ci --omit=dev --ignore-scripts --no-audit --no-fund && rm -rf node_modules/typescript',
    ]);
    const setting = (keyword: string) => runtime.instructions.filter((instruction) => instruction.keyword === keyword).map((instruction) => instruction.args);
    expect(setting('USER')).toEqual(['node']);
    expect(setting('ENV')).toContain('NODE_ENV=production');
    // The launcher's compiled services (and the benchmark) run with the image's NODE_OPTIONS.
    expect(setting('ENV')).toContain(`NODE_OPTIONS=${PRODUCTION_NODE_OPTIONS}`);
    expect(serviceEnv({ MAGEAGENT_COMPILED: '1' }).NODE_OPTIONS).toBe(PRODUCTION_NODE_OPTIONS);
    expect(serviceEnv({ MAGEAGENT_COMPILED: '0' }).NODE_OPTIONS).toBeUndefined();
    expect(setting('HEALTHCHECK').join(' ')).toMatch(/\/readyz/);
  });

  test('the bundles load no workspace code, no tsx and nothing `npm ci --omit=dev` leaves out', () => {
    // package-lock.json marks what only dev dependencies need with "dev" (or "devOptional"): npm ci --omit=dev skips exactly those.
    const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; devOptional?: boolean }>;
    };
    const { builtinModules } = require('node:module') as typeof import('node:module');
    for (const bundle of [
      'apps/api/dist/main.js',
      'apps/worker/dist/main.js',
      'apps/model-sim/dist/main.js',
      'apps/launcher/dist/main.js',
      'apps/api/dist/keys-cli.js',
    ]) {
      const text = readFileSync(path.join(ROOT, bundle), 'utf8');
      const required = [...text.matchAll(/\brequire\("([^"]+)"\)/g)].map((match) => match[1]!).filter((name) => !name.startsWith('node:'));
      expect(required.length).toBeGreaterThan(0);
      for (const name of required) {
        const packageName = name
          .split('/')
          .slice(0, name.startsWith('@') ? 2 : 1)
          .join('/');
        if (builtinModules.includes(packageName)) continue;
        expect(`${bundle}: ${packageName}`).not.toMatch(/@mageagent\/|: tsx$|: esbuild$|: typescript$/);
        // Where node looks from apps/<app>/dist: the app's own node_modules first, then the root's.
        const app = bundle.split('/')[1];
        const entry = lock.packages[`apps/${app}/node_modules/${packageName}`] ?? lock.packages[`node_modules/${packageName}`];
        const installed = entry === undefined ? 'not installed' : entry.dev || entry.devOptional ? 'a dev-only package' : 'installed in production';
        expect(`${bundle}: ${packageName} ${installed}`).toMatch(/installed in production$/);
      }
    }
  });
});

describe('the compiled services', () => {
  test('with --enable-source-maps a bundle maps its own code, and node reads no source map of node_modules', () => {
    // scripts/build.mjs's banner: the dependencies' maps (luxon, msgpackr, the OpenTelemetry API…) cost MBs of RSS.
    const probe = [
      "const { findSourceMap } = require('node:module');",
      "const { readFileSync } = require('node:fs');",
      'const bundle = process.env.PROBE_BUNDLE;',
      'require(bundle);',
      "const withMaps = Object.keys(require.cache).filter((file) => file.includes('/node_modules/') && /\\/\\/# sourceMappingURL=/.test(readFileSync(file, 'utf8')));",
      'console.log(JSON.stringify({ own: findSourceMap(bundle) !== undefined, enabled: process.sourceMapsEnabled, dependenciesWithMaps: withMaps.length, read: withMaps.filter((file) => findSourceMap(file) !== undefined) }));',
      'process.exit(0);',
    ].join('\n');
    for (const bundle of ['apps/worker/dist/main.js', 'apps/api/dist/main.js']) {
      const output = execFileSync(process.execPath, ['--enable-source-maps', '-e', probe], {
        cwd: ROOT,
        env: { ...process.env, PROBE_BUNDLE: path.join(ROOT, bundle), REDIS_URL, LOG_LEVEL: 'error' },
        encoding: 'utf8',
      });
      const result = JSON.parse(output.trim().split('\n').at(-1)!) as { own: boolean; enabled: boolean; dependenciesWithMaps: number; read: string[] };
      expect({ bundle, ...result, dependenciesWithMaps: result.dependenciesWithMaps > 0 }).toEqual({
        bundle,
        own: true,
        enabled: true,
        dependenciesWithMaps: true,
        read: [],
      });
    }
  });

  test('simulator, worker and api from their bundles run a task end to end', async () => {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      NODE_ENV: 'production',
      REDIS_URL,
      REDIS_PREFIX: prefix,
      LOG_LEVEL: 'warn',
      SIM_SPEEDUP: '1000',
      SIM_PORT: '0',
      PORT: '0',
      NODE_OPTIONS: PRODUCTION_NODE_OPTIONS,
    };
    const sim = await start('model-sim', documentedCommand('model-sim'), env);
    const withSim = { ...env, SIM_PORT: String(sim.port) };
    const [api] = await Promise.all([start('api', apiCommand, withSim), start('worker', documentedCommand('worker'), withSim)]);
    const base = `http://127.0.0.1:${api!.port}`;
    const diagnostics = () => running.flatMap((service) => service.output).join('\n');

    expect((await requestJson(`${base}/readyz`)).status).toBe(200);
    const id = await createTask(base, { prompt: 'Explain BullMQ in two sentences', pattern: 'primary' });
    const stream = await readSse(`${base}/tasks/${id}/stream`);
    expect(stream.closedByServer).toBe(true);
    const statuses = stream.events.flatMap((event) => (event.type === 'status' ? [event.status] : []));
    expect({ statuses, output: statuses.includes('completed') ? '' : diagnostics() }).toMatchObject({
      statuses: expect.arrayContaining(['processing', 'completed']),
    });
    const task = await requestJson<{ status: string; result: { content: string; pattern?: string } }>(`${base}/tasks/${id}`);
    expect(task.body.status).toBe('completed');
    expect(task.body.result.content.length).toBeGreaterThan(0);
    // Nothing went wrong on the way (an unbundled module, a missing file next to a bundle).
    expect(running.flatMap((service) => service.output).filter((line) => /"level":"error"|Error:/.test(line))).toEqual([]);
  }, 45_000);
});

describe('the compiled launcher', () => {
  test("`node apps/launcher/dist/main.js` runs the services from their bundles, with the image's NODE_OPTIONS, and stops them on SIGTERM", async () => {
    const launcherPrefix = `test-${randomUUID().slice(0, 8)}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      REDIS_URL,
      REDIS_PREFIX: launcherPrefix,
      PORT: '0',
      SIM_PORT: '0',
      WORKERS: '1',
      LOG_LEVEL: 'warn',
      SIM_SPEEDUP: '1000',
      RESTART_MAX: '0',
    };
    delete env.MAGEAGENT_COMPILED;
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, ['apps/launcher/dist/main.js'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    for (const stream of [child.stdout!, child.stderr!]) readline.createInterface({ input: stream }).on('line', (line) => lines.push(line));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const api = await eventually(
        async () => /ready: api on (http:\/\/127\.0\.0\.1:\d+)/.exec(lines.join('\n'))?.[1],
        20_000,
        `the launcher to be ready:\n${lines.join('\n')}`,
      );
      const services = childrenOf(child.pid!).map((entry) => entry.command);
      expect(services).toHaveLength(3);
      for (const kind of ['model-sim', 'api', 'worker']) {
        expect(services).toContainEqual(expect.stringContaining(`--enable-source-maps ${path.join(ROOT, `apps/${kind}/dist/main.js`)}`));
      }
      expect(services.join('\n')).not.toMatch(/tsx|\.ts\b/);
      for (const entry of childrenOf(child.pid!)) {
        expect(readFileSync(`/proc/${entry.pid}/environ`, 'utf8').split('\0')).toContain(`NODE_OPTIONS=${PRODUCTION_NODE_OPTIONS}`);
      }
      const id = await createTask(api, { prompt: 'Say hi', pattern: 'primary' });
      expect((await waitForTask(api, id)).status).toBe('completed');
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      await deleteTestKeys(launcherPrefix);
    }
  }, 45_000);
});
