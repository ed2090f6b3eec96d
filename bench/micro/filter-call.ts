// Micro-benchmark: the cost of one request-phase call of filters/add-header (sets one header).
//   bun bench/micro/filter-call.ts            (or: deno run -A bench/micro/filter-call.ts)
// Builds the filter if needed and loads it through the real host (metered, instantiated by Extism).
// Prints per-call median and p99 in microseconds for:
//   fast path   FilterChain.onRequest, as the proxy calls it (direct export call, lazy host functions)
//   extism      `await plugin.call("mesh_on_request")`, Extism's normal call path, same module
// Each sample times one call with performance.now(); the timer's own cost (measured the same way,
// around nothing) is subtracted and printed.
import { join } from "node:path";
import { buildFilter, REPO_ROOT } from "../../control/cli/filter-build.ts";
import { createLogger } from "../../runtime/observability/log.ts";
import { Registry } from "../../runtime/observability/metrics.ts";
import type { RequestContext } from "../../runtime/proxy/context.ts";
import { ListHeaders } from "../../runtime/proxy/filter-headers.ts";
import { FilterHarness } from "../../runtime/wasm/harness.ts";
import { extismCallSamples } from "../../runtime/wasm/host.ts";

const CALLS = Number((globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.CALLS ?? 200_000);
const WARMUP = 50_000;
const CONFIG = { request: { "x-added-by": "meshwasm" } };

const { outFile, bytes } = await buildFilter(join(REPO_ROOT, "filters", "add-header"), { outDir: join(REPO_ROOT, ".tmp", "bench"), cache: true });

const base: [string, string][] = [["host", "example.com"], ["user-agent", "bench"], ["accept", "*/*"]];
const list = base.slice();
const ctx: RequestContext = {
  requestId: "bench",
  method: "GET",
  target: "/bench",
  headers: new ListHeaders(list),
  clientAddress: "127.0.0.1",
  routeName: "test",
  perTryTimeoutMs: 0,
  attempt: 1,
  upstreamError: null,
  replayable: true,
  peerIdentity: null,
  startedAt: 0,
};

function pct(samples: Float64Array, p: number): number {
  return samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]!;
}

// Timer overhead: the same loop around nothing.
const empty = new Float64Array(CALLS);
for (let i = 0; i < CALLS; i++) {
  list.length = 3;
  const t = performance.now();
  empty[i] = (performance.now() - t) * 1000;
}
empty.sort();
const timer = pct(empty, 0.5);

// Fast path.
const h = await FilterHarness.load(outFile, { config: CONFIG });
const chain = h.chain;
for (let i = 0; i < WARMUP; i++) {
  list.length = 3;
  chain.onRequest(ctx, null);
}
const fast = new Float64Array(CALLS);
for (let i = 0; i < CALLS; i++) {
  list.length = 3; // the filter adds one header per call; keep the list the same size
  const t = performance.now();
  chain.onRequest(ctx, null);
  fast[i] = (performance.now() - t) * 1000 - timer;
}
fast.sort();
if (!list.some(([n, v]) => n === "x-added-by" && v === "meshwasm")) throw new Error("add-header did not add its header");
await h.close();

// Extism's call path, for comparison: bare, and with the request passed the usual Extism way (JSON
// input). The JSON variant times the encoding too, as a proxy would pay it; the filter ignores it.
const extismCalls = Math.min(CALLS, 50_000);
async function extism(json: boolean): Promise<Float64Array> {
  const s = await extismCallSamples({
    bytes,
    config: CONFIG,
    exportName: "mesh_on_request",
    calls: extismCalls,
    before: (g) => {
      list.length = 3;
      g.ctx = ctx;
      return json ? JSON.stringify({ method: ctx.method, target: ctx.target, headers: list }) : undefined;
    },
    log: createLogger({ sink: () => {} }),
    metrics: new Registry(),
  });
  for (let i = 0; i < s.length; i++) s[i] = s[i]! - timer;
  return s.sort();
}
const ext = await extism(false);
const extJson = await extism(true);

const g = globalThis as { Bun?: { version: string }; Deno?: { version: { deno: string } } };
const runtime = g.Bun ? `bun ${g.Bun.version}` : `deno ${g.Deno?.version.deno}`;
const f = (n: number) => n.toFixed(3).padStart(7);
console.log(`filters/add-header, request phase, one header set; ${runtime}; timer overhead ${timer.toFixed(3)} us subtracted`);
console.log(`fast path (FilterChain.onRequest)   median ${f(pct(fast, 0.5))} us   p99 ${f(pct(fast, 0.99))} us   (${CALLS} calls)`);
console.log(`extism plugin.call, no input       median ${f(pct(ext, 0.5))} us   p99 ${f(pct(ext, 0.99))} us   (${extismCalls} calls)`);
console.log(`extism plugin.call, JSON request   median ${f(pct(extJson, 0.5))} us   p99 ${f(pct(extJson, 0.99))} us   (${extismCalls} calls)`);
