// `npm run bench`: starts the upstream and every proxy, load-tests them interleaved, writes the report.
//
//   bun bench/run.ts                      full run (~10 min on 2 cores), results in bench/results/
//   bun bench/run.ts --quick              every scenario briefly (~1-2 min), results in .tmp/bench-quick/
//   bun bench/run.ts --quick --out DIR    the same, results in DIR (for tests)
//   bun bench/run.ts --help               all options
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { LoadGenerator } from "./load.ts";
import { runMicroBenchmarks } from "./micro.ts";
import { startHaproxy } from "./peers/haproxy.ts";
import { buildFilters, filterState, MAIN, OVERRIDES, startMeshwasm } from "./peers/meshwasm.ts";
import { startNaiveBun } from "./peers/naive-bun.ts";
import { startNginx } from "./peers/nginx.ts";
import { answers, freePort, hasProcFs, killAllNow, memory, pinSelf, Proc, stopAll, usePinning, waitFor } from "./peers/process.ts";
import { type Peer, type PeerContext, PeerStartError } from "./peers/types.ts";
import { type BenchResult, type ScenarioResult, writeReport } from "./report.ts";
import { measureNoise, noiseNote, type RoundsContext, runRounds, secondsPerRun, summarise } from "./rounds.ts";
import { BASELINE_ID, CELLS, PROFILES, type Profile, type Scenario, SCENARIOS } from "./scenarios.ts";
import { describeMachine, ensureTools, pickLoadGenerator, type Tools } from "./tools.ts";

const ROOT = resolve(import.meta.dir, "..");

const HELP = `Usage: bun bench/run.ts [options]        (npm run bench -- [options])

  --quick              every scenario once, briefly (~1-2 min); results default to .tmp/bench-quick/
  --out DIR            write <timestamp>.json, latest.json, latest.md and latest.svg to DIR
                       (default: bench/results/ for full runs)
  --only IDS           comma-separated scenario ids to run (see below); nginx is needed for ratios
  --rounds N           interleaved rounds (default 3, quick 1)
  --duration S         measured seconds per run (default 3, quick 1)
  --warmup S           warm-up seconds before each measured run (default 1, quick 0)
  --loadgen wrk|autocannon   force a load generator (default: wrk if installed, else autocannon)
  --no-install         never apt-get install missing tools
  --no-build           do not run \`bun run build:filters\` for filters that have sources but no .wasm
  --no-pin             do not pin processes to CPUs with taskset
  --keep-tmp           keep the temp dir with generated configs and process logs

Scenarios: ${SCENARIOS.map((s) => s.id).join(", ")}`;

function log(msg: string): void {
  console.log(`[bench] ${msg}`);
}

interface Options {
  quick: boolean;
  out: string;
  only?: Set<string>;
  profile: Profile;
  loadgen?: "wrk" | "autocannon";
  install: boolean;
  build: boolean;
  pin: boolean;
  keepTmp: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      out: { type: "string" },
      only: { type: "string" },
      rounds: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      loadgen: { type: "string" },
      "no-install": { type: "boolean", default: false },
      "no-pin": { type: "boolean", default: false },
      "no-build": { type: "boolean", default: false },
      "keep-tmp": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const base = PROFILES[values.quick ? "quick" : "full"];
  const num = (name: string, v: string | undefined, fallback: number, min: number) => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new TypeError(`--${name}: expected a number >= ${min}, got "${v}"`);
    return n;
  };
  const profile: Profile = {
    ...base,
    rounds: Math.round(num("rounds", values.rounds, base.rounds, 1)),
    durationS: num("duration", values.duration, base.durationS, 1),
    warmupS: num("warmup", values.warmup, base.warmupS, 0),
  };
  if (values.loadgen !== undefined && values.loadgen !== "wrk" && values.loadgen !== "autocannon") {
    throw new TypeError(`--loadgen: expected "wrk" or "autocannon", got "${values.loadgen}"`);
  }
  let only: Set<string> | undefined;
  if (values.only) {
    only = new Set(values.only.split(",").map((s) => s.trim()).filter(Boolean));
    const unknown = [...only].filter((id) => !SCENARIOS.some((s) => s.id === id));
    if (unknown.length > 0) throw new TypeError(`--only: unknown scenario ${unknown.join(", ")}; known: ${SCENARIOS.map((s) => s.id).join(", ")}`);
  }
  return {
    quick: values.quick!,
    out: resolve(values.out ?? (values.quick ? join(ROOT, ".tmp", "bench-quick") : join(ROOT, "bench", "results"))),
    only,
    profile,
    loadgen: values.loadgen as Options["loadgen"],
    install: !values["no-install"],
    build: !values["no-build"],
    pin: !values["no-pin"],
    keepTmp: values["keep-tmp"]!,
  };
}

