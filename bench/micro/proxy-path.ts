// Micro-benchmark: the JavaScript cost of one proxied request, without the kernel.
//   bun bench/micro/proxy-path.ts                 this checkout
//   bun bench/micro/proxy-path.ts /path/to/other  A/B: this checkout against another one
//   (or: deno run -A bench/micro/proxy-path.ts)
// The real MeshProxy (native listener, phases, upstream client) runs over in-memory sockets: the
// downstream "socket" feeds a GET head and waits for the response write; the upstream "socket"
// answers each request head with a fixed 100 B response. What is left is everything the proxy does
// in JS and in the runtime per request, which is the part we can change: on the bench box the
// kernel's share (loopback TCP, four syscalls) is the same ~13 us for nginx, a byte pipe and us.
// Prints the median per request over ROUNDS rounds of REQUESTS sequential requests.
//
// A/B mode loads both checkouts into this one process and alternates their rounds. Separate
// launches of the same code differ by up to 15% on this VM; rounds alternated in one process agree
// within ~2%, so compare changes this way (a `git worktree add /tmp/base HEAD` makes the other
// checkout; link its node_modules and copy filters/dist when FILTERS is set). Pin it
// (`taskset -c 0`) to count the collector's threads as the proxy's own, as in the bench.
//
// FILTERS=auth,rateLimit,retries,fault (keys of FILTERS in bench/scenarios.ts) puts that chain on the
// route, with the filters from filters/dist (`npm run build:filters`).
import { join, resolve } from "node:path";
// Types only: the checkouts under test are loaded at run time, each with its own modules.
import type { Socket, SocketEvents } from "../../runtime/platform/tcp.ts";

const meta = import.meta as ImportMeta & { dir?: string; dirname?: string };
const HERE = join(meta.dir ?? meta.dirname!, "..", ".."); // Bun names it dir, Deno dirname
const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const argv = (globalThis as { process?: { argv: string[] } }).process?.argv ?? [];
const REQUESTS = Number(env.REQUESTS ?? 50_000);
const ROUNDS = Number(env.ROUNDS ?? 5);
const ROUTE_EXTRA = env.ROUTE_EXTRA ?? "";
const FILTER_KEYS = (env.FILTERS ?? "").split(",").filter((k) => k !== "");

const encoder = new TextEncoder();
/** BODY=65536 for the large-response case (one chunk per read, as loopback often delivers it). */
const BODY = Number(env.BODY ?? 100);
const RESPONSE = encoder.encode(
  `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nDate: Wed, 25 Nov 2026 13:30:51 GMT\r\nContent-Length: ${BODY}\r\n\r\n` + "a".repeat(BODY),
);

/** A socket whose writes go nowhere but `onWrite`. */
function memorySocket(onWrite: (data: string | Uint8Array) => void): Socket {
  return {
    write: (data) => (onWrite(data), true),
    // The bytes are never read here, so no view of them is made: a view would time the bench, not the proxy.
    writeCopy: (data, _length) => (onWrite(data), true),
    pause() {},
    resume() {},
    close() {},
    destroy() {},
  };
}

type FilterUse = { name: string; config: unknown; headers?: Record<string, string> };

