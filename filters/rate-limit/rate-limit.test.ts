// Runs with: meshctl filter test filters/rate-limit (or bun test filters/ after a build).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildFilter } from "../../control/cli/filter-build.ts";
import type { RequestOutcome } from "../../runtime/wasm/types.ts";
import { FilterHarness, type TestRequest } from "../../runtime/wasm/harness.ts";

let wasm: string;
const open: FilterHarness[] = [];
async function load(config: unknown, opts: { memoryLimitMb?: number } = {}) {
  const h = await FilterHarness.load(wasm, { config, ...opts });
  open.push(h);
  return h;
}

beforeAll(async () => {
  wasm = (await buildFilter(import.meta.dir, { cache: true })).outFile;
});
afterAll(() => Promise.all(open.map((h) => h.close())));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function respond(o: RequestOutcome) {
  if (o.kind !== "respond") throw new Error(`expected a respond outcome, got ${o.kind}`);
  return { status: o.status, header: (n: string) => o.headers.find(([k]) => k === n)?.[1] ?? null, body: new TextDecoder().decode(o.body) };
}

/** How many of `n` requests pass. */
function passes(h: FilterHarness, n: number, req: TestRequest = {}): number {
  let ok = 0;
  for (let i = 0; i < n; i++) if (h.request(req).outcome.kind === "continue") ok++;
  return ok;
}

function metric(h: FilterHarness, name: string): number {
  const m = new RegExp(`^mesh_filter_${name}\\{filter="rate-limit"\\} (\\S+)$`, "m").exec(h.metricsText());
  return m ? Number(m[1]) : NaN;
}

describe("the bucket", () => {
  test("lets a burst through, then answers 429 with Retry-After and RateLimit headers", async () => {
    const h = await load({ requestsPerUnit: 5, unit: "hour" });
    expect(passes(h, 5)).toBe(5);
    const r = respond(h.request().outcome);
    expect(r.status).toBe(429);
    expect(r.header("content-type")).toBe("application/json");
    expect(r.header("retry-after")).toBe("720"); // one token per 720 s, rounded up from just under
    expect(r.header("ratelimit-limit")).toBe("5");
    expect(r.header("ratelimit-remaining")).toBe("0");
    expect(r.header("ratelimit-reset")).toBe("3600");
    expect(JSON.parse(r.body)).toMatchObject({ error: "rate_limited", route: "test" });
    expect(metric(h, "rate_limit_allowed_total")).toBe(5);
    expect(metric(h, "rate_limit_limited_total")).toBe(1);
  });

  test("rounds Retry-After up to whole seconds", async () => {
    const h = await load({ rate: 0.4, burst: 1 }); // a token every 2.5 s
    expect(passes(h, 1)).toBe(1);
    const r = respond(h.request().outcome);
    expect(r.header("retry-after")).toBe("3");
    expect(r.header("ratelimit-reset")).toBe("3");
  });

  test("refills at the configured rate", async () => {
    const h = await load({ rate: 10, burst: 1 }); // a token every 100 ms
    expect(passes(h, 3)).toBe(1);
    await sleep(150);
    expect(passes(h, 3)).toBe(1);
  });

  test("defaults burst to requestsPerUnit, or to the rate rounded up", async () => {
    expect(passes(await load({ requestsPerUnit: 3, unit: "minute" }), 10)).toBe(3);
    expect(passes(await load({ rate: 2.5 / 3600 }), 10)).toBe(1);
    expect(passes(await load({ rate: 0.0001, burst: 4 }), 10)).toBe(4);
  });
});