/** Why a scenario cannot run on this machine right now, or null if it can. */
function unavailable(s: Scenario, tools: Tools): string | null {
  switch (s.kind) {
    case "direct":
    case "naive-bun":
      return null;
    case "nginx":
      return tools.nginx ? null : "nginx not installed";
    case "haproxy":
      return tools.haproxy ? null : "haproxy not installed";
    case "meshwasm": {
      if (!existsSync(MAIN)) return "proxy not built (runtime/main.ts missing)";
      if (s.runtime === "deno" && !tools.deno) return "deno not found";
      const names = (s.filters ?? []).map((f) => f.name);
      const unwritten = names.filter((n) => filterState(n) === "missing");
      const unbuilt = names.filter((n) => filterState(n) === "source");
      const list = (xs: string[]) => (xs.length === 1 ? `filter ${xs[0]}` : `filters ${xs.join(", ")}`);
      if (unwritten.length > 0) return `${list(unwritten)} not written yet (no filters/<name>/assembly/)`;
      if (unbuilt.length > 0) return `${list(unbuilt)} not built (no filters/dist/<name>.wasm; npm run build:filters)`;
      return null;
    }
  }
}

interface Layout {
  proxy?: string;
  upstream?: string;
  client?: string;
  description: string;
}

/** Which CPU each party gets. The proxy under test always has a core to itself. */
function planPinning(tools: Tools, wanted: boolean): Layout {
  const n = cpus().length;
  if (!wanted) return { description: "none (--no-pin)" };
  if (!tools.taskset) return { description: "none (taskset not found)" };
  if (n < 2) return { description: "none (one CPU)" };
  if (n === 2) {
    return {
      proxy: "0",
      upstream: "1",
      client: "1",
      description:
        "with taskset: the proxy under test (all its threads) on CPU 0; the load generator (one wrk thread), the upstream and the orchestrator share CPU 1. " +
        "The direct row therefore measures what CPU 1 can generate and serve, the ceiling for every proxied row.",
    };
  }
  return {
    proxy: "0",
    upstream: "1",
    client: "2",
    description: "with taskset: the proxy under test (all its threads) on CPU 0, the upstream on CPU 1, the load generator (one wrk thread) and the orchestrator on CPU 2.",
  };
}

async function startPeer(s: Scenario, ctx: PeerContext, tools: Tools, upstreamUrl: string): Promise<Peer> {
  switch (s.kind) {
    case "direct":
      return { url: upstreamUrl };
    case "nginx":
      return startNginx(tools.nginx!, ctx);
    case "haproxy":
      return startHaproxy(tools.haproxy!, ctx);
    case "naive-bun":
      return startNaiveBun(ctx);
    case "meshwasm":
      return startMeshwasm(ctx, { runtime: s.runtime!, deno: tools.deno, filters: s.filters ?? [] });
  }
}

function memoryOf(peer: Peer | undefined) {
  return peer?.proc ? memory(peer.proc.pid) : null;
}

