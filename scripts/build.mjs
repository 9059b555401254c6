/**
 * `npm run build`: bundles each app's entry with esbuild into apps/<app>/dist/*.js.
 *
 * - CommonJS, platform node, target node20: the sources use `__dirname` (the models config
 *   default, the launcher finding the other apps), which ESM output would not have.
 * - npm packages stay external (loaded from node_modules at run time, so native/optional
 *   binaries such as msgpackr-extract keep working and the image's node_modules is the only copy).
 * - @mageagent/* workspace code is bundled, so production needs no TypeScript and no tsx.
 * - Exception: `uuid` is bundled too. It ships ESM only; a CommonJS bundle could only load it
 *   through require(esm), which node 20.19+ does but with an ExperimentalWarning on some 22.x.
 *   Bundling its few KB avoids depending on that.
 * - Sourcemaps beside each bundle: run with `node --enable-source-maps` for TypeScript stack traces.
 *
 * Prints each bundle's size and the build time. `--quiet` prints nothing on success.
 */
import { existsSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** entry (relative to the root) -> output file (relative to the root). */
export const ENTRIES = {
  'apps/api/src/main.ts': 'apps/api/dist/main.js',
  'apps/api/src/keys-cli.ts': 'apps/api/dist/keys-cli.js',
  'apps/worker/src/main.ts': 'apps/worker/dist/main.js',
  'apps/model-sim/src/main.ts': 'apps/model-sim/dist/main.js',
  'apps/launcher/src/main.ts': 'apps/launcher/dist/main.js',
};

/** Bare specifiers bundled rather than left to node_modules (see above). */
const BUNDLED = /^(@mageagent\/|uuid($|\/))/;

/** `lodash/fp` -> `lodash`, `@scope/name/x` -> `@scope/name`. */
const packageName = (specifier) =>
  specifier
    .split('/')
    .slice(0, specifier.startsWith('@') ? 2 : 1)
    .join('/');

/**
 * The node_modules directory node would load `name` from when required in `dir` (the nearest one
 * holding it), or undefined.
 */
function installedFrom(name, dir) {
  for (let current = dir; ; current = path.dirname(current)) {
    if (existsSync(path.join(current, 'node_modules', name))) return path.join(current, 'node_modules');
    if (path.dirname(current) === current) return undefined;
  }
}

/**
 * Leaves npm packages external, except the workspace packages, `uuid`, and a package that the
 * importing workspace gets from a nested node_modules of its own. The last matters: npm installs a
 * second version of a package under that workspace (packages/webhooks/node_modules/ipaddr.js 2.x
 * while express needs 1.x at the root), and the bundle, which lives in apps/<app>/dist, would load
 * the root's version instead. Bundling it keeps the version the workspace declared.
 */
const externalPackages = {
  name: 'external-packages',
  setup(builder) {
    const rootModules = path.join(ROOT, 'node_modules');
    // Bare specifiers only: not relative, not absolute, and not a package's own `#subpath` imports (a bundled
    // package's `#platform`, resolved by esbuild through that package's "imports"). `node:` builtins are
    // external on platform node anyway.
    builder.onResolve({ filter: /^[^./#]/ }, (args) => {
      if (BUNDLED.test(args.path) || args.path.startsWith('node:')) return undefined;
      const from = installedFrom(packageName(args.path), args.resolveDir);
      if (from !== undefined && from !== rootModules && !args.resolveDir.startsWith(rootModules)) {
        nestedBundled.add(`${packageName(args.path)} (from ${path.relative(ROOT, from)})`);
        return undefined;
      }
      return { path: args.path, external: true };
    });
  },
};
const nestedBundled = new Set();

/**
 * `--enable-source-maps` makes node read and keep the source map of every file it loads while
 * enabled, the dependencies' own maps included (luxon 0.5 MB, msgpackr, the OpenTelemetry API's
 * 51 files, jsonrepair…): about 2–3 MB of RSS in each service for stack frames inside node_modules.
 * Each bundle therefore keeps source maps for itself only. Node ≥ 22.14 / 23.7 says so directly
 * (`module.setSourceMapsSupport(true, { nodeModules: false })`, also for packages loaded later);
 * older node (20) has only the on/off switch, so the bundle turns it off while its top level
 * requires the external packages and back on after (its own map was read when node compiled it).
 * The banner starts with "use strict": it comes before esbuild's own directive, which is then
 * no longer the first statement.
 * Stack traces still show TypeScript file:line for bundled code; frames in node_modules show the
 * package's .js file, as without the flag. Nothing changes when node runs without the flag.
 */
// Fail-safe: whatever goes wrong here (an API that changed in a node version this was not run on)
// leaves source maps as node set them; it must never stop a service from starting.
const SOURCE_MAPS_BANNER =
  '"use strict"; var __sourceMapsOff = (() => { try { const m = require("node:module"); if (typeof m.setSourceMapsSupport === "function") { const s = m.getSourceMapsSupport(); if (s.enabled) m.setSourceMapsSupport(true, { nodeModules: false, generatedCode: s.generatedCode }); return false; } if (!process.sourceMapsEnabled) return false; process.setSourceMapsEnabled(false); return true; } catch { return false; } })();';
const SOURCE_MAPS_FOOTER = 'if (__sourceMapsOff) process.setSourceMapsEnabled(true);';

const quiet = process.argv.includes('--quiet');
const started = performance.now();
for (const dir of new Set(Object.values(ENTRIES).map((out) => path.dirname(out)))) rmSync(path.join(ROOT, dir), { recursive: true, force: true });

const results = await Promise.all(
  Object.entries(ENTRIES).map(([entry, out]) =>
    build({
      absWorkingDir: ROOT,
      entryPoints: [entry],
      outfile: out,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      sourcemap: true,
      banner: { js: SOURCE_MAPS_BANNER },
      footer: { js: SOURCE_MAPS_FOOTER },
      // Sources in the map are relative to the bundle; the sources' text is left out (the image has none, the map stays small).
      sourcesContent: false,
      // Keeps class and function names in stack traces and in errors' `name`.
      keepNames: true,
      plugins: [externalPackages],
      logLevel: 'warning',
      metafile: true,
    }),
  ),
);

const elapsedMs = performance.now() - started;
if (!quiet) {
  for (const [index, out] of Object.values(ENTRIES).entries()) {
    const bytes = statSync(path.join(ROOT, out)).size;
    const external = new Set(
      Object.values(results[index].metafile.outputs)
        .flatMap((output) => output.imports)
        .filter((entry) => entry.external && !entry.path.startsWith('node:'))
        .map((entry) => packageName(entry.path)),
    );
    process.stdout.write(`${out.padEnd(30)} ${(bytes / 1024).toFixed(0).padStart(5)} KB  external: ${[...external].sort().join(', ')}\n`);
  }
  if (nestedBundled.size > 0) process.stdout.write(`bundled from a workspace's own node_modules: ${[...nestedBundled].join(', ')}\n`);
  process.stdout.write(`built ${Object.keys(ENTRIES).length} bundles in ${Math.round(elapsedMs)} ms\n`);
}
