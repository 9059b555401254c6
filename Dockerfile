# syntax=docker/dockerfile:1
# One image for api, worker and model-sim; the command picks the service:
#   api (default)  node --import tsx apps/api/src/main.ts
#   worker         node --import tsx apps/worker/src/main.ts
#   model-sim      node --import tsx apps/model-sim/src/main.ts
# There is no build step: tsx (a runtime dependency of @mageagent/launcher, so it
# survives --omit=dev) transpiles the TypeScript at start-up.

FROM node:22-bookworm-slim AS deps
WORKDIR /app
# Manifests only, so this layer is rebuilt only when dependencies change. npm ci needs
# every workspace's package.json to link the @mageagent/* workspaces.
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
# --ignore-scripts: package.json's "allowScripts" denies every install script, but npm
# before v12 only reports on it; this flag enforces it with any npm. Nothing needs one:
# esbuild and msgpackr-extract ship prebuilt binaries as optional packages.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
# The whole /app of the deps stage: root node_modules, the workspace symlinks into it and
# any nested workspace node_modules npm may create later.
COPY --from=deps /app ./
# tsx reads tsconfig.json (module and interop settings) when it transpiles.
COPY tsconfig.json ./
COPY packages ./packages
COPY apps ./apps
COPY config ./config
# Files stay root-owned: the service user can read the code but not rewrite it. The only
# write is tsx's transpile cache under /tmp.
USER node
EXPOSE 3457 3458
# Every service drains on SIGTERM (api: stop accepting, end streams; worker: finish or
# hand back jobs). node runs as PID 1 but installs its own handlers, so no init is needed.
STOPSIGNAL SIGTERM
CMD ["node", "--import", "tsx", "apps/api/src/main.ts"]
