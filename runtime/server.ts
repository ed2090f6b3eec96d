// The running proxy: holds the config, its listeners and the admin API; reloads atomically; drains on stop.
import { readFile } from "node:fs/promises";
import { createAdminApp } from "./admin/app.ts";
import { parseConfig, type LoadResult } from "./config/load.ts";
import type { Config } from "./config/schema.ts";
import { startIdleGc } from "./idle-gc.ts";
import { fetchHandler } from "./listener/fetch.ts";
import { createHttp1Server, nativeListenerAvailable, type ListenerLimits } from "./listener/http1/server.ts";
import type { ListenFn } from "./platform/tcp.ts";
import { createAccessLog, disabledAccessLog, type AccessLog } from "./observability/access-log.ts";
import type { Logger } from "./observability/log.ts";
import { Registry } from "./observability/metrics.ts";
import { platform, type ClientInfo, type Server } from "./platform/index.ts";
import { Proxy } from "./proxy/phases.ts";
import { buildSnapshot, type Snapshot } from "./proxy/snapshot.ts";
import { ProxyStats } from "./proxy/stats.ts";
import { createHttp1Client } from "./upstream/http1/index.ts";
import type { UpstreamClient } from "./upstream/types.ts";
import type { FilterHost } from "./wasm/types.ts";

export type ApplyResult = { ok: true; version: number } | { ok: false; errors: string[] };

export interface MeshProxyOptions {
  log: Logger;
  /**
   * Makes the filter host, the first time a config uses filters (or a module is uploaded): the
   * WebAssembly machinery costs memory and startup time a proxy without filters should not pay.
   * Omitted = filters are not supported.
   */
  filterHost?: (metrics: Registry) => Promise<FilterHost>;
  /** Override listener ports (tests use 0). */
  client?: UpstreamClient;
  /**
   * "native": our own HTTP/1.1 server (listener/http1), where the runtime has callback sockets (Bun).
   * "fetch": the runtime's fetch-style server with a Hono app (listener/fetch.ts). Default: native
   * where available, unless the environment says MESHWASM_LISTENER=fetch.
   */
  listener?: "native" | "fetch";
  /** The native listener's TCP listen (default: the platform's); bench/micro/proxy-path.ts passes in-memory sockets. */
  listen?: ListenFn;
}

interface RunningListener {
  key: string;
  server: Server;
}

export class MeshProxy {
  readonly registry = new Registry();
  readonly stats = new ProxyStats(this.registry);
  private readonly log: Logger;
  private readonly client: UpstreamClient;
  private readonly makeFilterHost: ((metrics: Registry) => Promise<FilterHost>) | null;
  private filters: FilterHost | null = null;
  private proxy: Proxy | null = null;
  private listeners: RunningListener[] = [];
  private admin: Server | null = null;
  private accessLog: AccessLog = disabledAccessLog;
  private version = 0;
  private draining = false;
  /** Serialises reloads: one applies at a time, in arrival order. */
  private applying: Promise<unknown> = Promise.resolve();
  private configPath: string | null = null;
  private readonly idleGc = startIdleGc({ served: () => this.proxy?.served ?? 0 });

  /** Which listener serves the data plane (see MeshProxyOptions.listener). */
  readonly listenerKind: "native" | "fetch";
  /** Limits the native listener reads; replaced (not mutated) by each config. */
  private listenerLimits: ListenerLimits = { maxHeadBytes: 16_384, idleTimeoutMs: 60_000, requestHeadersTimeoutMs: 10_000, requestBodyTimeoutMs: 60_000, tunnelIdleTimeoutMs: 300_000 };

  constructor(opts: MeshProxyOptions) {
    this.log = opts.log;
    this.client = opts.client ?? createHttp1Client();
    this.makeFilterHost = opts.filterHost ?? null;
    const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.MESHWASM_LISTENER;
    const wanted = opts.listener ?? (env === "fetch" ? "fetch" : "native");
    this.listenerKind = wanted === "native" && (nativeListenerAvailable || opts.listen !== undefined) ? "native" : "fetch";
    this.listenFn = opts.listen;
  }

  private readonly listenFn: ListenFn | undefined;

  private async filterHost(): Promise<FilterHost | null> {
    if (this.filters === null && this.makeFilterHost !== null) this.filters = await this.makeFilterHost(this.registry);
    return this.filters;
  }

  /** Load the config file and start serving. Throws ConfigStartError with every problem found. */
  async startFromFile(path: string): Promise<void> {
    this.configPath = path;
    const text = await readFile(path, "utf8");
    await this.startFromText(text, path);
  }

