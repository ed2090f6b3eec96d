// Runs compiled filters without a proxy: feed requests and responses, read outcomes, logs and metrics.
// `meshctl filter test` and the filters' own tests use it; so does the host's test suite.
import { readFileSync } from "node:fs";
import { validateConfig } from "../config/load.ts";
import type { ConfigInput } from "../config/schema.ts";
import { type ErrorCode, statusOf } from "../errors.ts";
import { createLogger } from "../observability/log.ts";
import { Registry } from "../observability/metrics.ts";
import type { RequestContext } from "../proxy/context.ts";
import { ListHeaders } from "../proxy/filter-headers.ts";
import { MAX_ATTEMPTS } from "../proxy/phases.ts";
import type { HeaderList } from "../upstream/types.ts";
import type { Chain } from "./chain.ts";
import { createFilterHost } from "./host.ts";
import type { FilterHost, LoadResult, RequestOutcome, ResponseOutcome } from "./types.ts";

export interface HarnessFilter {
  /** The module: a path to a .wasm file or its bytes. */
  wasm: string | Uint8Array;
  /** Filter name (metrics label, logs); defaults to the module name. */
  name?: string;
  /** Module name; defaults to the file's base name, or "filter" for bytes. */
  module?: string;
  config?: unknown;
  failurePolicy?: "closed" | "open";
  cpuBudgetMs?: number;
  memoryLimitMb?: number;
  maxBodyBytes?: number;
}

export type HeadersInit = Record<string, string> | HeaderList;

export interface TestRequest {
  method?: string;
  /** Path and query. Default "/". */
  path?: string;
  headers?: HeadersInit;
  body?: string | Uint8Array | null;
  clientAddress?: string;
  peerIdentity?: string | null;
  requestId?: string;
}

export interface TestResponse {
  status?: number;
  headers?: HeadersInit;
  /**
   * The attempt got no response: the x-mesh-error code (`upstream_refused`, `upstream_reset`...).
   * Like the proxy, the harness then shows the filter that error's status and an `x-mesh-error` header
   * unless `status` / `headers` say otherwise, and sets ctx.upstreamError.
   */
  upstreamError?: ErrorCode;
  /** Sets ctx.attempt before the response phase (the proxy counts attempts from 1). */
  attempt?: number;
}

export interface ExchangeResult {
  request: RequestResult;
  /** One entry per upstream attempt: the request as it went upstream and what the response phase returned. */
  attempts: { attempt: number; target: string; headers: HeaderList; response: ResponseResult }[];
  /** The delays of the retries the proxy would have made, ms. */
  delays: number[];
}

export interface RequestResult {
  outcome: RequestOutcome;
  /** The context after the filters ran: its headers and target as they would go upstream. */
  ctx: RequestContext;
  /** First value of a request header after the filters ran, or null. */
  header(name: string): string | null;
}

export interface ResponseResult {
  outcome: ResponseOutcome;
  headers: HeaderList;
  header(name: string): string | null;
}

export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

function toList(h: HeadersInit | undefined): HeaderList {
  if (!h) return [];
  if (Array.isArray(h)) return h.map(([n, v]) => [n.toLowerCase(), v]);
  return Object.entries(h).map(([n, v]) => [n.toLowerCase(), v]);
}

function first(list: HeaderList, name: string): string | null {
  const n = name.toLowerCase();
  for (const [k, v] of list) if (k === n) return v;
  return null;
}

const ROUTE = "test";
let nextId = 1;

/** A filter chain on one route ("test"), loaded from .wasm files, with a captured log and a metrics registry. */
export class FilterHarness {
  readonly host: FilterHost;
  readonly metrics = new Registry();
  readonly logs: LogLine[] = [];
  private filters: HarnessFilter[];
  private modules: { name: string; bytes: Uint8Array }[];

  private constructor(filters: HarnessFilter[], opts: { filterDir?: string; watch?: boolean }) {
    this.filters = filters;
    this.modules = filters.map((f) => {
      const bytes = typeof f.wasm === "string" ? new Uint8Array(readFileSync(f.wasm)) : f.wasm;
      const name = f.module ?? (typeof f.wasm === "string" ? f.wasm.replace(/^.*[\\/]/, "").replace(/\.wasm$/, "") : "filter");
      return { name, bytes };
    });
    const log = createLogger({ level: "debug", sink: (line) => void this.logs.push(JSON.parse(line)) });
    this.host = createFilterHost({ log, metrics: this.metrics, filterDir: opts.filterDir, watch: opts.watch ?? false });
  }

  /**
   * Loads filters into a chain, in order.
   *
   * @example
   * const h = await FilterHarness.create([{ wasm: "build/deny-path.wasm", config: { prefixes: ["/admin"] } }]);
   * expect(h.request({ path: "/admin/x" }).outcome.kind).toBe("respond");
   */
  static async create(filters: HarnessFilter[], opts: { filterDir?: string; watch?: boolean } = {}): Promise<FilterHarness> {
    const h = new FilterHarness(filters, opts);
    if (!opts.filterDir) {
      const seen = new Set<string>();
      for (const m of h.modules) {
        if (seen.has(m.name)) continue;
        seen.add(m.name);
        const r = await h.host.loadModule(m.name, m.bytes);
        if (!r.ok) throw new Error(r.error);
      }
    }
    const errors = await h.host.applyConfig(h.config(filters));
    if (errors.length > 0) throw new Error(`filters rejected:\n  ${errors.join("\n  ")}`);
    return h;
  }

