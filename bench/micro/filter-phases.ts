// Micro-benchmark: what each standard filter costs per request, phase by phase, on the bench's config.
//   bun bench/micro/filter-phases.ts                       every filter of bench/scenarios.ts FILTERS
//   F=auth,rateLimit bun bench/micro/filter-phases.ts      some of them (keys of FILTERS)
//   WASM_DIR=/tmp/variants W=auth-x F=auth bun ...         a variant build of one filter (W.wasm in WASM_DIR)
// Each filter runs alone in a chain (FilterHarness, the proxy's own host), on a request shaped like
// the bench's (wrk's headers plus the forwarding ones) and a 100 B response's headers; the request
// and response calls are timed separately, the clock's own cost subtracted. Variants built with a
// line taken out (meshctl filter build into WASM_DIR) tell what that line costs.
// Needs filters/dist (npm run build:filters).
import { join } from "node:path";
import { FILTERS } from "../scenarios.ts";
import { FilterHarness } from "../../runtime/wasm/harness.ts";
import type { RequestContext } from "../../runtime/proxy/context.ts";
import { ListHeaders } from "../../runtime/proxy/filter-headers.ts";

const env = process.env;
const N = Number(env.CALLS ?? 200_000);
const ROOT = join(import.meta.dir, "..", "..");
const keys = (env.F ?? Object.keys(FILTERS).join(",")).split(",");
const filters = FILTERS as Record<string, { name: string; config: unknown }>;

const request: [string, string][] = [
  ["host", "127.0.0.1:8080"], ["user-agent", "wrk"], ["accept", "*/*"], ["x-api-key", "bench-3f9c2a7d41e8"],
  ["x-forwarded-for", "127.0.0.1"], ["x-forwarded-proto", "http"], ["x-forwarded-host", "127.0.0.1:8080"], ["x-request-id", "bench"],
];
const response: [string, string][] = [["content-type", "application/octet-stream"], ["date", "Wed, 25 Nov 2026 13:30:51 GMT"], ["content-length", "100"]];

/** performance.now() around nothing: subtracted from every sample. */
function clockCost(): number {
  let t = 0;
  for (let i = 0; i < N; i++) {
    const a = performance.now();
    t += performance.now() - a;
  }
  return (t * 1000) / N;
}

for (const key of keys) {
  const f = filters[key];
  if (f === undefined) throw new Error(`F: no filter ${key}; one of ${Object.keys(filters).join(", ")}`);
  const wasm = env.WASM_DIR ? join(env.WASM_DIR, `${env.W ?? f.name}.wasm`) : join(ROOT, "filters", "dist", `${f.name}.wasm`);
  const h = await FilterHarness.create([{ wasm, config: f.config }]);
  const chain = h.chain;
  const ctx: RequestContext = {
    requestId: "bench", method: "GET", target: "/small", headers: new ListHeaders([]), clientAddress: "127.0.0.1", routeName: "bench",
    peerIdentity: null, startedAt: 0, perTryTimeoutMs: 0, attempt: 1, upstreamError: null, replayable: true, pinned: null,
  };
  const run = (n: number): [number, number] => {
    let req = 0;
    let res = 0;
    for (let i = 0; i < n; i++) {
      ctx.headers = new ListHeaders(request.slice());
      ctx.attempt = 1;
      ctx.pinned = null;
      const t0 = performance.now();
      const a = chain.onRequest(ctx, null);
      const t1 = performance.now();
      const b = chain.onResponse(ctx, { status: 200, headers: new ListHeaders(response.slice()) });
      const t2 = performance.now();
      req += t1 - t0;
      res += t2 - t1;
      if (a.kind !== "continue" || b.kind !== "continue") throw new Error(`${key}: ${a.kind} / ${b.kind}: the bench config must let requests through`);
    }
    return [(req * 1000) / n, (res * 1000) / n];
  };
  const clock = clockCost();
  run(N); // warm-up: JIT tiers
  const [req, res] = run(N);
  console.log(`${key.padEnd(10)} request ${(req - clock).toFixed(3)} us   response ${(res - clock).toFixed(3)} us   (clock ${clock.toFixed(3)} us subtracted)`);
  await h.close();
}