  async startFromText(text: string, source: string): Promise<void> {
    const r = await this.apply(parseConfig(text), source);
    if (!r.ok) throw new ConfigStartError(source, r.errors);
  }

  /** Re-read the config file (SIGHUP, POST /reload). A bad file leaves everything as it was. */
  reload(): Promise<ApplyResult> {
    if (this.configPath === null) return Promise.resolve({ ok: false, errors: ["(reload): this proxy was not started from a file; PUT /config instead"] });
    const path = this.configPath;
    return this.serialise(async () => {
      let text: string;
      try {
        text = await readFile(path, "utf8");
      } catch (err) {
        // Logged and counted like any other rejected reload.
        return this.applyNow({ ok: false, errors: [`(file): cannot read ${path}: ${(err as Error).message}`] }, path);
      }
      return this.applyNow(parseConfig(text), path);
    });
  }

  /** Replace the config with text from the admin API or a control plane. */
  replace(text: string, source: string): Promise<ApplyResult> {
    return this.serialise(() => this.applyNow(parseConfig(text), source));
  }

  private apply(parsed: LoadResult, source: string): Promise<ApplyResult> {
    return this.serialise(() => this.applyNow(parsed, source));
  }

  private serialise(fn: () => Promise<ApplyResult>): Promise<ApplyResult> {
    const next = this.applying.then(fn, fn);
    this.applying = next.catch(() => {});
    return next;
  }

  private async applyNow(parsed: LoadResult, source: string): Promise<ApplyResult> {
    const first = this.proxy === null;
    const result = await this.applyConfig(parsed, source);
    if (!first) {
      this.stats.reloads.labels(result.ok ? "ok" : "rejected").inc();
      if (result.ok) this.log.info("config applied", { version: result.version, source });
      else this.log.warn("config rejected; the running config is unchanged", { source, errors: result.errors });
    }
    return result;
  }

  private async applyConfig(parsed: LoadResult, source: string): Promise<ApplyResult> {
    if (!parsed.ok) return parsed;
    const config = parsed.config;
    if (this.draining) return { ok: false, errors: ["(reload): the proxy is shutting down"] };
    // The admin listener is where reloads come from: it is set at start and a reload cannot move it
    // (as with Envoy's bootstrap admin). Refused rather than half-applied, so /config never shows
    // an admin address nobody listens on.
    const running = this.proxy?.current().config.admin;
    if (running !== undefined && JSON.stringify(running) !== JSON.stringify(config.admin)) {
      return {
        ok: false,
        errors: [`admin: the admin listener cannot change at run time (running ${JSON.stringify(running)}, new ${JSON.stringify(config.admin)}); restart the proxy to change it`],
      };
    }

    // Listeners: bind the new ones before anything switches, so a busy port rejects the whole config.
    const wanted = new Map(config.listeners.map((l) => [`${l.address}:${l.port}`, l]));
    const started: RunningListener[] = [];
    const previousLimits = this.listenerLimits;
    const l = config.limits;
    this.listenerLimits = {
      maxHeadBytes: l.maxRequestHeaderBytes,
      idleTimeoutMs: l.idleTimeoutMs,
      requestHeadersTimeoutMs: l.requestHeadersTimeoutMs,
      requestBodyTimeoutMs: l.requestBodyTimeoutMs,
      tunnelIdleTimeoutMs: l.tunnelIdleTimeoutMs,
    };
    const unbind = () => {
      for (const s of started) void s.server.stop(false);
      this.listenerLimits = previousLimits;
    };
    for (const [key, l] of wanted) {
      if (this.listeners.some((r) => r.key === key)) continue;
      try {
        const server = this.listen(l.address, l.port);
        started.push({ key, server });
      } catch (err) {
        unbind();
        const i = config.listeners.indexOf(l);
        return { ok: false, errors: [`listeners[${i}]: cannot listen on ${key}: ${(err as Error).message}`] };
      }
    }

    // Filters: compiling modules is the slow, fallible part; the host changes nothing unless all succeed.
    const usesFilters = config.filterDir !== undefined || config.routes.some((r) => r.filters.length > 0);
    const host = usesFilters || this.filters !== null ? await this.filterHost() : null;
    if (host !== null) {
      const errors = await host.applyConfig(config);
      if (errors.length > 0) {
        unbind();
        return { ok: false, errors };
      }
    } else if (usesFilters) {
      unbind();
      return { ok: false, errors: ["routes: filters are configured but this proxy has no filter host"] };
    }

    // Commit: one reference swap. In-flight requests finish on the snapshot they hold.
    const previous = this.proxy?.current();
    this.version++;
    const snapshot = buildSnapshot(config, { version: this.version, source }, (route) => this.filters?.chain(route) ?? null, previous);
    this.swapAccessLog(config);
    if (this.proxy === null) {
      this.proxy = new Proxy(snapshot, { client: this.client, stats: this.stats, accessLog: this.accessLog, log: this.log, scheme: "http" });
    } else {
      this.proxy.setSnapshot(snapshot);
    }
    this.stats.configVersion.set(this.version);

    const removed = this.listeners.filter((r) => !wanted.has(r.key));
    this.listeners = [...this.listeners.filter((r) => wanted.has(r.key)), ...started];
    for (const r of removed) void r.server.stop(true);
    for (const s of started) this.log.info("listening", { address: s.server.hostname, port: s.server.port, listener: this.listenerKind });

    if (this.admin === null && config.admin.enabled) this.admin = this.startAdmin(config);
    return { ok: true, version: this.version };
  }

