# meshwasm proxy on the official Bun image. Build: docker build -t meshwasm .
# Run:  docker run -p 8080:8080 -v $PWD/mesh.yaml:/etc/meshwasm/mesh.yaml:ro meshwasm
# The admin API listens where the config says; bind it to 0.0.0.0 in the config to reach it from
# outside the container (it is loopback-only by default, like Envoy's).
FROM oven/bun:1.4-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Runtime dependencies only; bun reads package-lock.json. No Deno, no compiler in the image.
RUN bun install --production --frozen-lockfile --ignore-scripts

FROM oven/bun:1.4-slim
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY runtime ./runtime
# Pre-built filter modules, if any (npm run build:filters before docker build).
COPY filters ./filters
USER bun
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["bun", "--max-http-header-size=1048576", "runtime/main.ts"]
CMD ["--config", "/etc/meshwasm/mesh.yaml"]
