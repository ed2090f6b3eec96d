// Command line entry: `bun runtime/main.ts --config FILE` (or `deno run -A runtime/main.ts --config FILE`).
import { createLogger } from "./observability/log.ts";
import { platform } from "./platform/index.ts";
import { ConfigStartError, MeshProxy } from "./server.ts";
import { parseConfig } from "./config/load.ts";
import type { Config } from "./config/schema.ts";
import { Registry } from "./observability/metrics.ts";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";

const USAGE = `usage: main.ts --config FILE [--check]
  --config FILE   YAML config (see README "Config reference")
  --check         validate the config, print errors, exit 0 if valid or 1 if not
signals: SIGHUP reloads the config file; SIGTERM/SIGINT drain in-flight requests and exit 0`;

function parseArgs(argv: string[]): { config: string | null; check: boolean } {
  let config: string | null = null;
  let check = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--config" || a === "-c") config = argv[++i] ?? null;
    else if (a.startsWith("--config=")) config = a.slice("--config=".length);
    else if (a === "--check") check = true;
    else if (a === "--help" || a === "-h") {
      console.log(USAGE);
      platform.exit(0);
    } else {
      console.error(`unknown argument "${a}"\n${USAGE}`);
      platform.exit(2);
    }
  }
  return { config, check };
}

async function checkFilters(config: Config, configDir: string): Promise<string[]> {
  if (config.filterDir === undefined && config.routes.every((r) => r.filters.length === 0)) return [];
  const { createFilterHost } = await import("./wasm/host.ts");
  const host = createFilterHost({ configDir, log: createLogger({ level: "error" }), metrics: new Registry(), watch: false });
  try {
    return await host.applyConfig(config);
  } finally {
    await host.close();
  }
}

async function main(): Promise<void> {
  const args = parseArgs(platform.args());
  if (args.config === null) {
    console.error(`missing --config FILE\n${USAGE}`);
    platform.exit(2);
  }
  const path = resolve(args.config);
  if (args.check) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      console.error(`cannot read ${path}: ${(err as Error).message}`);
      platform.exit(1);
    }
    const r = parseConfig(text);
    // Filter configs too, as a start would check them: their modules are compiled and each route's
    // config goes through the filter's schema and its own checks. Nothing listens.
    const errors = r.ok ? await checkFilters(r.config, dirname(path)) : r.errors;
    if (r.ok && errors.length === 0) {
      console.log(`${path}: valid (${r.config.routes.length} routes, ${r.config.clusters.length} clusters)`);
      platform.exit(0);
    }
    console.error(`invalid config ${path}:\n  ${errors.join("\n  ")}`);
    platform.exit(1);
  }

  const log = createLogger();
  const proxy = new MeshProxy({
    log,
    filterHost: async (metrics) => {
      const { createFilterHost } = await import("./wasm/host.ts");
      return createFilterHost({ configDir: dirname(path), log: log.child({ component: "filters" }), metrics });
    },
  });
  try {
    await proxy.startFromFile(path);
  } catch (err) {
    if (err instanceof ConfigStartError) console.error(err.message);
    else console.error(`cannot start: ${(err as Error).message}`);
    platform.exit(1);
  }

  platform.onSignal("SIGHUP", () => {
    void proxy.reload();
  });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("draining", { signal, inFlight: proxy.inFlight() });
    const { drained } = await proxy.shutdown();
    log.info("stopped", { drained });
    platform.exit(0);
  };
  platform.onSignal("SIGTERM", () => void stop("SIGTERM"));
  platform.onSignal("SIGINT", () => void stop("SIGINT"));
}

await main();
