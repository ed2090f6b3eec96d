// The contract between the proxy core and the WebAssembly filter host: what the proxy calls, in order.
import type { Config } from "../config/schema.ts";
import type { Logger } from "../observability/log.ts";
import type { Registry } from "../observability/metrics.ts";
import type { RequestContext } from "../proxy/context.ts";
import type { FilterHeaders } from "../proxy/filter-headers.ts";
import type { HeaderList } from "../upstream/types.ts";

export type Phase = "request" | "response";

/**
 * Why a filter call failed. Stable strings: they are the `reason` label of
 * mesh_filter_failures_total and appear in logs.
 * - `trap`: the filter trapped (unreachable, out-of-bounds access, abort(), a failed assert).
 * - `cpu_budget`: it used up its CPU budget (cpuBudgetMs) and was stopped.
 * - `memory`: it needed more linear memory than memoryLimitMb.
 * - `protocol`: it broke the ABI (bad action code, bad pointer, bad status).
 * - `unavailable`: no healthy instance was ready (its replacement is still starting).
 */
export type FailureReason = "trap" | "cpu_budget" | "memory" | "protocol" | "unavailable";

export type ContinueOutcome = { kind: "continue" };
export type RespondOutcome = {
  kind: "respond";
  status: number;
  headers: HeaderList;
  body: Uint8Array<ArrayBuffer>;
  /** A filter earlier in the chain asked for a delay: wait this long before answering. */
  delayMs?: number;
};
export type FailOutcome = { kind: "fail"; filter: string; phase: Phase; reason: FailureReason; message: string };

/** What the proxy does after the request phase. */
export type RequestOutcome =
  | ContinueOutcome
  | RespondOutcome
  /** Wait `ms`, then forward (every filter already ran). */
  | { kind: "delay"; ms: number }
  /** A fail-closed filter failed: answer 500, `x-mesh-error: filter_failed` (see filterFailure()). */
  | FailOutcome;

/** What the proxy does after the response phase. */
export type ResponseOutcome =
  | ContinueOutcome
  /** Replace the upstream response with this one. */
  | RespondOutcome
  /**
   * Discard this response and send the request again after `delayMs`, as ctx now stands (headers,
   * target, perTryTimeoutMs). Only when ctx.replayable; the proxy caps attempts at 10 and the route timeout.
   */
  | { kind: "retry"; delayMs: number }
  | FailOutcome;

/**
 * The filters of one route, in config order. Get it once per request with FilterHost.chain() and use
 * the same object for both phases: a hot swap builds a new chain, so a request that started on the
 * old modules finishes on them.
 */
export interface FilterChain {
  readonly routeName: string;
  /**
   * Largest request body, in bytes, any filter in the chain asked to see (capped by each filter's
   * maxBodyBytes); 0 when none did. The proxy buffers up to this many bytes before onRequest and
   * passes them as `body`. A longer body is passed as null: filters never see part of a body.
   */
  readonly wantsBody: number;
  /** Whether any filter registered a response phase. When false the proxy need not call onResponse. */
  readonly hasResponsePhase: boolean;

  /**
   * Request phase. Runs after routing, before the upstream is chosen. Each filter with a request
   * handler runs once, in chain order, synchronously. Filters read the request and change
   * `ctx.headers` and `ctx.target` in place.
   *
   * Returns `continue` (forward), `delay` (wait, then forward), `respond` (send this response; the
   * remaining filters and the upstream are skipped) or `fail` (a fail-closed filter failed).
   * A fail-open filter that fails is skipped and the chain goes on.
   */
  onRequest(ctx: RequestContext, body: Uint8Array | null): RequestOutcome;

  /**
   * Response phase, once per upstream attempt. Runs when the upstream's response head arrives (or,
   * when the attempt got none, with a synthetic error response and ctx.upstreamError set), before it is sent downstream;
   * filters run in reverse chain order (the last filter to see the request is the first to see the
   * response). `res.headers` is changed in place.
   *
   * Returns `continue`, `respond` (replace the response), `retry` (send the request again after a
   * delay) or `fail`.
   */
  onResponse(ctx: RequestContext, res: { status: number; headers: FilterHeaders }): ResponseOutcome;
}

export type LoadResult = { ok: true } | { ok: false; error: string };

/** Runs the filter modules of every route. One per proxy process. */
export interface FilterHost {
  /**
   * Prepares the chains of every route of `config`: loads and compiles the modules it names (from
   * the filterDir, or loaded earlier with loadModule), starts an instance per filter and runs its
   * config hook. Filters whose route, name and module are unchanged keep their instance and state and
   * only have the config hook run again. All or nothing: resolves with [] once the new chains serve,
   * or with errors that name the field (`routes[1].filters[0].module: no module "auth" in /etc/mesh/filters`)
   * and change nothing.
   */
  applyConfig(config: Config): Promise<string[]>;

  /** The chain of a route, or null when the route has no filters (the proxy then skips both phases). */
  chain(routeName: string): FilterChain | null;

  /**
   * Loads new code for module `name` (the admin API's upload). Compiles and meters it, checks its
   * exports and, when given, its SHA-256 (hex), then starts instances for every filter using it and
   * runs their config hooks, all off the request path; only when every one succeeded are the new
   * chains swapped in. On failure the old module keeps serving and the error says why.
   */
  loadModule(name: string, bytes: Uint8Array, sha256?: string): Promise<LoadResult>;

  /** Stops watching the filterDir and drops every instance. */
  close(): Promise<void>;
}

export interface FilterHostOptions {
  /** Directory of `<module>.wasm` files, watched for new and changed modules. Overrides config.filterDir. */
  filterDir?: string;
  /** Directory a relative config.filterDir is resolved against (the config file's); default the cwd. */
  configDir?: string;
  log: Logger;
  metrics: Registry;
  /** Watch the filterDir for changes (default true). */
  watch?: boolean;
}
