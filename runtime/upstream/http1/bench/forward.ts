// Measures the upstream client where it matters: a Bun.serve proxy forwarding to a Bun.serve upstream.
//
//   bun runtime/upstream/http1/bench/forward.ts            starts all three, prints the wrk commands
//   bun runtime/upstream/http1/bench/forward.ts upstream 9001
//   bun runtime/upstream/http1/bench/forward.ts fetch 9001 9002     (proxy using fetch())
//   bun runtime/upstream/http1/bench/forward.ts h1 9001 9003        (proxy using createHttp1Client)
//   bun runtime/upstream/http1/bench/forward.ts client h1 9001       (no proxy: 32 loops of requests for
//   bun runtime/upstream/http1/bench/forward.ts client fetch 9001     5 s; prints req/s and CPU per request)
//
// Each role runs in its own process so the proxies do not share a thread with the upstream. It lives
// here rather than in bench/ only because of who was editing what when it was written.
import type { HeaderList } from "../../types.ts";
import { createHttp1Client } from "../index.ts";

const BODY = "x".repeat(100);
const HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]);
const SERVE = { hostname: "127.0.0.1", maxRequestBodySize: 4 * 1024 ** 3, idleTimeout: 120 } as const;

function requestHeaders(req: Request): HeaderList {
  const headers: HeaderList = [];
  req.headers.forEach((value, name) => {
    if (!HOP.has(name) && name !== "content-length") headers.push([name, value]);
  });
  return headers;
}

function upstream(port: number): void {
  Bun.serve({ ...SERVE, port, fetch: () => new Response(BODY) });
}

function fetchProxy(up: number, port: number): void {
  Bun.serve({
    ...SERVE,
    port,
    async fetch(req) {
      const url = req.url;
      const res = await fetch(`http://127.0.0.1:${up}${url.slice(url.indexOf("/", 8))}`, {
        method: req.method,
        headers: req.headers,
        body: req.body,
      });
      return new Response(res.body, { status: res.status, headers: res.headers });
    },
  });
}

function h1Proxy(up: number, port: number): void {
  const client = createHttp1Client();
  const endpoint = { host: "127.0.0.1", port: up, key: `127.0.0.1:${up}`, weight: 1 };
  Bun.serve({
    ...SERVE,
    port,
    async fetch(req) {
      const url = req.url;
      const length = req.headers.get("content-length");
      const res = await client.request(
        endpoint,
        {
          method: req.method,
          target: url.slice(url.indexOf("/", 8)),
          headers: requestHeaders(req),
          body: req.body,
          bodyLength: length === null ? null : Number(length),
        },
        { connectTimeoutMs: 1000 },
      );
      const headers = res.headers.filter(([name]) => !HOP.has(name));
      return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
    },
  });
}

/** The client alone: 32 concurrent request loops, body read to the end, CPU per request from the process. */
async function clientOnly(kind: string, up: number): Promise<void> {
  const client = createHttp1Client();
  const endpoint = { host: "127.0.0.1", port: up, key: `127.0.0.1:${up}`, weight: 1 };
  const url = `http://127.0.0.1:${up}/`;
  const end = performance.now() + 5000;
  let done = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (performance.now() < end) {
        if (kind === "fetch") {
          await (await fetch(url)).arrayBuffer();
        } else {
          const res = await client.request(endpoint, { method: "GET", target: "/", headers: [], body: null, bodyLength: null }, { connectTimeoutMs: 1000 });
          await new Response(res.body).arrayBuffer();
        }
        done++;
      }
    }),
  );
  const used = process.cpuUsage(cpu);
  const secs = (performance.now() - started) / 1000;
  console.log(`${kind}: ${Math.round(done / secs)} req/s, user ${(used.user / done).toFixed(2)} us/req, sys ${(used.system / done).toFixed(2)} us/req`);
  client.close();
}

const [role, a, b] = process.argv.slice(2);
if (role === "upstream") upstream(Number(a));
else if (role === "client") await clientOnly(a, Number(b));
else if (role === "fetch") fetchProxy(Number(a), Number(b));
else if (role === "h1") h1Proxy(Number(a), Number(b));
else {
  const self = import.meta.path;
  const roles = [["upstream", "9001"], ["fetch", "9001", "9002"], ["h1", "9001", "9003"]];
  const procs = roles.map((args) => Bun.spawn([process.execPath, self, ...args], { stdout: "inherit", stderr: "inherit" }));
  console.log("upstream :9001, fetch proxy :9002, h1 proxy :9003. Then, each twice:");
  for (const port of [9001, 9002, 9003]) console.log(`  wrk -t1 -c32 -d5s http://127.0.0.1:${port}/`);
  process.on("SIGINT", () => {
    for (const p of procs) p.kill();
    process.exit(0);
  });
}
