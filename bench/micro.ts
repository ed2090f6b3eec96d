// Micro-benchmarks beside the load tests: one filter call, a config reload, a filter hot swap under load.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type LoadGenerator, type LoadResult, runLoad } from "./load.ts";
import { findFilterModule, headersFor, MAIN, type MeshwasmFiles, startMeshwasm, writeMeshwasmConfig } from "./peers/meshwasm.ts";
import { answers, Proc } from "./peers/process.ts";
import { type Peer, PeerStartError } from "./peers/types.ts";
import { FILTERS, type FilterUse, type Profile } from "./scenarios.ts";
import { median } from "./stats.ts";

/** A micro-benchmark that did not run: `reason` in one line, `detail` the log tail if any. */
export type Skipped = { status: "skipped" | "failed"; reason: string; detail?: string };

export type FilterCallResult =
  | { status: "ok"; medianUs: number | null; p99Us: number | null; output: string }
  | Skipped;

export const FILTER_CALL_SCRIPT = join(import.meta.dir, "micro", "filter-call.ts");

const UNIT_TO_US: Record<string, number> = { ns: 1e-3, us: 1, "µs": 1, "μs": 1, ms: 1e3, s: 1e6 };

/**
 * Read median and p99 (in µs) from filter-call.ts output: a JSON line with `medianUs`/`p99Us` (or
 * `median`/`p99`) if there is one, else text such as "median 0.84 µs ... p99 1.9 µs".
 */
export function parseFilterCall(output: string): { medianUs: number | null; p99Us: number | null } {
  for (const line of output.split("\n").reverse()) {
    const t = line.trim();
    if (!t.startsWith("{")) continue;
    try {
      const j = JSON.parse(t);
      const m = j.medianUs ?? j.median_us ?? j.median;
      const p = j.p99Us ?? j.p99_us ?? j.p99;
      if (typeof m === "number") return { medianUs: m, p99Us: typeof p === "number" ? p : null };
    } catch {
      // not JSON after all
    }
  }
  const grab = (label: RegExp): number | null => {
    const m = new RegExp(`${label.source}\\D*?(\\d+(?:\\.\\d+)?)\\s*(ns|us|µs|μs|ms|s)?\\b`, "i").exec(output);
    if (!m) return null;
    return Number(m[1]) * (UNIT_TO_US[m[2] ?? "us"] ?? 1);
  };
  return { medianUs: grab(/median/), p99Us: grab(/p99(?![.\d])/) };
}

/** Run bench/micro/filter-call.ts (owned by its own author) and keep what it printed. */
export async function runFilterCall(opts: { quick: boolean; cpu?: string; logFile: string; timeoutMs: number }): Promise<FilterCallResult> {
  if (!existsSync(FILTER_CALL_SCRIPT)) return { status: "skipped", reason: "bench/micro/filter-call.ts not written yet" };
  const proc = Proc.spawn("filter-call", [process.execPath, FILTER_CALL_SCRIPT], {
    cpu: opts.cpu,
    logFile: opts.logFile,
    // BATCHES is filter-call.ts's own knob: fewer batches for a quick run.
    env: { BENCH_QUICK: opts.quick ? "1" : undefined, BATCHES: opts.quick ? "200" : undefined },
  });
  const finished = await Promise.race([proc.exited.then(() => true), Bun.sleep(opts.timeoutMs).then(() => false)]);
  if (!finished) await proc.stop();
  const output = readFileSync(opts.logFile, "utf8").trim();
  // The last lines, each cut short: a stack trace through minified code can be one enormous line.
  const tail = output
    .split("\n")
    .slice(-8)
    .map((l) => (l.length > 200 ? `${l.slice(0, 200)}...` : l))
    .join("\n");
  if (!finished) return { status: "failed", reason: `timed out after ${opts.timeoutMs / 1000} s`, detail: tail };
  const code = await proc.exited;
  if (code !== 0) return { status: "failed", reason: `exited with ${code}`, detail: tail };
  return { status: "ok", ...parseFilterCall(output), output };
}

export type ReloadResult =
  | { status: "ok"; via: "POST /reload" | "SIGHUP"; reloads: number; timesMs: number[]; medianMs: number | null; maxMs: number }
  | Skipped;

async function configVersion(adminUrl: string): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
  const res = await fetch(`${adminUrl}/config`, { signal: AbortSignal.timeout(2000) });
  if (!res.ok) return { ok: false, reason: `admin GET /config answered ${res.status}` };
  const body = (await res.json()) as { version?: unknown };
  if (body.version === undefined) return { ok: false, reason: "admin GET /config has no version field" };
  return { ok: true, version: JSON.stringify(body.version) };
}

