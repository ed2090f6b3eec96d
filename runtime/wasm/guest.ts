// One live filter instance: the host functions it imports, its memory, and the fast call path.
//
// The request never gets serialised into the guest. A phase call is one export call with no
// arguments (or the status); the filter pulls what it reads through host functions that look at the
// RequestContext directly, and header changes land in ctx.headers at once. Strings cross as UTF-16
// code units, AssemblyScript's own representation, so the guest neither encodes nor decodes; the
// host reads and writes them through typed-array views of linear memory that it re-creates only when
// memory grows. A header-only filter therefore costs one Wasm call plus one host call per header.
import { Buffer } from "node:buffer";
import type { Logger } from "../observability/log.ts";
import type { Registry } from "../observability/metrics.ts";
import type { RequestContext } from "../proxy/context.ts";
import type { FilterHeaders } from "../proxy/filter-headers.ts";
import { TOKEN } from "../upstream/http1/response-parser.ts";
import type { HeaderList } from "../upstream/types.ts";
import * as clock from "../platform/clock.ts";
import * as abi from "./abi.ts";
import type { PublicKeyHandle, SyncCrypto } from "./crypto.ts";
import { JwksSession, jwksHostFunctions, sharedJwks, type JwksRegistry } from "./jwks.ts";

/** The filter broke the ABI (bad pointer, bad status...): its fault, reason "protocol". */
export class GuestFault extends Error {
  override name = "GuestFault";
}
/** The filter called abort() (a failed assert, an uncaught AssemblyScript error). */
export class GuestAbort extends Error {
  override name = "GuestAbort";
}
/** Host functions noticed the call ran past its wall-clock allowance. */
export class BudgetExceeded extends Error {
  override name = "BudgetExceeded";
}

export interface GuestExports {
  memory: WebAssembly.Memory;
  mesh_start(): void;
  mesh_abi_version(): number;
  mesh_buffer(size: number): number;
  mesh_configure(len: number): number;
  mesh_phases(): number;
  mesh_body_limit(): number;
  mesh_on_request(): number;
  mesh_on_response(status: number): number;
}

export type HostFunctions = Record<string, Record<string, (...args: number[]) => unknown>>;

