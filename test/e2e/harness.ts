// Shared pieces for end-to-end tests: the proxy as a real process or in-process, upstreams, raw sockets.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildFilter } from "../../control/cli/filter-build.ts";
import { createLogger } from "../../runtime/observability/log.ts";
import { MeshProxy } from "../../runtime/server.ts";

export const ROOT = join(import.meta.dir, "..", "..");
export const BUN = join(ROOT, "node_modules", ".bin", "bun");
export const DENO = join(ROOT, "node_modules", ".bin", "deno");

export function tempDir(prefix = "mesh-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A minimal config around one cluster; `extra` is appended YAML (more routes need `routes:` replaced). */
export function simpleConfig(upstreamPort: number, opts: { routeExtra?: string; top?: string; clusterExtra?: string } = {}): string {
  return `
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
${opts.top ?? ""}
routes:
  - name: main
    cluster: up
${opts.routeExtra ?? ""}
clusters:
  - name: up
    endpoints: ["127.0.0.1:${upstreamPort}"]
${opts.clusterExtra ?? ""}
`;
}

/** Builds standard filters (filters/<name>) into filters/dist, where configs with `filterDir: filters/dist` find them. */
export async function buildStandardFilters(...names: string[]): Promise<void> {
  for (const name of names) await buildFilter(join(ROOT, "filters", name), { outDir: join(ROOT, "filters", "dist"), cache: true });
}

export interface InProcessProxy {
  proxy: MeshProxy;
  port: number;
  admin: number;
  url: string;
  stop(): Promise<void>;
}

/**
 * The proxy in this process: fast to start, for behaviour that needs no signals or exit codes.
 * Filters resolve `filterDir` against the repository root (so `filterDir: filters/dist` finds the
 * modules `npm run build:filters` wrote).
 */
export async function startInProcess(yaml: string, opts: { logs?: string[]; listener?: "native" | "fetch" } = {}): Promise<InProcessProxy> {
  const lines = opts.logs ?? [];
  const log = createLogger({ level: "warn", sink: (l) => lines.push(l) });
  const proxy = new MeshProxy({
    log,
    listener: opts.listener,
    filterHost: async (metrics) => {
      const { createFilterHost } = await import("../../runtime/wasm/host.ts");
      return createFilterHost({ configDir: ROOT, log, metrics, watch: false });
    },
  });
  await proxy.startFromText(yaml, "test");
  const ports = proxy.ports();
  return {
    proxy,
    port: ports.listeners[0]!,
    admin: ports.admin ?? 0,
    url: `http://127.0.0.1:${ports.listeners[0]}`,
    stop: async () => {
      await proxy.shutdown(0);
    },
  };
}

export interface ProxyProcess {
  child: ChildProcess;
  port: number;
  admin: number;
  url: string;
  stdout: string[];
  stderr: string[];
  exited: Promise<number | null>;
  /** Resolves with the first stderr log line whose msg matches. */
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  kill(signal?: NodeJS.Signals): void;
}

/** The proxy as a real process (`bun runtime/main.ts --config FILE`, or Deno), ports read from its log. */
export async function startProcess(
  yaml: string,
  opts: { runtime?: "bun" | "deno"; configPath?: string; env?: Record<string, string> } = {},
): Promise<ProxyProcess> {
  const path = opts.configPath ?? join(tempDir(), "config.yaml");
  writeFileSync(path, yaml);
  const args =
    opts.runtime === "deno"
      ? [DENO, ["run", "-A", "--no-check", join(ROOT, "runtime/main.ts"), "--config", path]]
      : [BUN, ["--max-http-header-size=1048576", join(ROOT, "runtime/main.ts"), "--config", path]];
  const child = spawn(args[0] as string, args[1] as string[], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...opts.env } });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters: { msg: string; resolve: (v: Record<string, unknown>) => void }[] = [];
  const seen: Record<string, unknown>[] = [];
  const onLine = (line: string) => {
    stderr.push(line);
    try {
      const obj = JSON.parse(line) as Record<string, unknown>;
      seen.push(obj);
      for (const w of [...waiters]) if (obj.msg === w.msg) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(obj);
      }
    } catch {
      // not a log line (a config error printed for humans)
    }
  };
  let errBuf = "";
  child.stderr!.on("data", (d: Buffer) => {
    errBuf += d.toString();
    let i: number;
    while ((i = errBuf.indexOf("\n")) !== -1) {
      onLine(errBuf.slice(0, i));
      errBuf = errBuf.slice(i + 1);
    }
  });
  let outBuf = "";
  child.stdout!.on("data", (d: Buffer) => {
    outBuf += d.toString();
    let i: number;
    while ((i = outBuf.indexOf("\n")) !== -1) {
      stdout.push(outBuf.slice(0, i));
      outBuf = outBuf.slice(i + 1);
    }
  });
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  const waitForLog = (msg: string, timeoutMs = 15000) => {
    const hit = seen.find((o) => o.msg === msg);
    if (hit) return Promise.resolve(hit);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no "${msg}" log line in ${timeoutMs} ms; stderr:\n${stderr.join("\n")}`)), timeoutMs);
      waiters.push({ msg, resolve: (v) => (clearTimeout(t), resolve(v)) });
      void exited.then((code) => {
        clearTimeout(t);
        reject(new Error(`proxy exited with ${code} before "${msg}"; stderr:\n${stderr.join("\n")}`));
      });
    });
  };
  const result: ProxyProcess = {
    child,
    port: 0,
    admin: 0,
    url: "",
    stdout,
    stderr,
    exited,
    waitForLog,
    kill: (signal = "SIGTERM") => {
      child.kill(signal);
    },
  };
  return result;
}

/** Start a proxy process and wait until both listeners are up. */
export async function startReadyProcess(yaml: string, opts: Parameters<typeof startProcess>[1] = {}): Promise<ProxyProcess> {
  const p = await startProcess(yaml, opts);
  const [l, a] = await Promise.all([p.waitForLog("listening"), p.waitForLog("admin listening")]);
  p.port = l.port as number;
  p.admin = a.port as number;
  p.url = `http://127.0.0.1:${p.port}`;
  return p;
}

