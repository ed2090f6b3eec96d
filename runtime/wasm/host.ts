// The filter host: modules, per-route chains, config changes and hot loads. The only file that knows Extism.
import createPlugin from "@extism/extism";
import { existsSync, readFileSync, watch, type FSWatcher } from "node:fs";
import { isAbsolute, join, resolve } from "node:path";
import type { Config, FilterRefConfig } from "../config/schema.ts";
import type { Logger } from "../observability/log.ts";
import type { Registry } from "../observability/metrics.ts";
import { Chain, FilterRuntime, InitError, type RuntimeDeps } from "./chain.ts";
import { validateAgainstSchema } from "./config-schema.ts";
import { loadSyncCrypto } from "./crypto.ts";
import { getMetering } from "./fuel.ts";
import type { Guest, HostFunctions } from "./guest.ts";
import { ModuleEntry, ModuleError, prepareModule, sha256Hex } from "./module.ts";
import type { FilterChain, FilterHost, FilterHostOptions, LoadResult } from "./types.ts";

export type { FilterChain, FilterHost, FilterHostOptions, LoadResult, RequestOutcome, ResponseOutcome } from "./types.ts";

/** Pages used to check a module that no route uses yet (16 MiB, the schema default). */
const DEFAULT_PAGES = 256;
/** Quiet period after the last change event of a file before it is loaded. */
const WATCH_DEBOUNCE_MS = 100;
const MODULE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

type ExtismFunction = (callContext: unknown, ...args: number[]) => unknown;

/**
 * Extism binds every host function to its call context as the first argument; filters' host
 * functions take only the Wasm arguments. Fixed-arity wrappers keep the call monomorphic.
 */
function dropContext(fn: (...args: number[]) => unknown): ExtismFunction {
  switch (fn.length) {
    case 0:
      return () => fn();
    case 1:
      return (_c, a) => fn(a!);
    case 2:
      return (_c, a, b) => fn(a!, b!);
    case 3:
      return (_c, a, b, c) => fn(a!, b!, c!);
    case 4:
      return (_c, a, b, c, d) => fn(a!, b!, c!, d!);
    case 5:
      return (_c, a, b, c, d, e) => fn(a!, b!, c!, d!, e!);
    case 6:
      return (_c, a, b, c, d, e, f) => fn(a!, b!, c!, d!, e!, f!);
    default:
      return (_c, ...args) => fn(...args);
  }
}

/**
 * Instantiates through Extism (it resolves the imports and owns the plugin lifecycle); the host then
 * calls the exports on the underlying instance directly, which skips Extism's per-call input/output
 * blocks and promise (measured: ~1.1 us per plugin.call vs ~0.15 us direct on this machine).
 */
async function instantiate(module: WebAssembly.Module, guest: Guest): Promise<void> {
  const table: HostFunctions = guest.imports();
  const functions: Record<string, Record<string, ExtismFunction>> = {};
  for (const [ns, fns] of Object.entries(table)) {
    functions[ns] = {};
    for (const [name, fn] of Object.entries(fns)) functions[ns]![name] = dropContext(fn);
  }
  const plugin = await createPlugin({ wasm: [{ module }] }, { useWasi: false, runInWorker: false, functions, logLevel: "silent" });
  const instance = await plugin.getInstance();
  guest.attach(instance, () => void plugin.close().catch(() => undefined));
}

function filterKey(routeName: string, filterName: string): string {
  return `${routeName}\u0000${filterName}`;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? {}) === JSON.stringify(b ?? {});
}

/** Where a route's filter sits in the current config, for error messages. */
interface Placement {
  routeIndex: number;
  filterIndex: number;
  routeName: string;
  ref: FilterRefConfig;
}

class Host implements FilterHost {
  private readonly log: Logger;
  private readonly metrics: Registry;
  private readonly opts: FilterHostOptions;
  private deps: RuntimeDeps | null = null;
  private readonly modules = new Map<string, ModuleEntry>();
  private filters = new Map<string, FilterRuntime>();
  private placements = new Map<string, Placement>();
  private chains = new Map<string, Chain>();
  private queue: Promise<unknown> = Promise.resolve();
  private dir: string | null = null;
  private watcher: FSWatcher | null = null;
  private readonly timers = new Map<string, ReturnType<typeof setTimeout>>();
  private closed = false;
  private readonly reloads;

  constructor(opts: FilterHostOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.metrics = opts.metrics;
    this.reloads = opts.metrics.counter("mesh_filter_module_loads_total", "Filter module loads by result", ["module", "result"]);
  }

