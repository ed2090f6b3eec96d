// A stand-in for runtime/main.ts that keeps the proxy's outside contract (--config FILE, the
// listener, admin /ready, GET /config with a version, POST /reload, SIGHUP) with none of its
// features. It lets the harness test its meshwasm, reload and hot-swap paths before the proxy exists:
//
//   BENCH_PROXY_MAIN=bench/testdata/stand-in-proxy.ts bun bench/run.ts --quick
//
// Runs on Bun and on Deno.
import { readFileSync } from "node:fs";
import { parse } from "yaml";

declare const Deno: {
  serve(opts: { hostname: string; port: number; onListen?: () => void }, handler: (req: Request) => Response | Promise<Response>): unknown;
};

type Handler = (req: Request) => Response | Promise<Response>;

function serve(hostname: string, port: number, fetch: Handler): void {
  if (typeof Bun !== "undefined") Bun.serve({ hostname, port, fetch, idleTimeout: 120 });
  else Deno.serve({ hostname, port, onListen() {} }, fetch);
}

const file = process.argv[process.argv.indexOf("--config") + 1];
interface StandInConfig {
  listeners: Array<{ port: number; address?: string }>;
  admin: { port: number; address?: string };
  clusters: Array<{ endpoints: string[] }>;
}
let config = parse(readFileSync(file, "utf8")) as StandInConfig;
let version = 1;

function reload(): void {
  config = parse(readFileSync(file, "utf8")) as StandInConfig;
  version++;
}
process.on("SIGHUP", reload);

const listener = config.listeners[0];
serve(listener.address ?? "127.0.0.1", listener.port, (req) => {
  const url = req.url;
  return fetch(`http://${config.clusters[0].endpoints[0]}${url.slice(url.indexOf("/", 8))}`, {
    method: req.method,
    headers: req.headers,
    body: req.body,
    redirect: "manual",
  });
});

serve(config.admin.address ?? "127.0.0.1", config.admin.port, (req) => {
  const path = new URL(req.url).pathname;
  if (path === "/ready") return new Response("ready");
  if (path === "/config") return Response.json({ version, source: file });
  if (path === "/reload" && req.method === "POST") {
    reload();
    return Response.json({ version });
  }
  return new Response("not found", { status: 404 });
});