/** `bun run build:filters` when a selected scenario needs a filter that has sources but no .wasm. */
function buildMissingFilters(selected: Scenario[], opts: Options, notes: string[]): void {
  const unbuilt = [...new Set(selected.flatMap((s) => s.filters ?? []).map((f) => f.name))].filter((n) => filterState(n) === "source");
  if (unbuilt.length === 0 || !existsSync(MAIN)) return;
  if (!opts.build) {
    notes.push(`Filters ${unbuilt.join(", ")} are not built and --no-build was given.`);
    return;
  }
  log(`building filters (${unbuilt.join(", ")} have sources but no .wasm)...`);
  const failure = buildFilters();
  if (failure) {
    log(`could not build the filters: ${failure}`);
    notes.push(`Could not build the filters: ${failure}`);
  }
}

/** Start a peer for every selected scenario that can run; the others become skipped or failed rows. */
async function startScenarios(selected: Scenario[], tools: Tools, upstreamPort: number, cpu: string | undefined, tmp: string) {
  const results: ScenarioResult[] = [];
  const active: RoundsContext["active"] = [];
  for (const s of selected) {
    const result: ScenarioResult = { id: s.id, label: s.label, role: s.role, status: "ok", cells: {} };
    results.push(result);
    const reason = unavailable(s, tools);
    if (reason) {
      Object.assign(result, { status: "skipped", reason });
      log(`${s.id}: skipped: ${reason}`);
      continue;
    }
    const dir = join(tmp, s.id.replace(/[^\w.-]/g, "_"));
    mkdirSync(dir, { recursive: true });
    try {
      const peer = await startPeer(s, { dir, upstreamPort, cpu }, tools, `http://127.0.0.1:${upstreamPort}`);
      active.push({ scenario: s, peer, result });
      log(`${s.id}: started${peer.proc ? ` (pid ${peer.proc.pid})` : ""}`);
    } catch (e) {
      result.status = "failed";
      result.reason = `did not start: ${e instanceof Error ? e.message : String(e)}`;
      result.detail = e instanceof PeerStartError ? e.detail : undefined;
      log(`${s.id}: ${result.reason}${result.detail ? `\n${result.detail}` : ""}`);
    }
  }
  // Idle memory once everything has settled after start.
  await Bun.sleep(1000);
  for (const { peer, result } of active) {
    const m = memoryOf(peer);
    if (m) result.memory = { idleStartKb: m.rssKb, idleEndKb: null, peakKb: null, idleStartAnonKb: m.anonKb };
  }
  return { results, active };
}

