// Micro-benchmark: the JavaScript cost of one proxied request, without the kernel.
//   bun bench/micro/proxy-path.ts        (or: deno run -A bench/micro/proxy-path.ts)
// The real MeshProxy (native listener, phases, upstream client) runs over in-memory sockets: the
// downstream "socket" feeds a GET head and waits for the response write; the upstream "socket"
// answers each request head with a fixed 100 B response. What is left is everything the proxy does
// in JS and in the runtime per request, which is the part we can change: on the bench box the
// kernel's share (loopback TCP, four syscalls) is the same ~13 us for nginx, a byte pipe and us.
// Prints the mean per request over ROUNDS rounds of REQUESTS sequential requests.
// FILTERS=auth,rateLimit,retries,fault (keys of FILTERS in bench/scenarios.ts) puts that chain on the
// route, with the filters from filters/dist (`npm run build:filters`).
import { join } from "node:path";
import { createLogger } from "../../runtime/observability/log.ts";
import type { ListenFn, Socket, SocketEvents } from "../../runtime/platform/tcp.ts";
import { MeshProxy } from "../../runtime/server.ts";
import { createHttp1Client } from "../../runtime/upstream/http1/index.ts";
import { FILTERS, type FilterUse } from "../scenarios.ts";

const ROOT = join(import.meta.dir, "..", "..");

const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const REQUESTS = Number(env.REQUESTS ?? 50_000);
const ROUNDS = Number(env.ROUNDS ?? 5);
const ROUTE_EXTRA = env.ROUTE_EXTRA ?? "";
const chain: FilterUse[] = (env.FILTERS ?? "")
  .split(",")
  .filter((k) => k !== "")
  .map((k) => {
    const f = (FILTERS as Record<string, FilterUse>)[k];
    if (f === undefined) throw new Error(`FILTERS: no filter ${k}; one of ${Object.keys(FILTERS).join(", ")}`);
    return f;
  });
const extraHeaders = chain.flatMap((f) => Object.entries(f.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`)).join("");

const encoder = new TextEncoder();
const REQUEST = encoder.encode(`GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n${extraHeaders}\r\n`);
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

// The upstream: every write of a request head is answered at once (on the next microtask, as a
// socket read would come later), with one fixed response.
const client = createHttp1Client({
  connect: async (_host, _port, events: SocketEvents) => memorySocket(() => queueMicrotask(() => events.onData(RESPONSE.slice()))),
});

// The downstream: one connection; the test drives it.
let accept: Parameters<ListenFn>[2] | null = null;
const listen: ListenFn = (_host, _port, fn) => {
  accept = fn;
  return { port: 1, stop() {} };
};

const log = createLogger({ level: "error", sink: () => {} });
const proxy = new MeshProxy({
  log,
  client,
  listen,
  filterHost: async (metrics) => {
    const { createFilterHost } = await import("../../runtime/wasm/host.ts");
    return createFilterHost({ configDir: ROOT, log, metrics, watch: false });
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

async function run(n: number): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    await new Promise<void>((resolve) => {
      answered = resolve;
      events.onData(REQUEST.slice());
    });
  }
  return ((performance.now() - started) * 1000) / n;
}

await run(REQUESTS); // warm-up: JIT tiers
const results: number[] = [];
for (let r = 0; r < ROUNDS; r++) results.push(await run(REQUESTS));
const inOrder = results.map((x) => x.toFixed(2)).join(", ");
results.sort((a, b) => a - b);
console.log(`proxy path${chain.length > 0 ? ` with ${chain.map((f) => f.name).join(" > ")}` : ""}, in-memory sockets: median ${results[Math.floor(ROUNDS / 2)]!.toFixed(2)} us/request (rounds in order: ${inOrder}; rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB)`);
await proxy.shutdown(0);