  private swapAccessLog(config: Config): void {
    const previous = this.accessLog;
    this.accessLog = config.accessLog.enabled ? createAccessLog(config.accessLog.path, (s) => platform.writeStdout(s)) : disabledAccessLog;
    previous.flush();
    this.proxy?.setAccessLog(this.accessLog);
  }

  /** A data-plane listener; every one runs the same request phases (proxy/phases.ts). */
  private listen(hostname: string, port: number): Server {
    if (this.listenerKind === "native") {
      return createHttp1Server({
        hostname,
        port,
        handler: (req, reply) => this.proxy!.handle(req, reply),
        refuse: (err, client, head) => this.proxy!.refuse(err, client, head),
        limits: () => this.listenerLimits,
        listen: this.listenFn,
      });
    }
    return platform.serve({ hostname, port, handler: this.fetchDataPlane });
  }

  private readonly fetchDataPlane = fetchHandler(
    () => this.proxy!.handle,
    () => (err, client, head) => this.proxy!.refuse(err, client, head),
  );

  /** Requests being handled right now. */
  inFlight(): number {
    return this.proxy?.active() ?? 0;
  }

  private startAdmin(config: Config): Server {
    const app = createAdminApp({
      ready: () => !this.draining && this.proxy !== null,
      config: () => {
        const s = this.proxy!.current();
        return { version: s.version, source: s.source, loadedAt: s.loadedAt, runtime: `${platform.name} ${platform.version}`, listener: this.listenerKind, config: s.config };
      },
      metrics: () => {
        this.stats.inFlight.set(this.inFlight());
        return this.registry.render();
      },
      reload: () => this.reload(),
      replace: (text) => this.replace(text, "admin"),
      loadFilter: async (name, bytes, sha) => {
        const host = await this.filterHost();
        if (host === null) return { ok: false, error: "this proxy has no filter host" };
        return host.loadModule(name, bytes, sha ?? undefined);
      },
    }, { loopbackOnly: isLoopbackAddress(config.admin.address) });
    const server = platform.serve({ hostname: config.admin.address, port: config.admin.port, handler: (req) => app.fetch(req) });
    this.log.info("admin listening", { address: config.admin.address, port: server.port });
    return server;
  }

  /** Ports actually bound (tests listen on port 0). */
  ports(): { listeners: number[]; admin: number | null } {
    return { listeners: this.listeners.map((l) => l.server.port), admin: this.admin?.port ?? null };
  }

  /**
   * Graceful stop: refuse new connections, let in-flight requests finish for up to `drainMs`, then
   * close whatever is left. /ready answers 503 from the start so load balancers stop sending.
   */
  async shutdown(drainMs: number = this.proxy?.current().config.drainTimeoutMs ?? 0): Promise<{ drained: boolean }> {
    this.draining = true;
    const graceful = Promise.all(this.listeners.map((l) => l.server.stop(true)));
    const deadline = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), drainMs));
    const outcome = await Promise.race([graceful.then(() => "drained" as const), deadline]);
    if (outcome === "timeout") await Promise.all(this.listeners.map((l) => l.server.stop(false)));
    this.accessLog.flush();
    this.idleGc.stop();
    await this.admin?.stop(false);
    await this.filters?.close();
    this.client.close();
    return { drained: outcome === "drained" };
  }
}

export class ConfigStartError extends Error {
  constructor(
    readonly source: string,
    readonly errors: string[],
  ) {
    super(`invalid config ${source}:\n  ${errors.join("\n  ")}`);
    this.name = "ConfigStartError";
  }
}

/** 127.0.0.0/8, ::1 and localhost: an admin API bound there is meant for this machine only. */
function isLoopbackAddress(address: string): boolean {
  return address === "localhost" || address === "::1" || address === "[::1]" || address.startsWith("127.");
}