describe("keys", () => {
  test("a header gives every value its own bucket", async () => {
    const h = await load({ rate: 0.001, burst: 2, key: { header: "X-Api-Key" } });
    expect(passes(h, 5, { headers: { "x-api-key": "a" } })).toBe(2);
    expect(passes(h, 5, { headers: { "x-api-key": "b" } })).toBe(2);
  });

  test("a claim is the request header the auth filter forwards it in", async () => {
    const h = await load({ rate: 0.001, burst: 1, key: { claim: "x-auth-sub" } });
    expect(passes(h, 3, { headers: { "x-auth-sub": "alice" } })).toBe(1);
    expect(passes(h, 3, { headers: { "x-auth-sub": "bob" } })).toBe(1);
  });

  test("the client address gives every client its own bucket", async () => {
    const h = await load({ rate: 0.001, burst: 1, key: { clientAddress: true } });
    expect(passes(h, 3, { clientAddress: "10.0.0.1" })).toBe(1);
    expect(passes(h, 3, { clientAddress: "10.0.0.2" })).toBe(1);
  });

  test("the route is one bucket for everyone (and the default key)", async () => {
    for (const config of [{ rate: 0.001, burst: 2, key: { route: true } }, { rate: 0.001, burst: 2 }]) {
      const h = await load(config);
      expect(passes(h, 1, { clientAddress: "10.0.0.1", headers: { "x-api-key": "a" } }) + passes(h, 3, { clientAddress: "10.0.0.2" })).toBe(2);
    }
  });

  test("requests without the key share one bucket by default", async () => {
    const h = await load({ rate: 0.001, burst: 2, key: { header: "x-api-key" } });
    expect(passes(h, 5) + passes(h, 5, { headers: { "x-api-key": "" } })).toBe(2);
    expect(passes(h, 1, { headers: { "x-api-key": "a" } })).toBe(1);
    expect(metric(h, "rate_limit_unkeyed_total")).toBe(10);
  });

  test("requests without the key pass unlimited with missingKey: allow", async () => {
    const h = await load({ rate: 0.001, burst: 2, key: { header: "x-api-key" }, missingKey: "allow" });
    expect(passes(h, 20)).toBe(20);
    expect(passes(h, 5, { headers: { "x-api-key": "a" } })).toBe(2);
  });

  test("a header value cannot pose as the shared bucket of keyless requests", async () => {
    const h = await load({ rate: 0.001, burst: 1, key: { header: "x-api-key" } });
    expect(passes(h, 1)).toBe(1);
    for (const v of ["unknown", "\\0", "route"]) expect(passes(h, 1, { headers: { "x-api-key": v } })).toBe(1);
  });

  test("keys are stored hashed: long values that differ only at the end keep distinct buckets", async () => {
    const h = await load({ rate: 0.001, burst: 1, key: { header: "x-api-key" } });
    const long = "k".repeat(5000);
    expect(passes(h, 3, { headers: { "x-api-key": long + "1" } })).toBe(1);
    expect(passes(h, 3, { headers: { "x-api-key": long + "2" } })).toBe(1);
    expect(passes(h, 3, { headers: { "x-api-key": long + "1" } })).toBe(0);
  });
});

describe("response headers", () => {
  test("allowed responses carry RateLimit-Limit, -Remaining and -Reset", async () => {
    const h = await load({ requestsPerUnit: 10, unit: "minute", key: { header: "x-api-key" } });
    const first = h.request({ headers: { "x-api-key": "a" } });
    h.request({ headers: { "x-api-key": "a" } });
    const res = h.response({ status: 200 }, first);
    expect(res.header("ratelimit-limit")).toBe("10");
    expect(res.header("ratelimit-remaining")).toBe("8"); // where the bucket stands when the response passes
    expect(res.header("ratelimit-reset")).toBe("12");
  });

  test("keeps the upstream's own RateLimit headers", async () => {
    const h = await load({ rate: 1, burst: 5 });
    const res = h.response({ status: 200, headers: { "ratelimit-limit": "100", "ratelimit-remaining": "7" } }, h.request());
    expect(res.header("ratelimit-limit")).toBe("100");
    expect(res.header("ratelimit-remaining")).toBe("7");
    expect(res.header("ratelimit-reset")).toBeNull();
  });

  test("has no response phase with responseHeaders: false, and gets it back on reconfigure", async () => {
    const h = await load({ rate: 1, responseHeaders: false });
    expect(h.chain.hasResponsePhase).toBe(false);
    expect(await h.reconfigure([{ rate: 1 }])).toEqual([]);
    expect(h.chain.hasResponsePhase).toBe(true);
  });

  test("keyless requests let through get no RateLimit headers", async () => {
    const h = await load({ rate: 1, key: { header: "x-api-key" }, missingKey: "allow" });
    expect(h.response({ status: 200 }, h.request()).header("ratelimit-remaining")).toBeNull();
  });
});

