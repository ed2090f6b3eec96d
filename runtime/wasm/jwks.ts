// Remote JWKS documents that the host fetches for filters: one cache entry per URL, refreshed in the
// background on an interval and on a filter's request (rate-limited), read by filters by version.
//
// Host functions are synchronous and a filter cannot do I/O, so a filter only declares the URLs it
// wants (jwks_register, in onConfigure). The host fetches them off the request path and keeps the
// latest good document; a filter asks jwks_version on a request (one cheap host call), reads the
// document with jwks_read only when the version changed, and calls jwks_refresh when a token names a
// key it does not have. That call never waits: the request that asked is answered with what the
// filter has now, and a later request sees the new keys.
import type { Logger } from "../observability/log.ts";

/** Largest JWKS document accepted. Real ones are a few KiB. */
export const JWKS_MAX_BYTES = 1 << 20;
/** Bounds on the intervals a filter may ask for: protect the key server from a runaway config. */
export const JWKS_MIN_INTERVAL_MS = 100;
export const JWKS_MAX_INTERVAL_MS = 86_400_000;
/** First retry after a failed fetch; doubles per failure in a row, up to the refresh interval. */
export const JWKS_FIRST_RETRY_MS = 500;

export interface JwksFetchSettings {
  /** Scheduled refresh interval. */
  refreshMs: number;
  /** Least time between two fetches started by jwks_refresh (the unknown-kid cooldown). */
  minRefreshMs: number;
  /** Time allowed for one fetch. */
  timeoutMs: number;
}

/**
 * Whether a refresh asked for by a filter may start now: none is in flight and the last attempt of
 * any kind started at least `minRefreshMs` ago. Pure, so a table test covers it.
 */
export function mayRefresh(state: { inFlight: boolean; lastAttemptAt: number }, now: number, minRefreshMs: number): boolean {
  return !state.inFlight && now - state.lastAttemptAt >= minRefreshMs;
}

/**
 * Delay until the next scheduled fetch after an attempt: the refresh interval after a success;
 * after `failures` failures in a row, JWKS_FIRST_RETRY_MS doubled per extra failure, at most the
 * interval. Pure.
 */
export function nextFetchDelay(failures: number, refreshMs: number): number {
  if (failures <= 0) return refreshMs;
  return Math.min(refreshMs, JWKS_FIRST_RETRY_MS * 2 ** Math.min(failures - 1, 30));
}

/**
 * Checks that `body` is a JWKS (a JSON object with a `keys` array of objects) and returns it as
 * compact JSON with only the `keys` member, so formatting changes at the server do not look like a
 * new key set. Throws with the reason otherwise; the previous document then stays in use.
 */
export function normalizeJwks(body: Uint8Array): Uint8Array {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    throw new Error("the response is not UTF-8 JSON");
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw new Error("the response is not a JSON object");
  const keys = (doc as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) throw new Error('the response has no "keys" array');
  if (keys.some((k) => k === null || typeof k !== "object" || Array.isArray(k))) throw new Error('"keys" holds something other than objects');
  return new TextEncoder().encode(JSON.stringify({ keys }));
}

export type FetchFn = (url: string, init: RequestInit) => Promise<Response>;

export interface JwksRegistryOptions {
  /** Default: globalThis.fetch. */
  fetch?: FetchFn;
  /** Monotonic clock, ms. Default: performance.now. */
  now?: () => number;
}