async function main(opts: Options, tmp: string): Promise<number> {
  const started = new Date();
  const notes: string[] = [];
  const { profile } = opts;

  const tools = ensureTools(opts.install, log);
  for (const n of tools.notes) log(n);
  notes.push(...tools.notes);
  const gen: LoadGenerator | undefined = pickLoadGenerator(tools, opts.loadgen);
  if (!gen) {
    console.error(
      "[bench] no load generator: wrk is not installed and node_modules/autocannon is missing.\n" +
        "        Install wrk (sudo apt-get install -y wrk) or run `npm install` to get autocannon.",
    );
    return 2;
  }
  if (gen.tool === "autocannon") {
    const why = tools.wrk ? "--loadgen autocannon was given" : "wrk is not installed";
    log(`using autocannon from npm as the load generator (${why}); figures are lower and noisier than wrk's`);
    notes.push(`Load generator: autocannon (${why}). Its latencies have 1 ms resolution and its figures are not comparable with wrk runs.`);
  }
  if (OVERRIDES.length > 0) {
    const note = `The meshwasm rows did not run the real proxy and filters: ${OVERRIDES.join(", ")}.`;
    log(note);
    notes.push(note);
  }
  if (!hasProcFs) notes.push("No /proc: proxy CPU and memory figures are missing.");

  const layout = planPinning(tools, opts.pin);
  usePinning(layout.proxy ? tools.taskset : undefined);
  if (layout.client && !pinSelf(layout.client)) notes.push("Could not pin the orchestrator itself.");
  log(`pinning: ${layout.description}`);
  const machine = describeMachine(tools, gen);

  // The upstream, shared by every scenario.
  const upstreamPort = freePort();
  const upstream = Proc.spawn("upstream", [process.execPath, join(import.meta.dir, "upstream.ts"), "--port", String(upstreamPort)], {
    cpu: layout.upstream,
    logFile: join(tmp, "upstream.log"),
  });
  if (!(await waitFor(() => answers(`http://127.0.0.1:${upstreamPort}/health`), 10_000, upstream))) {
    console.error(`[bench] the upstream did not start:\n${upstream.tail()}`);
    return 1;
  }

  const selected = SCENARIOS.filter((s) => !opts.only || opts.only.has(s.id));
  buildMissingFilters(selected, opts, notes);
  const { results, active } = await startScenarios(selected, tools, upstreamPort, layout.proxy, tmp);
  if (!active.some((a) => a.scenario.id === BASELINE_ID)) notes.push("nginx did not run, so there are no ratios to nginx.");

  const runs = profile.rounds * CELLS.length * active.length;
  log(`${active.length} scenarios x ${CELLS.length} cells x ${profile.rounds} rounds = ${runs} runs, about ${Math.ceil((runs * secondsPerRun(profile)) / 60)} min`);
  await runRounds({ gen, profile, active, upstream, clientCpu: layout.client, tmp, log, stopping: () => exiting });
  if (exiting) return 130;

  // Memory once the load has stopped; then the peers go, so the micro-benchmarks run alone.
  await Bun.sleep(2000);
  for (const { peer, result } of active) {
    const m = memoryOf(peer);
    if (m && result.memory) Object.assign(result.memory, { idleEndKb: m.rssKb, peakKb: m.peakKb, idleEndAnonKb: m.anonKb });
  }
  await Promise.all(active.map(({ peer }) => peer.proc?.stop()));

  summarise(results);
  const noise = measureNoise(results);
  if (noise) {
    log(noiseNote(noise));
    notes.unshift(noiseNote(noise));
  }

  log("micro-benchmarks...");
  const micro = await runMicroBenchmarks({ gen, profile, quick: opts.quick, upstreamPort, proxyCpu: layout.proxy, clientCpu: layout.client, tmp, log });

  const result: BenchResult = {
    schema: 1,
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    mode: opts.quick ? "quick" : "full",
    profile,
    loadgen: gen.tool === "wrk" ? `${gen.version} (1 thread)` : gen.version,
    pinning: layout.description,
    machine,
    baseline: BASELINE_ID,
    cells: CELLS.map((c) => ({ id: c.id, label: c.label, connections: c.connections, path: c.size.path })),
    scenarios: results,
    micro,
    noise,
    notes,
  };
  const files = writeReport(result, opts.out);
  log(`wrote ${files.json}`);
  log(`wrote ${files.markdown}, ${files.svg} and latest.json`);
  return 0;
}

// ---------- process lifetime: every child goes when we go, whichever way we go ----------

let opts: Options;
try {
  opts = parseOptions(process.argv.slice(2));
} catch (e) {
  console.error(`[bench] ${e instanceof Error ? e.message : String(e)}\n\n${HELP}`);
  process.exit(2);
}
const tmp = mkdtempSync(join(tmpdir(), "meshwasm-bench-"));
let exiting = false;

async function shutdown(code: number): Promise<never> {
  if (!exiting) {
    exiting = true;
    await stopAll();
    if (opts.keepTmp) log(`kept ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(code);
}

for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
  process.on(sig, () => {
    log(`${sig}: stopping everything`);
    void shutdown(code);
  });
}
process.on("exit", () => {
  killAllNow();
  if (!opts.keepTmp) rmSync(tmp, { recursive: true, force: true });
});

main(opts, tmp)
  .then((code) => shutdown(code))
  .catch((e) => {
    console.error(`[bench] failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return shutdown(1);
  });