/** What a guest needs from its surroundings. */
export interface GuestEnv {
  /** The filter's name (its `name:` in the route), used for logs and the `filter` metric label. */
  filterName: string;
  log: Logger;
  metrics: Registry;
  crypto: SyncCrypto;
  /** Cache of remote JWKS documents (jwks_* host functions); default the process's sharedJwks. */
  jwks?: JwksRegistry;
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LOG_LINES_PER_SECOND = 100;
/** Host calls between two wall-clock checks. */
const CLOCK_EVERY = 64;
/**
 * Bytes a hash host call takes without a clock check of its own (a few microseconds of work, so
 * CLOCK_EVERY of them stay well inside a budget); an API key hashed per request then reads no clock.
 */
const HASH_UNCLOCKED = 4096;

type MetricHandle = { kind: number; record(v: number): void };

// Interning: header names and short values recur on every request (the filter sets the same
// "x-tenant: blue" each time), so decoding them into a new string each call would feed the garbage
// collector for nothing. A direct-mapped table keyed by a hash of the code units; a hit is checked
// unit by unit, so a collision only costs a decode.
const INTERN_SLOTS = 512;
const INTERN_MAX = 64;
const NAMES: (string | undefined)[] = new Array(INTERN_SLOTS);
const VALUES: (string | undefined)[] = new Array(INTERN_SLOTS);

/** Buffer's UTF-16LE decoder, on any Uint8Array: code units as they are (a lone surrogate stays one). */
const ucs2Slice = Buffer.prototype.ucs2Slice as (this: Uint8Array, start: number, end: number) => string;

// Measured on Bun (Deno within 1.5x): ucs2Slice ~40 ns whatever the length (up to 33 chars tried); a
// char-by-char concatenation 15 ns for 1 char, 88 ns for 9, 166 ns for 19 (a rope, flattened on
// first use); String.fromCharCode.apply over a subarray 155-177 ns; TextDecoder 100-120 ns.
function decodeUnits(u8: Uint8Array, u16: Uint16Array, base: number, len: number): string {
  if (len === 1) return String.fromCharCode(u16[base]!);
  return ucs2Slice.call(u8, base * 2, (base + len) * 2);
}

// Two slots per hash (the second is its neighbour), so two strings of one request that collide do not
// evict each other on every request ("x-api-key" and "ratelimit-reset" did: two decodes per request).
// A hit is checked unit by unit, which also proves it valid (it was checked before it was stored), so
// only a miss pays for the full check and the decode.
function slotOf(hash: number): number {
  return (hash ^ (hash >>> 11)) & (INTERN_SLOTS - 1);
}

function lookup(table: (string | undefined)[], u16: Uint16Array, base: number, len: number, hash: number, lower: boolean): string | null {
  const first = slotOf(hash);
  if (sameUnits(table[first], u16, base, len, lower)) return table[first]!;
  const second = first ^ 1;
  if (sameUnits(table[second], u16, base, len, lower)) return table[second]!;
  return null;
}

function store(table: (string | undefined)[], u8: Uint8Array, u16: Uint16Array, base: number, len: number, hash: number, lower: boolean): string {
  let s = decodeUnits(u8, u16, base, len);
  if (lower) s = s.toLowerCase();
  if (len <= INTERN_MAX) {
    const first = slotOf(hash);
    table[table[first] === undefined ? first : first ^ 1] = s;
  }
  return s;
}

/**
 * The table's hash: the length and up to four code units from each end (lower-cased when `lower`).
 * Header names and values differ there often enough; a collision costs a decode, not a wrong answer.
 */
function sampleHash(u16: Uint16Array, base: number, len: number, lower: boolean): number {
  let hash = len;
  const head = len < 8 ? len : 4;
  for (let i = 0; i < head; i++) hash = mix(hash, u16[base + i]!, lower);
  for (let i = len < 8 ? len : len - 4; i < len; i++) hash = mix(hash, u16[base + i]!, lower);
  return hash;
}

function mix(hash: number, c: number, lower: boolean): number {
  if (lower && c >= 65 && c <= 90) c += 32;
  return (Math.imul(hash, 31) + c) | 0;
}

/** Whether `hit` is the `len` code units at `base` (lower-cased first when `lower`). */
function sameUnits(hit: string | undefined, u16: Uint16Array, base: number, len: number, lower: boolean): boolean {
  if (hit === undefined || hit.length !== len) return false;
  for (let i = 0; i < len; i++) {
    let c = u16[base + i]!;
    if (lower && c >= 65 && c <= 90) c += 32;
    if (hit.charCodeAt(i) !== c) return false;
  }
  return true;
}

export class Guest {
  readonly env: GuestEnv;
  exports!: GuestExports;
  private memory!: WebAssembly.Memory;
  private u8 = new Uint8Array(0);
  private u16 = new Uint16Array(0);
  private dv = new DataView(new ArrayBuffer(0));
  /** The meter's fuel global, when the module is metered. */
  fuel: WebAssembly.Global | null = null;
  /** Declared memory maximum in pages (from the meter), 0 when unlimited. */
  maxPages = 0;

  // Per-call state. Set by the caller before a phase export, cleared after.
  ctx: RequestContext | null = null;
  body: Uint8Array | null = null;
  resHeaders: FilterHeaders | null = null;
  respondStatus = 0;
  respondHeaders: HeaderList | null = null;
  respondBody: Uint8Array<ArrayBuffer> | null = null;
  /** Message the filter gave with set_error (config rejection). */
  guestError = "";
  /** Wall-clock allowance of the current call in ms; host calls check it every CLOCK_EVERY calls. */
  budgetMs = 5;
  private hostCalls = 0;
  private deadline = 0;

  private lastError = "";
  private keys: PublicKeyHandle[] = [];
  private metricsById: MetricHandle[] = [];
  /** This instance's JWKS subscriptions, made on its first jwks_register. */
  private jwks: JwksSession | null = null;
  private logWindow = 0;
  private logCount = 0;
  private logDropped = 0;
  /** Closes the loader's handle (Extism plugin). */
  close: () => void = () => undefined;

  constructor(env: GuestEnv) {
    this.env = env;
  }

  /** Binds the instance the loader created from imports(). */
  attach(instance: WebAssembly.Instance, close: () => void): void {
    const ex = instance.exports as unknown as GuestExports & Record<string, unknown>;
    this.exports = ex;
    this.memory = ex.memory;
    this.fuel = (ex[abi.FUEL_GLOBAL] as WebAssembly.Global | undefined) ?? null;
    this.close = () => {
      this.jwks?.release();
      close();
    };
    this.refresh();
  }

  /** Bytes of linear memory now. */
  memoryBytes(): number {
    return this.memory.buffer.byteLength;
  }