/**
 * Rewrite the config file (a new request header each time), ask for a reload, and time until GET
 * /config reports a new version. POST /reload first; SIGHUP if the admin API has no such route.
 */
export async function measureReload(
  peer: Peer & { files: MeshwasmFiles },
  upstreamPort: number,
  reloads: number,
): Promise<ReloadResult> {
  const adminUrl = peer.adminUrl!;
  let v = await configVersion(adminUrl).catch((e) => ({ ok: false as const, reason: `admin GET /config failed: ${e}` }));
  if (!v.ok) return { status: "skipped", reason: v.reason };
  let via: "POST /reload" | "SIGHUP" = "POST /reload";
  const timesMs: number[] = [];
  for (let i = 1; i <= reloads; i++) {
    const before = v.version;
    writeMeshwasmConfig(peer.files, upstreamPort, { filters: [], requestHeaders: { "x-bench-reload": String(i) } });
    const t0 = performance.now();
    if (via === "POST /reload") {
      const res = await fetch(`${adminUrl}/reload`, { method: "POST", signal: AbortSignal.timeout(10_000) });
      await res.arrayBuffer();
      if (res.status === 404 || res.status === 405) via = "SIGHUP";
      else if (!res.ok) return { status: "failed", reason: `POST /reload answered ${res.status}` };
    }
    if (via === "SIGHUP") peer.proc!.signal("SIGHUP");
    const deadline = t0 + 10_000;
    for (;;) {
      v = await configVersion(adminUrl).catch((e) => ({ ok: false as const, reason: String(e) }));
      if (v.ok && v.version !== before) break;
      if (performance.now() > deadline) {
        return { status: "failed", reason: `GET /config still showed version ${before} 10 s after ${via} (reload ${i})` };
      }
      await Bun.sleep(1);
    }
    timesMs.push(performance.now() - t0);
  }
  if (!(await answers(`${peer.url}/health`).catch(() => false))) {
    return { status: "failed", reason: "the proxy stopped answering after the reloads" };
  }
  return { status: "ok", via, reloads, timesMs, medianMs: median(timesMs), maxMs: Math.max(...timesMs) };
}

export type HotSwapResult =
  | {
      status: "ok";
      filter: string;
      /** How modules were replaced: the admin API (each swap confirmed) or the watched file. */
      via: "PUT /filters/:name" | "file";
      swaps: number;
      /** Swaps the admin API refused or failed (only for PUT). */
      swapErrors: string[];
      load: LoadResult;
    }
  | Skipped;

/**
 * Append a custom section to a wasm module: a different file, byte for byte, that behaves the same.
 * A proxy that skips reloading unchanged content still has to load this one.
 */
export function withCustomSection(module: Uint8Array, name: string, payload: string): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder();
  const leb = (n: number) => {
    const out: number[] = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      out.push(b);
    } while (n);
    return out;
  };
  const nameBytes = enc.encode(name);
  const content = [...leb(nameBytes.length), ...nameBytes, ...enc.encode(payload)];
  return new Uint8Array([...module, 0, ...leb(content.length), ...content]);
}

/**
 * Put 64 connections of load on a route with `filter` and replace its module every 250 ms with a
 * different build of the same code: through the admin API (PUT /filters/:name, which confirms each
 * swap) or, if the proxy has no such route, by replacing the watched file (write, then rename, as a
 * deploy would). Any non-2xx or socket error during the load is a failed swap.
 */
export async function measureHotSwap(opts: {
  gen: LoadGenerator;
  peer: Peer & { files: MeshwasmFiles };
  filter: FilterUse;
  seconds: number;
  cpu?: string;
  logFile: string;
}): Promise<HotSwapResult> {
  const target = join(opts.peer.files.filterDir, `${opts.filter.name}.wasm`);
  const original = new Uint8Array(readFileSync(target));
  const load = runLoad(opts.gen, {
    url: `${opts.peer.url}/small`,
    connections: 64,
    durationS: opts.seconds,
    headers: headersFor([opts.filter]),
    cpu: opts.cpu,
    logFile: opts.logFile,
  });
  let swaps = 0;
  let via: "PUT /filters/:name" | "file" = "PUT /filters/:name";
  const swapErrors: string[] = [];
  let done = false;
  load.finally(() => (done = true)).catch(() => {});
  await Bun.sleep(500);
  const stopAt = Date.now() + opts.seconds * 1000 - 1000;
  while (!done && Date.now() < stopAt) {
    const next = withCustomSection(original, "bench-swap", String(swaps + 1));
    if (via === "PUT /filters/:name") {
      const res = await fetch(`${opts.peer.adminUrl}/filters/${opts.filter.name}`, {
        method: "PUT",
        body: next,
        headers: { "content-type": "application/wasm" },
        signal: AbortSignal.timeout(10_000),
      }).catch((e: unknown) => e as Error);
      if (res instanceof Response && (res.status === 404 || res.status === 405) && swaps === 0) {
        via = "file";
        continue;
      }
      if (!(res instanceof Response) || !res.ok) {
        swapErrors.push(res instanceof Response ? `${res.status} ${(await res.text()).slice(0, 200)}` : String(res));
      }
      if (res instanceof Response && !res.bodyUsed) await res.arrayBuffer();
    } else {
      writeFileSync(`${target}.next`, next);
      renameSync(`${target}.next`, target);
    }
    swaps++;
    await Bun.sleep(250);
  }
  try {
    return { status: "ok", filter: opts.filter.name, via, swaps, swapErrors, load: await load };
  } catch (e) {
    return { status: "failed", reason: String(e) };
  }
}