/** The proxy of the checkout at `root`, ready; returns a function timing `n` requests (us per request). */
async function setup(root: string): Promise<{ run: (n: number) => Promise<number>; stop: () => Promise<void>; label: string }> {
  const { createLogger } = await import(join(root, "runtime/observability/log.ts"));
  const { MeshProxy } = await import(join(root, "runtime/server.ts"));
  const { createHttp1Client } = await import(join(root, "runtime/upstream/http1/index.ts"));
  const { FILTERS } = (await import(join(root, "bench/scenarios.ts"))) as { FILTERS: Record<string, FilterUse> };
  // A socket's data arrives in a clock turn (platform/clock.ts), as tcp.ts delivers it; older
  // checkouts have no such module.
  type Clock = { beginTurn(): void; endTurn(): void };
  const clock = (await import(join(root, "runtime/platform/clock.ts")).catch(() => null)) as Clock | null;
  const deliver = (events: SocketEvents, chunk: Uint8Array) => {
    clock?.beginTurn();
    try {
      events.onData(chunk);
    } finally {
      clock?.endTurn();
    }
  };
  const chain = FILTER_KEYS.map((k) => {
    const f = FILTERS[k];
    if (f === undefined) throw new Error(`FILTERS: no filter ${k}; one of ${Object.keys(FILTERS).join(", ")}`);
    return f;
  });
  const extraHeaders = chain.flatMap((f) => Object.entries(f.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`)).join("");
  const request = encoder.encode(`GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n${extraHeaders}\r\n`);

  // The upstream: every write of a request head is answered at once (on the next microtask, as a
  // socket read would come later), with one fixed response.
  const client = createHttp1Client({
    connect: async (_host: string, _port: number, events: SocketEvents) => memorySocket(() => queueMicrotask(() => deliver(events, RESPONSE.slice()))),
  });
  // The downstream: one connection; the run drives it.
  let accept: ((socket: Socket, client: { address: string; port: number }) => SocketEvents) | null = null;
  const listen = (_host: string, _port: number, fn: typeof accept) => {
    accept = fn;
    return { port: 1, stop() {} };
  };
  const log = createLogger({ level: "error", sink: () => {} });
  const proxy = new MeshProxy({
    log,
    client,
    listen,
    filterHost: async (metrics: unknown) => {
      const { createFilterHost } = await import(join(root, "runtime/wasm/host.ts"));
      return createFilterHost({ configDir: root, log, metrics, watch: false });
    },
  });
  await proxy.startFromText(
    `
listeners: [{ address: 127.0.0.1, port: 1 }]
admin: { enabled: false }
accessLog: { enabled: false }
${chain.length > 0 ? "filterDir: filters/dist" : ""}
routes:
  - name: all
    cluster: up
${chain.length > 0 ? `    filters: ${JSON.stringify(chain.map((f) => ({ name: f.name, config: f.config })))}` : ""}
${ROUTE_EXTRA}
clusters:
  - name: up
    endpoints: ["127.0.0.1:9"]
`,
    "bench",
  );

  let answered: (() => void) | null = null;
  const downstream = memorySocket(() => {
    const done = answered;
    answered = null;
    done?.();
  });
  const events = accept!(downstream, { address: "127.0.0.1", port: 40000 });
  const run = async (n: number): Promise<number> => {
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      await new Promise<void>((resolve) => {
        answered = resolve;
        deliver(events, request.slice());
      });
    }
    return ((performance.now() - started) * 1000) / n;
  };
  const label = `proxy path${chain.length > 0 ? ` with ${chain.map((f) => f.name).join(" > ")}` : ""}`;
  return { run, stop: () => proxy.shutdown(0), label };
}

/**
 * ALLOC=1: objects the heap holds more of after 1,000 more requests, per request, by type: what a
 * request allocates (Bun only; no collection may run in between, so read it as an estimate).
 */
async function allocations(s: { run: (n: number) => Promise<number> }): Promise<void> {
  const { heapStats } = await import("bun:jsc");
  const N = 1000;
  Bun.gc(true);
  const before = heapStats().objectTypeCounts as Record<string, number>;
  await s.run(N);
  const after = heapStats().objectTypeCounts as Record<string, number>;
  const rows = Object.keys(after)
    .map((k) => [k, ((after[k] ?? 0) - (before[k] ?? 0)) / N] as const)
    .filter(([, n]) => n >= 0.5)
    .sort((a, b) => b[1] - a[1]);
  const total = rows.reduce((t, [, n]) => t + n, 0);
  console.log(`objects per request: ${total.toFixed(1)} (${rows.map(([k, n]) => `${k} ${n.toFixed(1)}`).join(", ")})`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const roots = [HERE, ...argv.slice(2).map((p) => resolve(p))];
const setups = [];
for (const root of roots) setups.push(await setup(root));
for (const s of setups) await s.run(REQUESTS); // warm-up: JIT tiers
if (env.ALLOC) await allocations(setups[0]!);
const results: number[][] = roots.map(() => []);
for (let r = 0; r < ROUNDS; r++) {
  // Alternate which checkout goes first, so neither always runs right after the other.
  for (let k = 0; k < setups.length; k++) {
    const i = (k + r) % setups.length;
    results[i]!.push(await setups[i]!.run(REQUESTS));
  }
}
const rss = `rss ${((globalThis as { process?: { memoryUsage(): { rss: number } } }).process!.memoryUsage().rss / 1e6).toFixed(0)} MB`;
for (let i = 0; i < roots.length; i++) {
  const inOrder = results[i]!.map((x) => x.toFixed(2)).join(", ");
  const which = roots.length > 1 ? ` [${roots[i]}]` : "";
  console.log(`${setups[i]!.label}, in-memory sockets${which}: median ${median(results[i]!).toFixed(2)} us/request (rounds in order: ${inOrder}; ${rss})`);
}
for (const s of setups) await s.stop();