  /** Crypto and fuel calibration, once, on first use. */
  private async ready(): Promise<RuntimeDeps> {
    if (this.deps) return this.deps;
    const crypto = await loadSyncCrypto();
    if (!crypto.available) this.log.warn("filters' crypto host functions are unavailable on this runtime");
    const metering = getMetering();
    this.log.info("filter fuel calibrated", {
      fuelPerMs: Math.round(metering.fuelPerMs),
      warmFuelPerMs: Math.round(metering.warmFuelPerMs),
      coldFuelPerMs: Math.round(metering.coldFuelPerMs),
    });
    this.deps = { log: this.log, metrics: this.metrics, crypto, metering, instantiate };
    return this.deps;
  }

  /** Runs one change at a time: config applies and module loads never interleave. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  chain(routeName: string): FilterChain | null {
    return this.chains.get(routeName) ?? null;
  }

  private resolveDir(config: Config): string | null {
    if (this.opts.filterDir) return resolve(this.opts.filterDir);
    if (!config.filterDir) return null;
    return isAbsolute(config.filterDir) ? config.filterDir : resolve(this.opts.configDir ?? ".", config.filterDir);
  }

  /**
   * The module to use for `name`: the file in the filter dir (re-read, so a change the watcher
   * missed is still seen), else what is loaded. An admin upload wins over the file until the file
   * changes again, which the watcher loads like an upload.
   */
  private async moduleFor(name: string, dir: string | null, pages: number, deps: RuntimeDeps): Promise<ModuleEntry | string> {
    const current = this.modules.get(name);
    const file = dir === null ? null : join(dir, `${name}.wasm`);
    if (file !== null && existsSync(file) && current?.source !== "admin") {
      const bytes = new Uint8Array(readFileSync(file));
      const sha = await sha256Hex(bytes);
      if (current && current.sha256 === sha) return current;
      try {
        return await prepareModule(name, bytes, "file", deps.metering, pages);
      } catch (err) {
        return (err as Error).message;
      }
    }
    if (current) return current;
    return dir === null ? `no module "${name}": no filterDir configured and none loaded through the admin API` : `no module "${name}" in ${dir}`;
  }

  applyConfig(config: Config): Promise<string[]> {
    return this.serial(async () => {
      const dir = this.resolveDir(config);
      if (config.routes.every((r) => r.filters.length === 0)) {
        // Nothing to run: no calibration, no instances.
        for (const rt of this.filters.values()) rt.retire();
        this.filters = new Map();
        this.placements = new Map();
        this.chains = new Map();
        this.watchDir(dir);
        return [];
      }
      const deps = await this.ready();
      const errors: string[] = [];

      // 1. Modules, schemas, names.
      const wanted = new Map<string, ModuleEntry | string>();
      const places: { place: Placement; key: string; module: ModuleEntry }[] = [];
      for (const [ri, route] of config.routes.entries()) {
        const seen = new Set<string>();
        for (const [fi, ref] of route.filters.entries()) {
          const at = `routes[${ri}].filters[${fi}]`;
          if (seen.has(ref.name)) {
            errors.push(`${at}.name: duplicate filter name "${ref.name}" in route "${route.name}"`);
            continue;
          }
          seen.add(ref.name);
          const moduleName = ref.module ?? ref.name;
          if (!wanted.has(moduleName)) wanted.set(moduleName, await this.moduleFor(moduleName, dir, ref.memoryLimitMb * 16, deps));
          const module = wanted.get(moduleName)!;
          if (typeof module === "string") {
            errors.push(`${at}.module: ${module}`);
            continue;
          }
          if (module.schema) errors.push(...validateAgainstSchema(module.schema, ref.config ?? {}, `${at}.config`));
          places.push({ place: { routeIndex: ri, filterIndex: fi, routeName: route.name, ref }, key: filterKey(route.name, ref.name), module });
        }
      }
      if (errors.length > 0) return errors;

      // 2. Instances: keep (and reconfigure) what is unchanged, start the rest. Nothing serves yet.
      const next = new Map<string, FilterRuntime>();
      const created: FilterRuntime[] = [];
      const reconfigured: { rt: FilterRuntime; old: FilterRefConfig }[] = [];
      for (const { place, key, module } of places) {
        const at = `routes[${place.routeIndex}].filters[${place.filterIndex}]`;
        const existing = this.filters.get(key);
        if (existing && existing.module === module && existing.memoryLimitMb === place.ref.memoryLimitMb) {
          if (!sameJson(existing.ref.config, place.ref.config)) {
            const err = existing.reconfigure(place.ref);
            if (err !== null) {
              errors.push(`${at}.config: ${err}`);
              continue;
            }
            reconfigured.push({ rt: existing, old: existing.ref });
          }
          next.set(key, existing);
          continue;
        }
        try {
          const rt = await FilterRuntime.create(deps, module, place.ref, place.routeName);
          created.push(rt);
          next.set(key, rt);
        } catch (err) {
          if (err instanceof InitError && err.field === "config") errors.push(`${at}.config: ${err.message}`);
          else errors.push(`${at}.module: ${(err as Error).message}`);
        }
      }
      if (errors.length > 0) {
        for (const rt of created) rt.retire();
        for (const { rt, old } of reconfigured) rt.reconfigure(old);
        return errors;
      }

      // 3. Commit: settings, chains, modules, watcher. One assignment each; requests see old or new.
      const placements = new Map<string, Placement>();
      for (const { place, key } of places) {
        next.get(key)!.updateSettings(place.ref);
        placements.set(key, place);
      }
      const chains = new Map<string, Chain>();
      for (const route of config.routes) {
        if (route.filters.length === 0) continue;
        chains.set(route.name, new Chain(route.name, route.filters.map((f) => next.get(filterKey(route.name, f.name))!)));
      }
      for (const [name, module] of wanted) if (typeof module !== "string") this.modules.set(name, module);
      const old = this.filters;
      this.filters = next;
      this.placements = placements;
      this.chains = chains;
      for (const [key, rt] of old) if (next.get(key) !== rt) rt.retire();
      this.watchDir(dir);
      return [];
    });
  }