export interface MicroContext {
  gen: LoadGenerator;
  profile: Profile;
  quick: boolean;
  upstreamPort: number;
  proxyCpu?: string;
  clientCpu?: string;
  tmp: string;
  log: (msg: string) => void;
}

export interface MicroResults {
  filterCall: FilterCallResult;
  reload: ReloadResult;
  hotSwap: HotSwapResult;
}

/** The three micro-benchmarks, each on a proxy of its own, one after the other. */
export async function runMicroBenchmarks(ctx: MicroContext): Promise<MicroResults> {
  const filterCall = await runFilterCall({
    quick: ctx.quick,
    cpu: ctx.proxyCpu,
    logFile: join(ctx.tmp, "filter-call.log"),
    timeoutMs: ctx.quick ? 60_000 : 180_000,
  });
  ctx.log(`filter call: ${filterCall.status === "ok" ? `median ${filterCall.medianUs} µs, p99 ${filterCall.p99Us} µs` : `${filterCall.status}: ${filterCall.reason}`}`);

  const notBuilt = { status: "skipped", reason: "proxy not built (runtime/main.ts missing)" } as const;
  let reload: ReloadResult = notBuilt;
  let hotSwap: HotSwapResult = notBuilt;
  if (existsSync(MAIN)) {
    const peerCtx = (name: string) => {
      const dir = join(ctx.tmp, name);
      mkdirSync(dir, { recursive: true });
      return { dir, upstreamPort: ctx.upstreamPort, cpu: ctx.proxyCpu };
    };
    try {
      const peer = await startMeshwasm(peerCtx("micro-reload"), { runtime: "bun", filters: [] });
      reload = await measureReload(peer, ctx.upstreamPort, ctx.profile.reloads).catch((e) => ({ status: "failed", reason: String(e) }) as const);
      await peer.proc!.stop();
    } catch (e) {
      reload = startFailure(e);
    }

    // Swap the header-only filter if built, else the first standard filter that is.
    const filter = [FILTERS.headerOnly, FILTERS.auth, FILTERS.rateLimit, FILTERS.retries, FILTERS.fault].find((f) => findFilterModule(f.name));
    if (!filter) {
      hotSwap = { status: "skipped", reason: "no filter built yet (no filters/dist/<name>.wasm)" };
    } else {
      try {
        const peer = await startMeshwasm(peerCtx("micro-hotswap"), { runtime: "bun", filters: [filter] });
        hotSwap = await measureHotSwap({
          gen: ctx.gen,
          peer,
          filter,
          seconds: ctx.profile.hotSwapS,
          cpu: ctx.clientCpu,
          logFile: join(ctx.tmp, "hotswap.log"),
        });
        await peer.proc!.stop();
      } catch (e) {
        hotSwap = startFailure(e);
      }
    }
  }
  ctx.log(`config reload: ${reload.status === "ok" ? `median ${reload.medianMs?.toFixed(1)} ms via ${reload.via}` : `${reload.status}: ${reload.reason}`}`);
  ctx.log(
    `hot swap: ${hotSwap.status === "ok" ? `${hotSwap.swaps} swaps via ${hotSwap.via}, ${hotSwap.load.non2xx} HTTP errors, ${hotSwap.load.socketErrors} socket errors` : `${hotSwap.status}: ${hotSwap.reason}`}`,
  );
  return { filterCall, reload, hotSwap };
}

function startFailure(e: unknown): Skipped {
  return {
    status: "failed",
    reason: `proxy did not start: ${e instanceof Error ? e.message : String(e)}`,
    detail: e instanceof PeerStartError ? e.detail : undefined,
  };
}