describe("memory", () => {
  test("evicts the least recently used bucket at maxKeys", async () => {
    const h = await load({ rate: 0.001, burst: 1, key: { header: "k" }, maxKeys: 3 });
    for (const k of ["a", "b", "c"]) expect(passes(h, 1, { headers: { k } })).toBe(1);
    expect(passes(h, 1, { headers: { k: "a" } })).toBe(0); // a is now the most recent
    expect(passes(h, 1, { headers: { k: "d" } })).toBe(1); // evicts b, the least recent
    expect(passes(h, 1, { headers: { k: "b" } })).toBe(1); // a fresh bucket for b; evicts c
    expect(passes(h, 1, { headers: { k: "a" } })).toBe(0); // a survived
    expect(metric(h, "rate_limit_keys")).toBe(3);
    expect(metric(h, "rate_limit_evicted_total")).toBe(2);
  });

  test("answers exactly as a reference LRU model under random churn", async () => {
    // A small table (8 keys, an index of 16) over 20 keys: every path of probing and removal runs.
    const h = await load({ rate: 0.000001, burst: 3, key: { header: "k" }, maxKeys: 8 });
    const model = new Map<string, number>(); // insertion order = least recent first
    let seed = 42;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let i = 0; i < 20_000; i++) {
      const k = `key-${Math.floor(rand() * 20)}`;
      let tokens = model.get(k);
      if (tokens === undefined) {
        if (model.size === 8) model.delete(model.keys().next().value!);
        tokens = 3;
      }
      model.delete(k);
      model.set(k, tokens >= 1 ? tokens - 1 : tokens);
      expect(h.request({ headers: { k } }).outcome.kind).toBe(tokens >= 1 ? "continue" : "respond");
    }
  });

  test("forgets buckets once they are full again", async () => {
    const h = await load({ rate: 4, burst: 1, key: { header: "k" } }); // full again 250 ms after use
    for (let i = 0; i < 50; i++) h.request({ headers: { k: `key-${i}` } });
    expect(metric(h, "rate_limit_keys")).toBe(50);
    await sleep(350);
    for (let i = 0; i < 20; i++) h.request({ headers: { k: "same" } });
    expect(metric(h, "rate_limit_keys")).toBe(1);
    expect(metric(h, "rate_limit_evicted_total")).toBe(0);
  });

  test("100,000 distinct keys keep the key count and linear memory bounded", async () => {
    const h = await load({ rate: 0.001, burst: 5, key: { header: "x-api-key" }, maxKeys: 1000 });
    const memory = () => h.chain.filters[0]!.liveMemoryBytes();
    const send = (from: number, to: number, pad = "") => {
      for (let i = from; i < to; i++) expect(h.request({ headers: { "x-api-key": `${pad}key-${i}` } }).outcome.kind).toBe("continue");
    };
    send(0, 10_000);
    const after10k = memory();
    send(10_000, 100_000);
    const after100k = memory();
    expect(metric(h, "rate_limit_keys")).toBe(1000);
    expect(metric(h, "rate_limit_evicted_total")).toBe(99_000);
    // The garbage collector may still be a step behind; what must not happen is growth with the keys.
    expect(after100k).toBeLessThanOrEqual(after10k + 65536);
    expect(after100k).toBeLessThanOrEqual(2 * 1024 * 1024);
    // Keys of 4 KiB each cost no more: they are stored hashed.
    send(100_000, 120_000, "x".repeat(4096));
    expect(memory()).toBeLessThanOrEqual(after100k);
  }, 60_000);

  test("the default maxKeys (10000) takes under 2 MiB, however long the keys", async () => {
    const h = await load({ rate: 0.001, key: { header: "x-api-key" } });
    for (let i = 0; i < 30_000; i++) h.request({ headers: { "x-api-key": `${"y".repeat(200)}-${i}` } });
    expect(metric(h, "rate_limit_keys")).toBe(10_000);
    expect(h.chain.filters[0]!.liveMemoryBytes()).toBeLessThanOrEqual(2 * 1024 * 1024);
  }, 60_000);

  test("no request pays for growing the table: 100000 keys stay within the CPU budget", async () => {
    const h = await load({ rate: 0.001, key: { header: "x-api-key" }, maxKeys: 100_000 }, { memoryLimitMb: 32 });
    let failed = 0;
    for (let i = 0; i < 200_000; i++) if (h.request({ headers: { "x-api-key": `key-${i}` } }).outcome.kind !== "continue") failed++;
    expect(failed).toBe(0);
    expect(metric(h, "rate_limit_keys")).toBe(100_000);
    expect(h.metricsText()).not.toContain("mesh_filter_failures_total");
  }, 60_000);
});