/** An upstream on a free port. */
export function upstream(fetch: (req: Request) => Response | Promise<Response>) {
  const s = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch, maxRequestBodySize: Number.MAX_SAFE_INTEGER, idleTimeout: 60 });
  return { port: s.port!, stop: () => s.stop(true), server: s };
}

/** An upstream that echoes the request it saw as JSON: method, target, headers (as pairs). */
export function echoUpstream() {
  return upstream(async (req) => {
    const url = req.url;
    const target = url.slice(url.indexOf("/", url.indexOf("//") + 2));
    const headers: [string, string][] = [];
    req.headers.forEach((v, k) => headers.push([k, v]));
    const body = req.body ? await req.text() : "";
    return Response.json({ method: req.method, target, headers, body });
  });
}

/** A raw TCP upstream: `onConnection` gets every socket; count them and script replies. */
export function rawUpstream(onConnection: (socket: net.Socket) => void) {
  const server = net.createServer(onConnection);
  return new Promise<{ port: number; server: net.Server; stop: () => void }>((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({ port, server, stop: () => server.close() });
    });
  });
}

/**
 * Calls `onHead(head)` for every request head read from `socket` (the text up to the empty line,
 * without it). Bodies are not parsed: for upstreams that only get bodiless requests. Returning false
 * stops reading further heads from that chunk (e.g. after destroying the socket).
 */
export function eachRequestHead(socket: net.Socket, onHead: (head: string) => boolean | void): void {
  socket.on("error", () => {});
  let buf = "";
  socket.on("data", (d: Buffer) => {
    buf += d.toString("latin1");
    let i: number;
    while ((i = buf.indexOf("\r\n\r\n")) !== -1) {
      const head = buf.slice(0, i);
      buf = buf.slice(i + 4);
      if (onHead(head) === false) return;
    }
  });
}

/**
 * Send raw bytes and collect everything the server sends until it closes or `idleMs` passes without data.
 */
export function rawRequest(port: number, data: string | Uint8Array, idleMs = 500): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(data));
    let out = "";
    let timer = setTimeout(() => socket.destroy(), idleMs);
    socket.on("data", (d) => {
      out += d.toString("latin1");
      clearTimeout(timer);
      timer = setTimeout(() => socket.destroy(), idleMs);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(out);
    });
    // A reset is an answer too (the proxy aborting a broken stream): return what arrived before it.
    socket.on("error", (err: NodeJS.ErrnoException) => (err.code === "ECONNRESET" ? resolve(out) : reject(err)));
  });
}

/** A free TCP port with nothing listening (for connection-refused tests). */
export async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export function readProcStatus(pid: number, field: "VmRSS" | "VmHWM"): number {
  const text = require("node:fs").readFileSync(`/proc/${pid}/status`, "utf8") as string;
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