async function readLimited(res: Response, max: number): Promise<Uint8Array> {
  const declared = Number(res.headers.get("content-length") ?? NaN);
  if (declared > max) throw new Error(`the document is ${declared} bytes (limit ${max})`);
  if (res.body === null) return new Uint8Array(0);
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      void reader.cancel().catch(() => undefined);
      throw new Error(`the document is over ${max} bytes`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

function sameBytes(a: Uint8Array | null, b: Uint8Array): boolean {
  if (a === null || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** One URL with one set of settings, shared by every filter instance that registered it. */
class JwksEntry {
  doc: Uint8Array | null = null;
  /** 0 until the first good document; +1 each time the document changes. */
  version = 0;
  subscribers = 0;
  inFlight = false;
  lastAttemptAt = -Infinity;
  failures = 0;
  lastError: string | null = null;
  fetches = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private dead = false;

  constructor(
    private readonly registry: JwksRegistry,
    readonly key: string,
    readonly url: string,
    readonly settings: JwksFetchSettings,
    private readonly log: Logger,
  ) {}

  /** Starts a fetch now unless one is running. Never throws, never waits. */
  fetchNow(): void {
    if (this.dead || this.inFlight) return;
    this.inFlight = true;
    this.lastAttemptAt = this.registry.now();
    this.fetches++;
    this.clearTimer();
    void this.fetchOnce().then(
      (doc) => this.settle(doc, null),
      (err) => this.settle(null, (err as Error)?.message ?? String(err)),
    );
  }

  private async fetchOnce(): Promise<Uint8Array> {
    const res = await this.registry.fetch(this.url, {
      headers: { accept: "application/jwk-set+json, application/json" },
      signal: AbortSignal.timeout(this.settings.timeoutMs),
    });
    if (res.status !== 200) {
      void res.body?.cancel().catch(() => undefined);
      throw new Error(`the server answered ${res.status}`);
    }
    return normalizeJwks(await readLimited(res, JWKS_MAX_BYTES));
  }

  private settle(doc: Uint8Array | null, error: string | null): void {
    this.inFlight = false;
    if (this.dead) return;
    if (doc !== null) {
      this.failures = 0;
      this.lastError = null;
      if (!sameBytes(this.doc, doc)) {
        this.doc = doc;
        this.version++;
        this.log.info("JWKS updated", { url: this.url, version: this.version, bytes: doc.length });
      }
    } else {
      this.failures++;
      this.lastError = error;
      // The last good document stays in use: a key server that is down must not log everyone out.
      this.log.warn("JWKS fetch failed; the previous keys stay in use", {
        url: this.url,
        err: error,
        failuresInARow: this.failures,
        retryInMs: nextFetchDelay(this.failures, this.settings.refreshMs),
      });
    }
    this.schedule();
  }

  private schedule(): void {
    this.clearTimer();
    if (this.dead) return;
    const t = setTimeout(() => {
      this.timer = null;
      this.fetchNow();
    }, nextFetchDelay(this.failures, this.settings.refreshMs));
    // A cache refresh must never keep a process alive.
    (t as { unref?: () => void }).unref?.();
    this.timer = t;
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** A filter asked (it saw an unknown kid): fetch now unless the cooldown says no. */
  requestRefresh(): boolean {
    if (this.dead) return false;
    if (this.inFlight) return true;
    if (!mayRefresh(this, this.registry.now(), this.settings.minRefreshMs)) return false;
    this.fetchNow();
    return true;
  }

  stop(): void {
    this.dead = true;
    this.clearTimer();
  }
}

/** One filter instance's hold on an entry. */
export class JwksSubscription {
  private closed = false;
  constructor(private readonly entry: JwksEntry, private readonly registry: JwksRegistry) {}

  get url(): string {
    return this.entry.url;
  }
  get settings(): JwksFetchSettings {
    return this.entry.settings;
  }
  /** 0 until the first document arrives. */
  get version(): number {
    return this.entry.version;
  }
  /** The latest good document (compact JSON, UTF-8), or null before the first. */
  get document(): Uint8Array | null {
    return this.entry.doc;
  }
  /** Asks for a background fetch; false when the cooldown refused it. Never waits. */
  requestRefresh(): boolean {
    return !this.closed && this.entry.requestRefresh();
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.registry.release(this.entry);
  }
}

export interface JwksStatus {
  url: string;
  version: number;
  subscribers: number;
  fetches: number;
  failuresInARow: number;
  lastError: string | null;
}

/**
 * The JWKS cache of a process: one entry per URL and settings, alive while some filter instance
 * holds it. Entries fetch on creation, then every `refreshMs` (sooner after failures).
 *
 * @example
 * const sub = sharedJwks.subscribe("https://idp.example/jwks.json", { refreshMs: 300_000, minRefreshMs: 10_000, timeoutMs: 5000 }, log);
 * sub.version;        // 0 until the first fetch succeeds
 * sub.requestRefresh(); // on an unknown kid; false during the cooldown
 * sub.close();
 */
export class JwksRegistry {
  readonly fetch: FetchFn;
  readonly now: () => number;
  private readonly entries = new Map<string, JwksEntry>();

  constructor(opts: JwksRegistryOptions = {}) {
    this.fetch = opts.fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.now = opts.now ?? (() => performance.now());
  }

  /** Throws a TypeError naming the bad argument. */
  subscribe(url: string, settings: JwksFetchSettings, log: Logger): JwksSubscription {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError(`JWKS url "${url}" is not a URL`);
    }
    if (parsed.protocol !== "https:" && parsed.protocol !== "http:") throw new TypeError(`JWKS url "${url}": expected http or https`);
    for (const [name, v] of Object.entries(settings)) {
      if (!Number.isFinite(v) || v < JWKS_MIN_INTERVAL_MS || v > JWKS_MAX_INTERVAL_MS) {
        throw new TypeError(`JWKS ${name} ${v}: expected ${JWKS_MIN_INTERVAL_MS}..${JWKS_MAX_INTERVAL_MS} ms`);
      }
    }
    const key = `${parsed.href}\n${settings.refreshMs}\n${settings.minRefreshMs}\n${settings.timeoutMs}`;
    let entry = this.entries.get(key);
    if (entry === undefined) {
      entry = new JwksEntry(this, key, parsed.href, { ...settings }, log);
      this.entries.set(key, entry);
      entry.subscribers++;
      entry.fetchNow();
    } else entry.subscribers++;
    return new JwksSubscription(entry, this);
  }

  /** @internal: a subscription closed. The last one stops the entry's refreshes. */
  release(entry: JwksEntry): void {
    if (--entry.subscribers > 0) return;
    entry.stop();
    if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
  }

  /** What is cached, for tests and diagnostics. */
  status(): JwksStatus[] {
    return [...this.entries.values()].map((e) => ({
      url: e.url,
      version: e.version,
      subscribers: e.subscribers,
      fetches: e.fetches,
      failuresInARow: e.failures,
      lastError: e.lastError,
    }));
  }

  /** Stops every refresh (process shutdown, tests). */
  close(): void {
    for (const e of this.entries.values()) e.stop();
    this.entries.clear();
  }
}

/** The process's cache, used by every filter host unless a test passes its own. */
export const sharedJwks = new JwksRegistry();

// Instances of retired filters are not closed explicitly (requests in flight may still use them),
// so the collector releases their subscriptions when it frees them.
const finalizer = new FinalizationRegistry<JwksSession>((session) => session.release());

/** One guest's subscriptions, addressed by the handles jwks_register returns. Idempotent per URL and settings. */
export class JwksSession {
  private readonly subs: (JwksSubscription | null)[] = [];

  constructor(private readonly registry: JwksRegistry, private readonly log: Logger) {}

  /** A session released when `owner` is collected (or earlier, by release()). */
  static forOwner(owner: object, registry: JwksRegistry, log: Logger): JwksSession {
    const s = new JwksSession(registry, log);
    finalizer.register(owner, s, s);
    return s;
  }

  register(url: string, settings: JwksFetchSettings): number {
    for (let i = 0; i < this.subs.length; i++) {
      const s = this.subs[i];
      if (s && s.url === url && sameSettings(s.settings, settings)) return i;
    }
    // The registry normalises the URL; compare again after it to keep handles idempotent.
    const sub = this.registry.subscribe(url, settings, this.log);
    for (let i = 0; i < this.subs.length; i++) {
      const s = this.subs[i];
      if (s && s.url === sub.url && sameSettings(s.settings, settings)) {
        sub.close();
        return i;
      }
    }
    this.subs.push(sub);
    return this.subs.length - 1;
  }

  get(handle: number): JwksSubscription | null {
    return this.subs[handle] ?? null;
  }

  close(handle: number): void {
    const s = this.subs[handle];
    if (s) {
      s.close();
      this.subs[handle] = null;
    }
  }

  release(): void {
    for (let i = 0; i < this.subs.length; i++) this.close(i);
    finalizer.unregister(this);
  }
}

function sameSettings(a: JwksFetchSettings, b: JwksFetchSettings): boolean {
  return a.refreshMs === b.refreshMs && a.minRefreshMs === b.minRefreshMs && a.timeoutMs === b.timeoutMs;
}

/** What the JWKS host functions need from a guest: its memory, its error slot and its call clock. */
export interface JwksGuestAccess {
  /** Called first by every host function (re-maps memory after growth, bounds host time). */
  tick(): void;
  /** A guest string: `len` UTF-16 code units at `ptr`. */
  str(ptr: number, len: number): string;
  /** A bounds-checked view of guest memory. */
  bytes(ptr: number, len: number): Uint8Array;
  /** Sets last_error and returns -1. */
  fail(message: string): number;
  /** Throws the guest's protocol fault (a bad handle is the filter's bug). */
  fault(message: string): never;
}

/**
 * The `mesh.jwks_*` host functions (see sdk/assembly/jwks.ts for the guest side):
 * - `jwks_register(urlPtr, urlLen, refreshMs, minRefreshMs, timeoutMs) -> handle | -1` (last_error says why)
 * - `jwks_version(handle) -> i32`: 0 before the first good document
 * - `jwks_read(handle, buf, capBytes) -> bytes needed | -1`: the document (UTF-8 JSON) when it fits
 * - `jwks_refresh(handle) -> 1 | 0`: 1 when a fetch started or is running, 0 when the cooldown refused
 * - `jwks_close(handle)`
 */
export function jwksHostFunctions(session: () => JwksSession, g: JwksGuestAccess): Record<string, (...args: number[]) => unknown> {
  const sub = (handle: number): JwksSubscription => session().get(handle) ?? g.fault(`unknown JWKS handle ${handle}`);
  return {
    jwks_register(up, ul, refreshMs, minRefreshMs, timeoutMs) {
      g.tick();
      const url = g.str(up, ul);
      try {
        return session().register(url, { refreshMs, minRefreshMs, timeoutMs });
      } catch (err) {
        return g.fail((err as Error).message);
      }
    },
    jwks_version(handle) {
      g.tick();
      return sub(handle).version;
    },
    jwks_read(handle, buf, cap) {
      g.tick();
      const doc = sub(handle).document;
      if (doc === null) return -1;
      if (doc.length <= cap) g.bytes(buf, doc.length).set(doc);
      return doc.length;
    },
    jwks_refresh(handle) {
      g.tick();
      return sub(handle).requestRefresh() ? 1 : 0;
    },
    jwks_close(handle) {
      g.tick();
      session().close(handle);
    },
  };
}
