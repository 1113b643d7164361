# syntax=docker/dockerfile:1
#
# One recipe for every Handoff service. The build arg SERVICE names a directory under services/
# (gateway, classifier, tool-executor, heavy-reasoner) and becomes the program the image runs:
#
#   docker build --build-arg SERVICE=gateway -t ghcr.io/handoff-dev/handoff-gateway:0.1.0 .
#
# The whole monorepo is compiled once in the `build` stage. Because SERVICE is declared only after
# that step, the four images share every layer up to the last two.

ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS base
WORKDIR /app
ENV NPM_CONFIG_AUDIT=false \
    NPM_CONFIG_FUND=false \
    NPM_CONFIG_UPDATE_NOTIFIER=false \
    TURBO_TELEMETRY_DISABLED=1

# ---------------------------------------------------------------------------------------------------
# manifests: the root package.json, the lockfile and each workspace's package.json, nothing else.
# This stage reruns on any source change, but its output only changes when a manifest does, so the
# `npm ci` layers below stay cached while only TypeScript changes.
FROM base AS manifests
COPY . /src
RUN set -eu; \
    mkdir -p /manifests; \
    cp /src/package.json /src/package-lock.json /manifests/; \
    cd /src; \
    for pkg in libs/* services/* cli examples/*; do \
      if [ -f "$pkg/package.json" ]; then \
        mkdir -p "/manifests/$pkg"; \
        cp "$pkg/package.json" "/manifests/$pkg/package.json"; \
      fi; \
    done

# ---------------------------------------------------------------------------------------------------
# build: every dev dependency, then `npm run build` (turbo) for all workspaces.
FROM base AS build
COPY --from=manifests /manifests/ ./
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts
COPY . .
RUN npm run build
ARG SERVICE
# Each lib's dist/, and the data a lib reads at run time (libs/routing/models, the router model).
RUN set -eu; \
    if [ -z "${SERVICE:-}" ]; then \
      echo "build arg SERVICE is required, e.g. --build-arg SERVICE=gateway" >&2; exit 1; \
    fi; \
    if [ ! -f "services/${SERVICE}/dist/main.js" ]; then \
      echo "SERVICE=${SERVICE}: services/${SERVICE}/dist/main.js was not built" >&2; exit 1; \
    fi; \
    mkdir -p /dist; \
    for pkg in libs/* services/*; do \
      if [ "$pkg" != "libs/testkit" ] && [ -d "$pkg/dist" ]; then \
        mkdir -p "/dist/$pkg" && cp -R "$pkg/dist" "/dist/$pkg/dist"; \
        if [ -d "$pkg/models" ]; then cp -R "$pkg/models" "/dist/$pkg/models"; fi; \
      fi; \
    done

# ---------------------------------------------------------------------------------------------------
# prod-deps: production dependencies only, for the libs and services the images run. The testkit
# lib (testcontainers) and the CLI are left out; workspace links in node_modules/@handoff point at
# libs/* and services/*, which the runtime stage fills with their dist/ output.
FROM base AS prod-deps
COPY --from=manifests /manifests/ ./
RUN --mount=type=cache,target=/root/.npm set -eu; \
    set --; \
    for pkg in libs/* services/*; do \
      if [ "$pkg" != "libs/testkit" ]; then set -- "$@" --workspace "$pkg"; fi; \
    done; \
    npm ci --omit=dev --ignore-scripts "$@"

# ---------------------------------------------------------------------------------------------------
# runtime: node, production node_modules, the package.json files and the compiled dist/ folders.
FROM ${NODE_IMAGE} AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="handoff-${SERVICE}" \
      org.opencontainers.image.description="Handoff ${SERVICE} service" \
      org.opencontainers.image.licenses="Apache-2.0"
# NODE_OPTIONS: the young-generation cap every launcher gives the services (see
# libs/nats-process/src/service-env.ts). Not the old-generation limit the other launchers add: in a
# container Node sizes V8's heap from the container's memory limit. Set your own NODE_OPTIONS to
# replace it.
ENV NODE_ENV=production \
    SERVICE=${SERVICE} \
    NODE_OPTIONS="--max-semi-space-size=8"
WORKDIR /app
# Files stay owned by root: the `node` user can read and run them but not change them.
COPY --from=prod-deps /app/ ./
COPY --from=build /dist/ ./
USER node
# 8080: gateway HTTP (PORT). 9090: worker health endpoints when HEALTH_PORT=9090 is set.
EXPOSE 8080 9090
# The services drain in-flight jobs on SIGTERM. `exec` replaces the shell, so node is PID 1 and
# receives the signal itself; the shell is only there to expand ${SERVICE}.
STOPSIGNAL SIGTERM
CMD ["/bin/sh", "-c", "exec node \"services/${SERVICE}/dist/main.js\""]
