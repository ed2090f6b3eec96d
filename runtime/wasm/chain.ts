// A route's filter chain, and one filter in it: its instances, budget, failure policy and replacement.
import type { FilterRefConfig } from "../config/schema.ts";
import type { Logger } from "../observability/log.ts";
import type { Registry } from "../observability/metrics.ts";
import type { RequestContext } from "../proxy/context.ts";
import type { FilterHeaders } from "../proxy/filter-headers.ts";
import type { HeaderList } from "../upstream/types.ts";
import * as abi from "./abi.ts";
import type { SyncCrypto } from "./crypto.ts";
import type { Metering } from "./fuel.ts";
import { BudgetExceeded, Guest, GuestAbort, GuestFault } from "./guest.ts";
import type { ModuleEntry } from "./module.ts";
import type { FailOutcome, FailureReason, FilterChain, Phase, RequestOutcome, RespondOutcome, ResponseOutcome } from "./types.ts";

const CONTINUE = Object.freeze({ kind: "continue" as const });
const EMPTY = new Uint8Array(0);
const PAGE = 65536;
/** Budget for a module's start function and config hook, which may parse a large config. */
const MIN_INIT_BUDGET_MS = 100;
/** Wait before trying again to start an instance after a failed start. */
const REFILL_RETRY_MS = 1000;

/** Creates a Wasm instance of `module` wired to `guest`'s host functions (host.ts does it with Extism). */
export type Instantiate = (module: WebAssembly.Module, guest: Guest) => Promise<void>;

export interface RuntimeDeps {
  log: Logger;
  metrics: Registry;
  crypto: SyncCrypto;
  metering: Metering;
  instantiate: Instantiate;
}

/** Why a filter could not start: `config` when its config hook rejected the config. */
export class InitError extends Error {
  override name = "InitError";
  constructor(readonly field: "config" | "module", message: string) {
    super(message);
  }
}

function classify(err: unknown, g: Guest, maxPages: number): { reason: FailureReason; message: string } {
  if (err instanceof GuestAbort) {
    const memory = /allocation too large|out of memory/i.test(err.message);
    return { reason: memory ? "memory" : "trap", message: err.message };
  }
  if (err instanceof GuestFault) return { reason: "protocol", message: err.message };
  if (err instanceof BudgetExceeded) return { reason: "cpu_budget", message: err.message };
  if (g.fuelExhausted()) return { reason: "cpu_budget", message: "ran out of fuel (CPU budget)" };
  const message = err instanceof Error ? err.message : String(err);
  // The allocator traps with `unreachable` when memory.grow fails at the cap. Its first attempt
  // doubles memory, so a failure with more than half the cap in use is the cap, not a bug.
  if (err instanceof WebAssembly.RuntimeError && /unreachable/i.test(message) && maxPages > 0 && (g.memoryBytes() / PAGE) * 2 > maxPages) {
    return { reason: "memory", message: `needed more than its memory limit (${g.memoryBytes() / PAGE} of ${maxPages} pages in use)` };
  }
  return { reason: "trap", message };
}

/**
 * One filter of one route. Holds the live instance and a warm spare: when the live one fails, the
 * spare takes over synchronously and a new spare starts in the background, so a trap costs the
 * failing request only.
 */
export class FilterRuntime {
  readonly name: string;
  readonly module: ModuleEntry;
  readonly memoryLimitMb: number;
  ref: FilterRefConfig;
  configJson: Uint8Array;
  private configVersion = 0;
  private guest: Guest | null = null;
  private spare: Guest | null = null;
  private guestVersion = new WeakMap<Guest, number>();
  private building = false;
  private retired = false;
  phases = 0;
  private sdkBodyLimit = 0;
  private fuel = 0n;
  private readonly log: Logger;
  private readonly deps: RuntimeDeps;
  private callsRequest: { inc(): void } | null = null;
  private callsResponse: { inc(): void } | null = null;
  private readonly failures = new Map<string, { inc(): void }>();

  private constructor(deps: RuntimeDeps, module: ModuleEntry, ref: FilterRefConfig, routeName: string) {
    this.deps = deps;
    this.module = module;
    this.name = ref.name;
    this.ref = ref;
    this.memoryLimitMb = ref.memoryLimitMb;
    this.configJson = new TextEncoder().encode(JSON.stringify(ref.config ?? {}));
    this.log = deps.log.child({ filter: ref.name, route: routeName, module: module.name });
    this.fuel = deps.metering.fuelFor(ref.cpuBudgetMs);
  }