  /** Starts a call: resets per-call state and the budget clock. */
  begin(fuel: bigint, budgetMs: number): void {
    if (this.fuel !== null) this.fuel.value = fuel;
    this.budgetMs = budgetMs;
    this.hostCalls = 0;
    this.deadline = 0;
    this.respondStatus = 0;
    this.respondHeaders = null;
    this.respondBody = null;
  }

  end(): void {
    this.ctx = null;
    this.body = null;
    this.resHeaders = null;
  }

  fuelExhausted(): boolean {
    return this.fuel !== null && (this.fuel.value as bigint) < 0n;
  }

  private refresh(): void {
    const buf = this.memory.buffer as ArrayBuffer;
    this.u8 = new Uint8Array(buf);
    this.u16 = new Uint16Array(buf, 0, buf.byteLength >>> 1);
    this.dv = new DataView(buf);
  }

  /** Every host function starts here: re-map memory if it grew, and bound host-side time. */
  private tick(): void {
    // memory.grow detaches the old buffer, so an empty view means "re-map".
    if (this.u8.byteLength === 0) this.refresh();
    if (++this.hostCalls % CLOCK_EVERY === 0) this.checkClock();
  }

  private checkClock(): void {
    const now = performance.now();
    // The first check starts the clock: a call's first CLOCK_EVERY host calls are cheap by construction.
    if (this.deadline === 0) this.deadline = now + this.budgetMs;
    else if (now > this.deadline) throw new BudgetExceeded(`spent over ${this.budgetMs} ms in host functions`);
  }

  private bounds(ptr: number, bytes: number): void {
    if (ptr < 0 || bytes < 0 || ptr + bytes > this.u8.byteLength) {
      throw new GuestFault(`pointer out of bounds (${ptr}+${bytes} > ${this.u8.byteLength})`);
    }
  }

  /** A guest string (UTF-16, `len` code units at `ptr`). */
  private str(ptr: number, len: number): string {
    this.bounds(ptr, len * 2);
    if (ptr & 1) throw new GuestFault("misaligned string pointer");
    return decodeUnits(this.u8, this.u16, ptr >>> 1, len);
  }

  /** A header name, lower-cased; null when it is not an HTTP token. Interned: hot names cost no allocation. */
  private name(ptr: number, len: number): string | null {
    this.bounds(ptr, len * 2);
    if (ptr & 1) throw new GuestFault("misaligned string pointer");
    if (len === 0) return null;
    const u16 = this.u16;
    const base = ptr >>> 1;
    const hash = sampleHash(u16, base, len, true);
    const hit = lookup(NAMES, u16, base, len, hash, true);
    if (hit !== null) return hit;
    for (let i = 0; i < len; i++) {
      const c = u16[base + i]!;
      if (c >= 128 || TOKEN[c] === 0) return null;
    }
    return store(NAMES, this.u8, u16, base, len, hash, true);
  }

  /** A header value; null when it has CR, LF or NUL. Short values are interned like names. */
  private value(ptr: number, len: number): string | null {
    this.bounds(ptr, len * 2);
    if (ptr & 1) throw new GuestFault("misaligned string pointer");
    const u16 = this.u16;
    const base = ptr >>> 1;
    let hash = 0;
    if (len <= INTERN_MAX) {
      hash = sampleHash(u16, base, len, false);
      const hit = lookup(VALUES, u16, base, len, hash, false);
      if (hit !== null) return hit;
    }
    for (let i = 0; i < len; i++) {
      const c = u16[base + i]!;
      if (c === 13 || c === 10 || c === 0) return null;
    }
    return len <= INTERN_MAX ? store(VALUES, this.u8, u16, base, len, hash, false) : this.str(ptr, len);
  }

  /** Writes `s` as UTF-16 at ptr when it fits in `cap` code units; returns its length either way. */
  private put(s: string, ptr: number, cap: number): number {
    const n = s.length;
    if (n <= cap) {
      this.bounds(ptr, n * 2);
      if (ptr & 1) throw new GuestFault("misaligned buffer pointer");
      const u16 = this.u16;
      const base = ptr >>> 1;
      for (let i = 0; i < n; i++) u16[base + i] = s.charCodeAt(i);
    }
    return n;
  }

  /** header_set (`replace`: the first same-named header takes the value, later ones go) and header_add. */
  private putHeader(map: number, np: number, nl: number, vp: number, vl: number, replace: boolean): number {
    this.tick();
    const headers = this.headers(map);
    if (headers === null) return this.fail("no headers of that kind in this phase");
    const name = this.name(np, nl);
    if (name === null) return this.fail("invalid header name");
    const value = this.value(vp, vl);
    if (value === null) return this.fail("header values cannot contain CR, LF or NUL");
    if (replace) headers.set(name, value);
    else headers.add(name, value);
    return 0;
  }