  /** One filter. */
  static load(wasm: string | Uint8Array, opts: Omit<HarnessFilter, "wasm"> = {}): Promise<FilterHarness> {
    return FilterHarness.create([{ wasm, ...opts }]);
  }

  private config(filters: HarnessFilter[]) {
    const input: ConfigInput = {
      filterDir: undefined,
      routes: [
        {
          name: ROUTE,
          cluster: "test",
          filters: filters.map((f, i) => ({
            name: f.name ?? this.modules[i]!.name,
            module: this.modules[i]!.name,
            config: f.config ?? {},
            failurePolicy: f.failurePolicy,
            cpuBudgetMs: f.cpuBudgetMs,
            memoryLimitMb: f.memoryLimitMb,
            maxBodyBytes: f.maxBodyBytes,
          })),
        },
      ],
      clusters: [{ name: "test", endpoints: ["127.0.0.1:9"] }],
    };
    const r = validateConfig(input);
    if (!r.ok) throw new Error(`invalid filter settings:\n  ${r.errors.join("\n  ")}`);
    return r.config;
  }

  /** Re-applies the chain with new configs (one per filter, in order), like a proxy reload. Returns errors. */
  reconfigure(configs: unknown[]): Promise<string[]> {
    this.filters = this.filters.map((f, i) => ({ ...f, config: configs[i] ?? f.config }));
    return this.host.applyConfig(this.config(this.filters));
  }

  /** Hot-loads new code for a module, as the admin API does. */
  loadModule(name: string, bytes: Uint8Array, sha256?: string): Promise<LoadResult> {
    return this.host.loadModule(name, bytes, sha256);
  }

  /** The test route's chain (the host's own class, so tests can look at its filters). */
  get chain(): Chain {
    const c = this.host.chain(ROUTE);
    if (!c) throw new Error("the test route has no chain");
    return c as Chain;
  }

  /** Runs the request phase. */
  request(req: TestRequest = {}): RequestResult {
    const ctx: RequestContext = {
      requestId: req.requestId ?? `test-${nextId++}`,
      method: req.method ?? "GET",
      target: req.path ?? "/",
      headers: new ListHeaders(toList(req.headers)),
      clientAddress: req.clientAddress ?? "127.0.0.1",
      routeName: ROUTE,
      peerIdentity: req.peerIdentity ?? null,
      startedAt: performance.now(),
      perTryTimeoutMs: 0,
      attempt: 1,
      upstreamError: null,
      replayable: true,
    };
    const body = req.body === undefined || req.body === null ? null : typeof req.body === "string" ? new TextEncoder().encode(req.body) : req.body;
    const chain = this.chain;
    // As in the proxy: a body is replayable when the chain buffered it whole.
    const buffered = chain.wantsBody > 0 && body !== null && body.length <= chain.wantsBody;
    ctx.replayable = body === null || body.length === 0 || buffered;
    const outcome = chain.onRequest(ctx, buffered ? body : null);
    return { outcome, ctx, header: (name) => first(ctx.headers.list(), name) };
  }

  /** Runs the response phase, for the request of `after` (or a fresh GET /). */
  response(res: TestResponse = {}, after?: RequestResult): ResponseResult {
    const ctx = after?.ctx ?? this.request().ctx;
    const err = res.upstreamError ?? null;
    const headers = res.headers !== undefined || err === null ? toList(res.headers) : [["x-mesh-error", err] as [string, string]];
    if (res.attempt !== undefined) ctx.attempt = res.attempt;
    ctx.upstreamError = err;
    const outcome = this.chain.onResponse(ctx, { status: res.status ?? (err === null ? 200 : statusOf(err)), headers: new ListHeaders(headers) });
    return { outcome, headers, header: (name) => first(headers, name) };
  }

  /**
   * One request through the proxy's attempt loop, without sockets or timers: the request phase, then
   * for each attempt `upstream(attempt)` as the upstream's answer and the response phase, again while
   * the chain returns `retry` and the request is replayable, up to the proxy's 10 attempts.
   *
   * @example
   * const x = h.exchange({ method: "GET" }, (n) => (n < 3 ? { status: 503 } : { status: 200 }));
   * expect(x.attempts.map((a) => a.response.outcome.kind)).toEqual(["retry", "retry", "continue"]);
   */
  exchange(req: TestRequest, upstream: (attempt: number) => TestResponse): ExchangeResult {
    const request = this.request(req);
    const result: ExchangeResult = { request, attempts: [], delays: [] };
    if (request.outcome.kind === "respond" || request.outcome.kind === "fail") return result;
    const ctx = request.ctx;
    for (;;) {
      const sent = { attempt: ctx.attempt, target: ctx.target, headers: ctx.headers.list().map(([n, v]) => [n, v] as [string, string]) };
      const response = this.response({ ...upstream(ctx.attempt), attempt: ctx.attempt }, request);
      result.attempts.push({ ...sent, response });
      const out = response.outcome;
      if (out.kind !== "retry" || !ctx.replayable || ctx.attempt >= MAX_ATTEMPTS) return result;
      result.delays.push(out.delayMs);
      ctx.attempt++;
    }
  }

  /** The Prometheus text of this harness's registry. */
  metricsText(): string {
    return this.metrics.render();
  }

  close(): Promise<void> {
    return this.host.close();
  }
}

/** Shorthand for FilterHarness.load. */
export const loadFilter = FilterHarness.load;
export const createHarness = FilterHarness.create;
