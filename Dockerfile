# syntax=docker/dockerfile:1
# One image for api, worker and model-sim; the command picks the service:
#   api (default)  node --enable-source-maps apps/api/dist/main.js
#   worker         node --enable-source-maps apps/worker/dist/main.js
#   model-sim      node --enable-source-maps apps/model-sim/dist/main.js
# Stages: manifests (the package.json files) -> deps (every dependency, dev too) -> build (`npm run build`: esbuild bundles each app into
# apps/<app>/dist) -> prod-deps (production dependencies only) -> runtime (those node_modules, the
# bundles and config/; no TypeScript sources, no tests, no tsx, no esbuild).
# test/build.e2e.test.ts checks that the commands here are the ones it runs, and that the runtime
# stage copies no sources or tests.

# Manifests only, so the installs below are redone only when dependencies change. npm ci needs
# every workspace's package.json to link the @mageagent/* workspaces.
FROM node:22-bookworm-slim AS manifests
WORKDIR /app
COPY package.json package-lock.json ./
COPY apps/api/package.json apps/api/
COPY apps/launcher/package.json apps/launcher/
COPY apps/model-sim/package.json apps/model-sim/
COPY apps/worker/package.json apps/worker/
COPY packages/core/package.json packages/core/
COPY packages/models/package.json packages/models/
COPY packages/patterns/package.json packages/patterns/
COPY packages/tasks/package.json packages/tasks/
COPY packages/webhooks/package.json packages/webhooks/

FROM manifests AS deps
# --ignore-scripts: package.json's "allowScripts" denies every install script, but npm
# before v12 only reports on it; this flag enforces it with any npm. Nothing needs one:
# esbuild and msgpackr-extract ship prebuilt binaries as optional packages.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts --no-audit --no-fund

FROM deps AS build
# esbuild reads tsconfig.json (target ES2022: class fields are defined, as tsx and jest run them).
COPY tsconfig.json ./
COPY scripts ./scripts
COPY packages ./packages
COPY apps ./apps
RUN npm run build

# The same manifests, production dependencies only: what the runtime's node_modules holds.
FROM manifests AS prod-deps
# typescript (24 MB): valibot (under @bull-board/api) names it an optional peer, and since the root's
# devDependencies have it, the lockfile marks it devOptional, which --omit=dev still installs. Nothing
# requires it at run time (valibot only uses its types).
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund && rm -rf node_modules/typescript

FROM node:22-bookworm-slim AS runtime
ENV NODE_ENV=production
# V8's young generation grows to 2 x 16 MB under load and stays there; 4 MB semi-spaces keep about
# 20 MB of RSS off each api and worker (docs/operate/build.md). Set NODE_OPTIONS to override.
ENV NODE_OPTIONS=--max-semi-space-size=4
WORKDIR /app
# Production node_modules and the package.json files (node reads the nearest one to know a .js
# file is CommonJS); the bundles load their npm packages from /app/node_modules.
COPY --from=prod-deps /app ./
COPY --from=build /app/apps/api/dist ./apps/api/dist
COPY --from=build /app/apps/worker/dist ./apps/worker/dist
COPY --from=build /app/apps/model-sim/dist ./apps/model-sim/dist
COPY --from=build /app/apps/launcher/dist ./apps/launcher/dist
# The default model config (config/models.sim.yaml) and the examples; mount your own and point MODELS_CONFIG at it.
COPY config ./config
# Files stay root-owned: the service user can read the code but not rewrite it. Nothing is
# written at run time (no transpile cache any more).
USER node
# api, model-sim, and the optional metrics/health listener (METRICS_PORT on the api, HEALTH_PORT on the worker).
EXPOSE 3457 3458 9464
# Every service drains on SIGTERM (api: stop accepting, end streams; worker: finish or
# hand back jobs). node runs as PID 1 but installs its own handlers, so no init is needed.
STOPSIGNAL SIGTERM
# Readiness of the service in this container: the worker's health server when HEALTH_PORT is set
# (the worker sets it: 9464), else the api's port. node:22-bookworm-slim has no curl; node's fetch
# does. The model simulator answers neither: override or disable it there (docs/operate/build.md).
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.HEALTH_PORT || process.env.PORT || 3457) + '/readyz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "--enable-source-maps", "apps/api/dist/main.js"]