  private headers(map: number): FilterHeaders | null {
    if (map === abi.MAP_REQUEST) return this.ctx?.headers ?? null;
    if (map === abi.MAP_RESPONSE) return this.resHeaders;
    throw new GuestFault(`unknown header map ${map}`);
  }

  private fail(message: string): number {
    this.lastError = message;
    return -1;
  }

  private field(field: number): string | null {
    const ctx = this.ctx;
    if (field === abi.FIELD_FILTER_NAME) return this.env.filterName;
    if (ctx === null) return null;
    switch (field) {
      case abi.FIELD_METHOD:
        return ctx.method;
      case abi.FIELD_PATH: {
        const q = ctx.target.indexOf("?");
        return q < 0 ? ctx.target : ctx.target.slice(0, q);
      }
      case abi.FIELD_QUERY: {
        const q = ctx.target.indexOf("?");
        return q < 0 ? "" : ctx.target.slice(q + 1);
      }
      case abi.FIELD_TARGET:
        return ctx.target;
      case abi.FIELD_CLIENT_ADDRESS:
        return ctx.clientAddress;
      case abi.FIELD_ROUTE:
        return ctx.routeName;
      case abi.FIELD_PEER_IDENTITY:
        return ctx.peerIdentity;
      case abi.FIELD_REQUEST_ID:
        return ctx.requestId;
      case abi.FIELD_UPSTREAM_ERROR:
        return ctx.upstreamError;
      default:
        throw new GuestFault(`unknown field ${field}`);
    }
  }

  private logLine(level: number, msg: string): void {
    const now = performance.now();
    if (now - this.logWindow >= 1000) {
      if (this.logDropped > 0) this.env.log.warn("filter log lines dropped", { dropped: this.logDropped });
      this.logWindow = now;
      this.logCount = 0;
      this.logDropped = 0;
    }
    if (++this.logCount > LOG_LINES_PER_SECOND) {
      this.logDropped++;
      return;
    }
    const name = abi.LOG_LEVELS[level] ?? "info";
    this.env.log[name](msg);
  }