  /** Starts the live instance and its spare, running the config hook on both. Throws InitError. */
  static async create(deps: RuntimeDeps, module: ModuleEntry, ref: FilterRefConfig, routeName: string): Promise<FilterRuntime> {
    const rt = new FilterRuntime(deps, module, ref, routeName);
    const started = await Promise.allSettled([rt.startGuest(), rt.startGuest()]);
    const failed = started.find((s) => s.status === "rejected");
    if (failed) {
      for (const s of started) if (s.status === "fulfilled") s.value.close();
      throw (failed as PromiseRejectedResult).reason;
    }
    const [live, spare] = started.map((s) => (s as PromiseFulfilledResult<Guest>).value) as [Guest, Guest];
    rt.guest = live;
    rt.spare = spare;
    rt.readInfo(live);
    return rt;
  }

  get maxPages(): number {
    return this.memoryLimitMb * 16;
  }

  /** Request body bytes this filter sees: what it asked for, capped by maxBodyBytes. */
  get wantsBody(): number {
    return Math.min(this.sdkBodyLimit, this.ref.maxBodyBytes);
  }

  private readInfo(g: Guest): void {
    this.phases = g.exports.mesh_phases();
    this.sdkBodyLimit = g.exports.mesh_body_limit();
  }

  private initBudget(): { fuel: bigint; ms: number } {
    const ms = Math.max(MIN_INIT_BUDGET_MS, this.ref.cpuBudgetMs * 10);
    return { fuel: this.deps.metering.fuelFor(ms), ms };
  }

  /** A new instance: instantiated, ABI-checked, started and configured with the current config. */
  private async startGuest(): Promise<Guest> {
    const compiled = await this.module.compiledFor(this.maxPages);
    const g = new Guest({ filterName: this.name, log: this.log, metrics: this.deps.metrics, crypto: this.deps.crypto });
    try {
      await this.deps.instantiate(compiled, g);
    } catch (err) {
      throw new InitError("module", `cannot instantiate module "${this.module.name}": ${(err as Error).message}`);
    }
    const budget = this.initBudget();
    try {
      g.begin(budget.fuel, budget.ms);
      const version = g.exports.mesh_abi_version();
      if (version !== abi.ABI_VERSION) throw new InitError("module", `module "${this.module.name}" speaks filter ABI ${version}; this host speaks ${abi.ABI_VERSION}`);
      g.begin(budget.fuel, budget.ms);
      g.exports.mesh_start();
      const err = this.configureGuest(g, this.configJson);
      if (err !== null) throw new InitError("config", err);
    } catch (err) {
      g.close();
      if (err instanceof InitError) throw err;
      const { reason, message } = classify(err, g, this.maxPages);
      throw new InitError("module", `module "${this.module.name}" failed to start (${reason}): ${message}`);
    } finally {
      g.end();
    }
    this.guestVersion.set(g, this.configVersion);
    return g;
  }

  private configureGuest(g: Guest, json: Uint8Array): string | null {
    const budget = this.initBudget();
    g.begin(budget.fuel, budget.ms);
    return g.configure(json);
  }

  /**
   * Runs the config hook with a new config on the live instance (state kept) and the spare.
   * Returns the filter's rejection message, or null when it took the config.
   */
  reconfigure(ref: FilterRefConfig): string | null {
    const json = new TextEncoder().encode(JSON.stringify(ref.config ?? {}));
    const g = this.guest;
    if (g !== null) {
      let err: string | null;
      try {
        err = this.configureGuest(g, json);
      } catch (e) {
        const { reason, message } = classify(e, g, this.maxPages);
        this.discard(g);
        return `config hook failed (${reason}): ${message}`;
      } finally {
        g.end();
      }
      if (err !== null) return err;
      this.readInfo(g);
    }
    this.configJson = json;
    this.configVersion++;
    if (g !== null) this.guestVersion.set(g, this.configVersion);
    const s = this.spare;
    if (s !== null) {
      this.spare = null;
      if (this.bringUpToDate(s)) this.spare = s;
      else this.refill();
    }
    return null;
  }

