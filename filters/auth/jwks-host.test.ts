// The host's JWKS cache (runtime/wasm/jwks.ts) that the auth filter reads through jwks_* host functions:
// its pure policy as tables, and the registry against a scripted fetch and clock.
import { afterEach, describe, expect, test } from "bun:test";
import { JWKS_FIRST_RETRY_MS, JwksRegistry, JwksSession, mayRefresh, nextFetchDelay, normalizeJwks } from "../../runtime/wasm/jwks.ts";
import { createLogger } from "../../runtime/observability/log.ts";

const log = createLogger({ level: "error", sink: () => undefined });
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));
const settings = { refreshMs: 60_000, minRefreshMs: 1_000, timeoutMs: 1_000 };

describe("policy", () => {
  test("a refresh asked for by a filter starts only outside the cooldown and when none is running", () => {
    const table: [inFlight: boolean, lastAttemptAt: number, now: number, want: boolean][] = [
      [false, -Infinity, 0, true],
      [false, 1000, 1999, false],
      [false, 1000, 2000, true],
      [true, 0, 1e9, false],
    ];
    for (const [inFlight, lastAttemptAt, now, want] of table) expect(mayRefresh({ inFlight, lastAttemptAt }, now, 1000)).toBe(want);
  });

  test("fetches again after the interval, sooner after failures, backing off up to the interval", () => {
    expect(nextFetchDelay(0, 300_000)).toBe(300_000);
    expect(nextFetchDelay(1, 300_000)).toBe(JWKS_FIRST_RETRY_MS);
    expect(nextFetchDelay(2, 300_000)).toBe(JWKS_FIRST_RETRY_MS * 2);
    expect(nextFetchDelay(5, 300_000)).toBe(JWKS_FIRST_RETRY_MS * 16);
    expect(nextFetchDelay(40, 300_000)).toBe(300_000);
    expect(nextFetchDelay(3, 1_000)).toBe(1_000);
  });

  test("accepts only JSON objects with a keys array of objects, written compactly", () => {
    expect(dec(normalizeJwks(enc('{ "keys": [ {"kty":"oct", "k":"AA"} ], "extra": 1 }')))).toBe('{"keys":[{"kty":"oct","k":"AA"}]}');
    for (const bad of ["", "nope", "[]", "null", '{"keys":{}}', '{"keys":[1]}', '{"key":[]}']) expect(() => normalizeJwks(enc(bad))).toThrow();
    expect(() => normalizeJwks(new Uint8Array([0x7b, 0xff, 0x7d]))).toThrow("not UTF-8 JSON");
  });
});