  private defineMetric(kind: number, name: string, help: string, buckets: number[] | null): number {
    if (!METRIC_NAME.test(name)) return this.fail(`metric name "${name}" is not a valid Prometheus name`);
    const full = `mesh_filter_${name}`;
    const reg = this.env.metrics;
    const text = help || `${name} (defined by a filter)`;
    let handle: MetricHandle;
    try {
      if (kind === abi.METRIC_COUNTER) {
        const child = reg.counter(full, text, ["filter"]).labels(this.env.filterName);
        handle = { kind, record: (v) => v > 0 && child.inc(v) };
      } else if (kind === abi.METRIC_GAUGE) {
        const child = reg.gauge(full, text, ["filter"]).labels(this.env.filterName);
        handle = { kind, record: (v) => child.set(v) };
      } else if (kind === abi.METRIC_HISTOGRAM) {
        if (buckets && buckets.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= buckets[i - 1]!))) {
          return this.fail("histogram buckets must be finite and ascending");
        }
        const child = reg.histogram(full, text, ["filter"], buckets ?? undefined).labels(this.env.filterName);
        handle = { kind, record: (v) => child.observe(v) };
      } else return this.fail(`unknown metric kind ${kind}`);
    } catch (err) {
      return this.fail((err as Error).message);
    }
    this.metricsById.push(handle);
    return this.metricsById.length - 1;
  }

  /** The import object for the loader. Functions take plain numbers, as Wasm passes them. */
  imports(): HostFunctions {
    const g = this;
    const c = this.env.crypto;
    return {
      mesh: {
        get(field, buf, cap) {
          g.tick();
          const v = g.field(field);
          return v === null ? -1 : g.put(v, buf, cap);
        },
        set(field, ptr, len) {
          g.tick();
          const ctx = g.ctx;
          if (ctx === null) return g.fail("no request in this phase");
          const v = g.str(ptr, len);
          if (/[\s\0#]/.test(v)) return g.fail("value contains whitespace, NUL or '#'");
          const q = ctx.target.indexOf("?");
          const path = q < 0 ? ctx.target : ctx.target.slice(0, q);
          const query = q < 0 ? "" : ctx.target.slice(q + 1);
          if (field === abi.FIELD_PATH) {
            if (!v.startsWith("/") || v.includes("?")) return g.fail('path must start with "/" and have no "?"');
            ctx.target = query ? `${v}?${query}` : v;
          } else if (field === abi.FIELD_QUERY) {
            ctx.target = v ? `${path}?${v.startsWith("?") ? v.slice(1) : v}` : path;
          } else if (field === abi.FIELD_TARGET) {
            if (!v.startsWith("/")) return g.fail('target must start with "/"');
            ctx.target = v;
          } else return g.fail(`field ${field} is read-only`);
          return 0;
        },
        body(buf, cap) {
          g.tick();
          const b = g.body;
          if (b === null) return -1;
          if (b.length <= cap) {
            g.bounds(buf, b.length);
            g.u8.set(b, buf);
          }
          return b.length;
        },
        header_get(map, np, nl, buf, cap) {
          g.tick();
          const headers = g.headers(map);
          const name = g.name(np, nl);
          if (headers === null || name === null) return -1;
          const value = headers.get(name);
          return value === null ? -1 : g.put(value, buf, cap);
        },
        header_set(map, np, nl, vp, vl) {
          return g.putHeader(map, np, nl, vp, vl, true);
        },
        header_add(map, np, nl, vp, vl) {
          return g.putHeader(map, np, nl, vp, vl, false);
        },
        header_remove(map, np, nl) {
          g.tick();
          const headers = g.headers(map);
          const name = g.name(np, nl);
          if (headers === null || name === null) return 0;
          return headers.remove(name);
        },
        header_list(map, buf, cap) {
          g.tick();
          const list = g.headers(map)?.list() ?? [];
          let need = 4 + list.length * 8;
          for (const [n, v] of list) need += (n.length + v.length) * 2;
          if (need > cap) return need;
          g.bounds(buf, need);
          if (buf & 3) throw new GuestFault("misaligned buffer pointer");
          const dv = g.dv;
          dv.setUint32(buf, list.length, true);
          let text = buf + 4 + list.length * 8;
          for (let i = 0; i < list.length; i++) {
            const [n, v] = list[i]!;
            dv.setUint32(buf + 4 + i * 8, n.length, true);
            dv.setUint32(buf + 8 + i * 8, v.length, true);
            text += g.put(n, text, n.length) * 2;
            text += g.put(v, text, v.length) * 2;
          }
          return need;
        },
        respond_header(np, nl, vp, vl) {
          g.tick();
          const name = g.name(np, nl);
          const value = g.value(vp, vl);
          if (name === null || value === null) throw new GuestFault("invalid response header");
          (g.respondHeaders ??= []).push([name, value]);
        },
        respond(status, bp, bl) {
          g.tick();
          if (!(status >= 200 && status <= 599)) throw new GuestFault(`respond with status ${status} (expected 200..599)`);
          g.bounds(bp, bl);
          g.respondStatus = status;
          g.respondBody = g.u8.slice(bp, bp + bl);
          g.respondHeaders ??= [];
        },
        log(level, ptr, len) {
          g.tick();
          g.logLine(level, g.str(ptr, len));
        },
        metric_define(kind, np, nl, hp, hl, bp, bn) {
          g.tick();
          let buckets: number[] | null = null;
          if (bn > 0) {
            g.bounds(bp, bn * 8);
            buckets = [];
            for (let i = 0; i < bn; i++) buckets.push(g.dv.getFloat64(bp + i * 8, true));
          }
          return g.defineMetric(kind, g.str(np, nl), g.str(hp, hl), buckets);
        },
        metric_record(id, value) {
          g.tick();
          const m = g.metricsById[id];
          if (m === undefined) throw new GuestFault(`unknown metric id ${id}`);
          m.record(value);
        },
        now_ms: () => Date.now(),
        // The request path's clock: one reading per event-loop callback (platform/clock.ts).
        monotonic_ms: () => clock.now(),
        random_fill(ptr, len) {
          g.tick();
          g.bounds(ptr, len);
          for (let off = 0; off < len; off += 65536) {
            crypto.getRandomValues(g.u8.subarray(ptr + off, ptr + Math.min(len, off + 65536)));
          }
        },
        sha256(ptr, len, out) {
          g.tick();
          g.bounds(ptr, len);
          g.bounds(out, 32);
          const digest = c.sha256(g.u8.subarray(ptr, ptr + len));
          g.u8.set(digest, out);
          if (len > HASH_UNCLOCKED) g.checkClock();
        },
        hmac_sha256(kp, kl, dp, dl, out) {
          g.tick();
          g.bounds(kp, kl);
          g.bounds(dp, dl);
          g.bounds(out, 32);
          g.u8.set(c.hmacSha256(g.u8.subarray(kp, kp + kl), g.u8.subarray(dp, dp + dl)), out);
          if (kl + dl > HASH_UNCLOCKED) g.checkClock();
        },
        key_import(format, ptr, len) {
          g.tick();
          g.bounds(ptr, len);
          try {
            g.keys.push(c.importKey(format, g.u8.slice(ptr, ptr + len)));
            return g.keys.length - 1;
          } catch (err) {
            return g.fail(`key import: ${(err as Error).message}`);
          }
        },
        verify(alg, key, dp, dl, sp, sl) {
          g.tick();
          const k = g.keys[key];
          if (k === undefined) return g.fail(`unknown key handle ${key}`);
          g.bounds(dp, dl);
          g.bounds(sp, sl);
          const ok = c.verify(alg, k, g.u8.subarray(dp, dp + dl), g.u8.subarray(sp, sp + sl));
          g.checkClock();
          return ok ? 1 : 0;
        },
        last_error(buf, cap) {
          g.tick();
          return g.put(g.lastError, buf, cap);
        },
        set_error(ptr, len) {
          g.tick();
          g.guestError = g.str(ptr, len);
        },
        ...jwksHostFunctions(() => (g.jwks ??= JwksSession.forOwner(g, g.env.jwks ?? sharedJwks, g.env.log)), {
          tick: () => g.tick(),
          str: (ptr, len) => g.str(ptr, len),
          bytes: (ptr, len) => (g.bounds(ptr, len), g.u8.subarray(ptr, ptr + len)),
          fail: (message) => g.fail(message),
          fault: (message) => {
            throw new GuestFault(message);
          },
        }),
        get_int(field) {
          g.tick();
          const ctx = g.ctx;
          if (ctx === null) return -1;
          if (field === abi.FIELD_ATTEMPT) return ctx.attempt;
          if (field === abi.FIELD_REPLAYABLE) return ctx.replayable ? 1 : 0;
          if (field === abi.FIELD_PER_TRY_TIMEOUT_MS) return ctx.perTryTimeoutMs;
          throw new GuestFault(`unknown numeric field ${field}`);
        },
        set_int(field, value) {
          g.tick();
          const ctx = g.ctx;
          if (ctx === null) return g.fail("no request in this phase");
          if (field !== abi.FIELD_PER_TRY_TIMEOUT_MS) return g.fail(`numeric field ${field} is read-only`);
          if (!(value >= 0)) return g.fail("per-try timeout must be >= 0 ms (0 = only the route timeout)");
          ctx.perTryTimeoutMs = value;
          return 0;
        },
      },
      env: {
        abort(msg, file, line, col) {
          g.tick();
          throw new GuestAbort(`abort: ${g.asString(msg) ?? "(no message)"} at ${g.asString(file) ?? "?"}:${line}:${col}`);
        },
        seed() {
          const a = new Uint32Array(2);
          crypto.getRandomValues(a);
          return a[0]! * 2 ** 21 + (a[1]! >>> 11);
        },
        trace(msg, n, a0, a1, a2, a3, a4) {
          g.tick();
          const args = [a0, a1, a2, a3, a4].slice(0, Math.max(0, Math.min(5, n)));
          g.logLine(0, `trace: ${g.asString(msg) ?? ""}${args.length > 0 ? " " + args.join(", ") : ""}`);
        },
      },
    };
  }

  /** An AssemblyScript String object (its byte length sits 4 bytes before the data). */
  private asString(ptr: number): string | null {
    if (ptr < 4 || ptr > this.u8.byteLength) return null;
    const bytes = this.dv.getUint32(ptr - 4, true);
    if (ptr + bytes > this.u8.byteLength) return null;
    return this.str(ptr, bytes >>> 1);
  }

  // ---- calls ----

  /** Writes the config JSON into the guest and runs its hook; returns the rejection message or null. */
  configure(json: Uint8Array): string | null {
    const ptr = this.exports.mesh_buffer(json.length);
    this.refresh();
    this.bounds(ptr, json.length);
    this.u8.set(json, ptr);
    this.guestError = "";
    const rc = this.exports.mesh_configure(json.length);
    if (rc === 0) return null;
    return this.guestError || "config rejected";
  }
}