  /** Settings that need no new instance. Call after a successful reconfigure, or when only these changed. */
  updateSettings(ref: FilterRefConfig): void {
    this.ref = ref;
    this.fuel = this.deps.metering.fuelFor(ref.cpuBudgetMs);
  }

  /** Configures an instance made under an older config; false (and closed) when that fails. */
  private bringUpToDate(g: Guest): boolean {
    if (this.guestVersion.get(g) === this.configVersion) return true;
    try {
      const err = this.configureGuest(g, this.configJson);
      if (err === null) {
        this.guestVersion.set(g, this.configVersion);
        return true;
      }
      this.log.warn("spare instance rejected the current config", { err });
    } catch (e) {
      this.log.warn("spare instance failed its config hook", { err: (e as Error).message });
    } finally {
      g.end();
    }
    g.close();
    return false;
  }

  /** Stops refilling spares; the live instance stays for requests still holding this filter. */
  retire(): void {
    this.retired = true;
    this.spare?.close();
    this.spare = null;
  }

  // ---- the hot path ----

  request(ctx: RequestContext, body: Uint8Array | null): RequestOutcome | null {
    const g = this.guest;
    if (g === null) return this.unavailable("request");
    (this.callsRequest ??= this.callCounter("request")).inc();
    g.begin(this.fuel, this.ref.cpuBudgetMs);
    g.ctx = ctx;
    const limit = this.wantsBody;
    g.body = limit > 0 && body !== null && body.length <= limit ? body : null;
    let code: number;
    try {
      code = g.exports.mesh_on_request();
    } catch (err) {
      g.end();
      return this.failed("request", err, g);
    }
    g.end();
    if (code === abi.ACTION_CONTINUE) return null;
    const action = code & 3;
    if (action === abi.ACTION_RESPOND) return this.respondOutcome("request", g);
    if (action === abi.ACTION_DELAY) return { kind: "delay", ms: code >>> 2 };
    return this.failed("request", new GuestFault(`action ${action} is not allowed in the request phase`), g);
  }

  response(ctx: RequestContext, res: { status: number; headers: FilterHeaders }): ResponseOutcome | null {
    const g = this.guest;
    if (g === null) return this.unavailable("response");
    (this.callsResponse ??= this.callCounter("response")).inc();
    g.begin(this.fuel, this.ref.cpuBudgetMs);
    g.ctx = ctx;
    g.resHeaders = res.headers;
    let code: number;
    try {
      code = g.exports.mesh_on_response(res.status);
    } catch (err) {
      g.end();
      return this.failed("response", err, g);
    }
    g.end();
    if (code === abi.ACTION_CONTINUE) return null;
    const action = code & 3;
    if (action === abi.ACTION_RESPOND) return this.respondOutcome("response", g);
    if (action === abi.ACTION_RETRY) return { kind: "retry", delayMs: code >>> 2 };
    return this.failed("response", new GuestFault(`action ${action} is not allowed in the response phase`), g);
  }

  private respondOutcome(phase: Phase, g: Guest): RespondOutcome | FailOutcome | null {
    if (g.respondStatus === 0) return this.failed(phase, new GuestFault("returned respond without calling respond()"), g);
    return { kind: "respond", status: g.respondStatus, headers: g.respondHeaders ?? [], body: g.respondBody ?? EMPTY };
  }

  private callCounter(phase: Phase): { inc(): void } {
    return this.deps.metrics.counter("mesh_filter_calls_total", "Filter phase calls", ["filter", "phase"]).labels(this.name, phase);
  }

  private count(phase: Phase, reason: FailureReason): void {
    const key = `${phase}:${reason}`;
    let c = this.failures.get(key);
    if (!c) {
      c = this.deps.metrics.counter("mesh_filter_failures_total", "Filter calls that trapped, ran out of budget or memory, or broke the ABI", ["filter", "phase", "reason"]).labels(this.name, phase, reason);
      this.failures.set(key, c);
    }
    c.inc();
  }

  private failed(phase: Phase, err: unknown, g: Guest): FailOutcome | null {
    const { reason, message } = classify(err, g, this.maxPages);
    this.count(phase, reason);
    const policy = this.ref.failurePolicy;
    this.log.warn("filter failed; replacing its instance", { phase, reason, err: message, failurePolicy: policy });
    this.discard(g);
    return policy === "open" ? null : { kind: "fail", filter: this.name, phase, reason, message };
  }