describe("registry", () => {
  let registry: JwksRegistry;
  afterEach(() => registry?.close());

  /** A fetch whose answers the test scripts, and a clock it moves. */
  function scripted(answers: (() => Response | Promise<Response>)[]) {
    const calls: string[] = [];
    let clock = 0;
    registry = new JwksRegistry({
      now: () => clock,
      fetch: async (url) => {
        calls.push(url);
        const next = answers.shift();
        if (!next) throw new Error("no scripted answer");
        return next();
      },
    });
    return { calls, tick: (ms: number) => (clock += ms) };
  }
  const flush = () => Bun.sleep(5);
  const doc = (kid: string) => () => Response.json({ keys: [{ kty: "oct", kid, k: "AA" }] });

  test("fetches once per URL and settings, shared by every subscriber", async () => {
    const s = scripted([doc("a")]);
    const one = registry.subscribe("http://127.0.0.1:1/jwks", settings, log);
    const two = registry.subscribe("http://127.0.0.1:1/jwks", settings, log);
    expect(one.version).toBe(0);
    expect(one.document).toBeNull();
    await flush();
    expect(s.calls).toEqual(["http://127.0.0.1:1/jwks"]);
    expect(one.version).toBe(1);
    expect(two.version).toBe(1);
    expect(dec(two.document)).toContain('"kid":"a"');
    expect(registry.status()).toMatchObject([{ subscribers: 2, fetches: 1, version: 1 }]);
  });

  test("bumps the version only when the document changes", async () => {
    const s = scripted([doc("a"), doc("a"), doc("b")]);
    const sub = registry.subscribe("http://127.0.0.1:1/jwks", settings, log);
    await flush();
    s.tick(1_000);
    expect(sub.requestRefresh()).toBe(true);
    await flush();
    expect(sub.version).toBe(1);
    s.tick(1_000);
    sub.requestRefresh();
    await flush();
    expect(sub.version).toBe(2);
    expect(dec(sub.document)).toContain('"kid":"b"');
  });

  test("refuses refreshes inside the cooldown and while one runs", async () => {
    let release!: () => void;
    const s = scripted([doc("a"), () => new Promise<Response>((r) => (release = () => r(doc("b")())))]);
    const sub = registry.subscribe("http://127.0.0.1:1/jwks", settings, log);
    await flush();
    s.tick(999);
    expect(sub.requestRefresh()).toBe(false);
    s.tick(1);
    expect(sub.requestRefresh()).toBe(true);
    expect(sub.requestRefresh()).toBe(true); // already running: nothing new starts
    expect(s.calls.length).toBe(2);
    release();
    await flush();
    expect(sub.version).toBe(2);
    expect(sub.requestRefresh()).toBe(false); // the cooldown starts at the attempt
  });

  test("keeps the last good document when a fetch fails, is not a JWKS or is too large", async () => {
    const s = scripted([
      doc("a"),
      () => new Response("down", { status: 503 }),
      () => Response.json({ keys: "nope" }),
      () => new Response("x".repeat(1 << 21)),
      () => Promise.reject(new Error("connection refused")),
    ]);
    const sub = registry.subscribe("http://127.0.0.1:1/jwks", settings, log);
    await flush();
    for (const why of ["the server answered 503", 'the response has no "keys" array', "over 1048576 bytes", "connection refused"]) {
      s.tick(1_000);
      sub.requestRefresh();
      await flush();
      expect(registry.status()[0]!.lastError).toContain(why);
      expect(sub.version).toBe(1);
      expect(dec(sub.document)).toContain('"kid":"a"');
    }
    expect(registry.status()[0]!.failuresInARow).toBe(4);
  });

  test("stops refreshing when the last subscriber closes", async () => {
    const s = scripted([doc("a")]);
    const a = registry.subscribe("http://127.0.0.1:1/jwks", settings, log);
    const b = registry.subscribe("http://127.0.0.1:1/jwks", settings, log);
    await flush();
    a.close();
    a.close();
    expect(registry.status()).toMatchObject([{ subscribers: 1 }]);
    b.close();
    expect(registry.status()).toEqual([]);
    s.tick(10_000);
    expect(b.requestRefresh()).toBe(false);
    expect(s.calls.length).toBe(1);
  });

  test("refuses URLs that are not http(s) and intervals out of range, naming them", () => {
    scripted([]);
    expect(() => registry.subscribe("file:///etc/passwd", settings, log)).toThrow("expected http or https");
    expect(() => registry.subscribe("not a url", settings, log)).toThrow("is not a URL");
    expect(() => registry.subscribe("http://127.0.0.1/", { ...settings, minRefreshMs: 0 }, log)).toThrow("minRefreshMs 0");
  });

  test("a session hands out one handle per URL and settings and releases them all", async () => {
    scripted([doc("a"), doc("b")]);
    const session = new JwksSession(registry, log);
    const h1 = session.register("http://127.0.0.1:1/jwks", settings);
    expect(session.register("http://127.0.0.1:1/jwks", settings)).toBe(h1);
    expect(session.register("HTTP://127.0.0.1:1/jwks", settings)).toBe(h1); // same URL once normalised
    const h2 = session.register("http://127.0.0.1:1/jwks", { ...settings, refreshMs: 30_000 });
    expect(h2).not.toBe(h1);
    expect(registry.status().length).toBe(2);
    session.close(h1);
    expect(session.get(h1)).toBeNull();
    session.release();
    expect(registry.status()).toEqual([]);
  });
});