  loadModule(name: string, bytes: Uint8Array, sha256?: string): Promise<LoadResult> {
    return this.serial(async () => {
      const result = await this.load(name, bytes, sha256, "admin");
      this.reloads.labels(name, result.ok ? "ok" : "rejected").inc();
      if (result.ok) this.log.info("filter module loaded", { module: name });
      else this.log.warn("filter module rejected; the previous version keeps serving", { module: name, err: result.error });
      return result;
    });
  }

  private async load(name: string, bytes: Uint8Array, sha256: string | undefined, source: "file" | "admin"): Promise<LoadResult> {
    if (this.closed) return { ok: false, error: "filter host is closed" };
    if (!MODULE_NAME.test(name)) return { ok: false, error: `"${name}" is not a valid module name` };
    const deps = await this.ready();
    const actual = await sha256Hex(bytes);
    if (sha256 !== undefined && sha256.toLowerCase() !== actual) {
      return { ok: false, error: `sha256 mismatch for module "${name}": expected ${sha256.toLowerCase()}, got ${actual}` };
    }
    const users = [...this.filters].filter(([, rt]) => rt.module.name === name);
    let module: ModuleEntry;
    try {
      module = await prepareModule(name, bytes, source, deps.metering, users[0]?.[1].maxPages ?? DEFAULT_PAGES);
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
    // Start every instance on the new code, off the request path; any failure leaves the old serving.
    const replacements = new Map<string, FilterRuntime>();
    for (const [key, old] of users) {
      const place = this.placements.get(key)!;
      try {
        const invalid = schemaErrors(module, place);
        if (invalid.length > 0) throw new Error(`the new module's config schema rejects the current config: ${invalid.join("; ")}`);
        replacements.set(key, await FilterRuntime.create(deps, module, old.ref, place.routeName));
      } catch (err) {
        for (const rt of replacements.values()) rt.retire();
        return {
          ok: false,
          error: `routes[${place.routeIndex}].filters[${place.filterIndex}] (route "${place.routeName}", filter "${place.ref.name}"): ${(err as Error).message}`,
        };
      }
    }
    if (users.length === 0) {
      // Nobody runs it yet: still prove it starts, so a broken upload is refused now, not at the next reload.
      try {
        const probe = await FilterRuntime.create(deps, module, probeRef(name), "(none)");
        probe.retire();
      } catch (err) {
        if (!(err instanceof InitError && err.field === "config")) return { ok: false, error: (err as Error).message };
      }
    }
    // Swap: the module, then each affected chain in one assignment.
    this.modules.set(name, module);
    for (const [key, rt] of replacements) {
      const old = this.filters.get(key)!;
      this.filters.set(key, rt);
      old.retire();
    }
    for (const chain of this.chains.values()) {
      if (chain.filters.some((f) => replacements.has(filterKey(chain.routeName, f.name)))) {
        chain.replace(chain.filters.map((f) => replacements.get(filterKey(chain.routeName, f.name)) ?? f));
      }
    }
    return { ok: true };
  }

  /** Watches the filter dir: a new or changed `<module>.wasm` is loaded like an admin upload. */
  private watchDir(dir: string | null): void {
    if (this.opts.watch === false || dir === this.dir) return;
    this.watcher?.close();
    this.watcher = null;
    this.dir = dir;
    if (dir === null || !existsSync(dir)) return;
    try {
      this.watcher = watch(dir, (_event, filename) => {
        const file = filename?.toString();
        if (!file || !file.endsWith(".wasm")) return;
        const name = file.slice(0, -".wasm".length);
        if (!MODULE_NAME.test(name)) return;
        clearTimeout(this.timers.get(name));
        const t = setTimeout(() => {
          this.timers.delete(name);
          void this.onFileChange(dir, name);
        }, WATCH_DEBOUNCE_MS);
        (t as { unref?: () => void }).unref?.();
        this.timers.set(name, t);
      });
    } catch (err) {
      this.log.warn("cannot watch the filter dir; modules reload only with the config", { dir, err: (err as Error).message });
    }
  }

  private onFileChange(dir: string, name: string): Promise<void> {
    return this.serial(async () => {
      if (this.closed) return;
      const file = join(dir, `${name}.wasm`);
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array(readFileSync(file));
      } catch {
        return; // removed: keep serving what is loaded
      }
      const current = this.modules.get(name);
      if (current && current.sha256 === (await sha256Hex(bytes))) return;
      const result = await this.load(name, bytes, undefined, "file");
      this.reloads.labels(name, result.ok ? "ok" : "rejected").inc();
      if (result.ok) this.log.info("filter module reloaded from file", { module: name, file });
      else this.log.warn("filter module file rejected; the previous version keeps serving", { module: name, file, err: result.error });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    await this.queue;
    for (const rt of this.filters.values()) rt.retire();
    this.filters.clear();
    this.chains.clear();
  }
}

function probeRef(name: string): FilterRefConfig {
  return { name, module: name, config: {}, failurePolicy: "closed", cpuBudgetMs: 100, memoryLimitMb: 16, maxBodyBytes: 0 };
}

function schemaErrors(module: ModuleEntry, p: Placement): string[] {
  return module.schema ? validateAgainstSchema(module.schema, p.ref.config ?? {}, `routes[${p.routeIndex}].filters[${p.filterIndex}].config`) : [];
}

/**
 * Creates the filter host. Cheap: modules load and the fuel meter calibrates on the first
 * applyConfig or loadModule.
 *
 * @example
 * const filters = createFilterHost({ log, metrics: registry, configDir: dirname(configPath) });
 * const errors = await filters.applyConfig(config); // [] when every chain is ready
 * const chain = filters.chain("api");               // null: the route has no filters
 */
export function createFilterHost(opts: FilterHostOptions): FilterHost {
  if (!opts || typeof opts.log?.info !== "function") throw new TypeError("createFilterHost: opts.log must be a Logger");
  if (!opts.metrics || typeof opts.metrics.counter !== "function") throw new TypeError("createFilterHost: opts.metrics must be a Registry");
  return new Host(opts);
}

/**
 * For bench/micro/filter-call.ts only: per-call times (µs) of Extism's own call path,
 * `await plugin.call(exportName)`, on the same metered module and host functions the fast path
 * uses, so the two can be compared on one machine.
 */
export async function extismCallSamples(opts: {
  bytes: Uint8Array;
  config: unknown;
  exportName: string;
  /** Called before each call, e.g. to reset the request context; may return the call's input. */
  before: (guest: Guest) => string | void;
  calls: number;
  log: Logger;
  metrics: Registry;
}): Promise<Float64Array> {
  const { Guest: GuestClass } = await import("./guest.ts");
  const crypto = await loadSyncCrypto();
  const metering = getMetering();
  const module = await WebAssembly.compile(metering.meter(opts.bytes, DEFAULT_PAGES) as BufferSource);
  const guest = new GuestClass({ filterName: "bench", log: opts.log, metrics: opts.metrics, crypto });
  const functions: Record<string, Record<string, ExtismFunction>> = {};
  for (const [ns, fns] of Object.entries(guest.imports())) {
    functions[ns] = {};
    for (const [name, fn] of Object.entries(fns)) functions[ns]![name] = dropContext(fn);
  }
  const plugin = await createPlugin({ wasm: [{ module }] }, { useWasi: false, functions, logLevel: "silent" });
  guest.attach(await plugin.getInstance(), () => undefined);
  guest.begin(1n << 60n, 1e9);
  guest.exports.mesh_start();
  guest.configure(new TextEncoder().encode(JSON.stringify(opts.config ?? {})));
  const samples = new Float64Array(opts.calls);
  for (let i = 0; i < opts.calls; i++) {
    guest.begin(1n << 60n, 1e9);
    const t = performance.now();
    const input = opts.before(guest);
    await plugin.call(opts.exportName, input ?? undefined);
    samples[i] = (performance.now() - t) * 1000;
  }
  await plugin.close();
  return samples;
}