describe("config", () => {
  test("a new rate keeps the buckets; a new key starts afresh", async () => {
    const h = await load({ rate: 0.001, burst: 2, key: { header: "k" } });
    expect(passes(h, 3, { headers: { k: "a" } })).toBe(2);
    expect(await h.reconfigure([{ rate: 0.002, burst: 2, key: { header: "k" } }])).toEqual([]);
    expect(passes(h, 1, { headers: { k: "a" } })).toBe(0);
    expect(await h.reconfigure([{ rate: 0.002, burst: 2, key: { header: "other" } }])).toEqual([]);
    expect(passes(h, 3, { headers: { other: "a" } })).toBe(2);
  });

  test("the schema names bad fields before the filter runs", async () => {
    const h = await load({ rate: 1 });
    expect(await h.reconfigure([{ rate: 1, unit: "day" }])).toEqual(['routes[0].filters[0].config.unit: expected one of "second", "minute", "hour"']);
    expect(await h.reconfigure([{ rate: 1, burst: 0.5 }])).toEqual(["routes[0].filters[0].config.burst: expected integer, got number"]);
    expect(await h.reconfigure([{ rate: 1, key: { header: "bad header" } }])).toEqual([
      "routes[0].filters[0].config.key.header: expected a string matching /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/",
    ]);
    expect(await h.reconfigure([{ rate: 1, key: { ip: true } }])).toEqual(['routes[0].filters[0].config.key: unknown field "ip"']);
    expect(await h.reconfigure([{ rate: 1, capacity: 5 }])).toEqual(['routes[0].filters[0].config: unknown field "capacity"']);
    expect(await h.reconfigure([{ rate: 0 }])).toEqual(["routes[0].filters[0].config.rate: expected more than 0"]);
    expect(await h.reconfigure([{ requestsPerUnit: 0, unit: "minute" }])).toEqual(["routes[0].filters[0].config.requestsPerUnit: expected more than 0"]);
  });

  test("the filter rejects combinations the schema cannot express", async () => {
    const h = await load({ rate: 1 });
    const cases: [unknown, string][] = [
      [{}, "rate: required (tokens per second), or requestsPerUnit with unit"],
      [{ rate: 1, requestsPerUnit: 5, unit: "minute" }, "rate, requestsPerUnit: give one of them, not both"],
      [{ requestsPerUnit: 5 }, 'unit: expected "second", "minute" or "hour" with requestsPerUnit'],
      [{ rate: 1, unit: "minute" }, "unit: only with requestsPerUnit (rate is per second)"],
      [{ rate: 1, key: {} }, 'key: expected exactly one of "header", "claim", "clientAddress", "route"'],
      [{ rate: 1, key: { route: true, clientAddress: true } }, 'key: expected exactly one of "header", "claim", "clientAddress", "route"'],
    ];
    for (const [config, message] of cases) expect(await h.reconfigure([config])).toEqual([`routes[0].filters[0].config: ${message}`]);
    // Still running the config it had.
    expect(h.request().outcome.kind).toBe("continue");
  });
});