  private unavailable(phase: Phase): FailOutcome | null {
    this.count(phase, "unavailable");
    return this.ref.failurePolicy === "open"
      ? null
      : { kind: "fail", filter: this.name, phase, reason: "unavailable", message: "no instance ready (its replacement is starting)" };
  }

  /** Drops a failed instance: the spare takes over now, a new spare starts in the background. */
  private discard(g: Guest): void {
    if (this.guest === g) {
      this.guest = this.spare;
      this.spare = null;
    } else if (this.spare === g) this.spare = null;
    g.close();
    this.refill();
  }

  private refill(): void {
    if (this.retired || this.building || (this.guest !== null && this.spare !== null)) return;
    this.building = true;
    this.startGuest().then(
      (g) => {
        this.building = false;
        if (this.retired || !this.bringUpToDate(g)) {
          g.close();
          return;
        }
        if (this.guest === null) {
          this.guest = g;
          this.readInfo(g);
        } else if (this.spare === null) this.spare = g;
        else g.close();
        this.refill();
      },
      (err) => {
        this.building = false;
        this.log.error("cannot start a replacement instance", { err: (err as Error).message });
        const t = setTimeout(() => this.refill(), REFILL_RETRY_MS);
        (t as { unref?: () => void }).unref?.();
      },
    );
  }

  /** For tests and /config: whether a live instance and a spare are ready. */
  health(): { live: boolean; spare: boolean } {
    return { live: this.guest !== null, spare: this.spare !== null };
  }

  /** Memory of the live instance, bytes (for tests). */
  liveMemoryBytes(): number {
    return this.guest?.memoryBytes() ?? 0;
  }
}

interface ChainState {
  readonly filters: readonly FilterRuntime[];
  readonly request: readonly FilterRuntime[];
  /** Filters with a response phase, in reverse chain order. */
  readonly response: readonly FilterRuntime[];
  readonly wantsBody: number;
}

function stateOf(filters: readonly FilterRuntime[]): ChainState {
  const request = filters.filter((f) => (f.phases & abi.PHASE_REQUEST) !== 0);
  const response = filters.filter((f) => (f.phases & abi.PHASE_RESPONSE) !== 0).reverse();
  return { filters, request, response, wantsBody: Math.max(0, ...request.map((f) => f.wantsBody)) };
}

/**
 * A route's chain. The object stays the same for a config's lifetime (the proxy keeps it in its
 * routing snapshot); a hot swap replaces its state in one assignment. A request that ran its request
 * phase before a swap runs its response phase on the filters it started with.
 */
export class Chain implements FilterChain {
  private state: ChainState;

  constructor(readonly routeName: string, filters: readonly FilterRuntime[]) {
    this.state = stateOf(filters);
  }

  get filters(): readonly FilterRuntime[] {
    return this.state.filters;
  }

  get wantsBody(): number {
    return this.state.wantsBody;
  }

  get hasResponsePhase(): boolean {
    return this.state.response.length > 0;
  }

  /** Swaps in new filters (hot load) or recomputes phases (config change). */
  replace(filters: readonly FilterRuntime[]): void {
    this.state = stateOf(filters);
  }

  onRequest(ctx: RequestContext, body: Uint8Array | null): RequestOutcome {
    const state = this.state;
    // On the context, not in a WeakMap: a field costs nothing, a WeakMap entry a hash and GC work.
    if (state.response.length > 0) ctx.pinned = state;
    const filters = state.request;
    let delay = 0;
    for (let i = 0; i < filters.length; i++) {
      const out = filters[i]!.request(ctx, body);
      if (out === null) continue;
      if (out.kind === "delay") {
        delay += out.ms;
        continue;
      }
      if (out.kind === "respond" && delay > 0) out.delayMs = delay;
      return out;
    }
    return delay > 0 ? { kind: "delay", ms: delay } : CONTINUE;
  }

  onResponse(ctx: RequestContext, res: { status: number; headers: FilterHeaders }): ResponseOutcome {
    const filters = ((ctx.pinned as ChainState | null | undefined) ?? this.state).response;
    for (let i = 0; i < filters.length; i++) {
      const out = filters[i]!.response(ctx, res);
      if (out !== null) return out;
    }
    return CONTINUE;
  }
}
