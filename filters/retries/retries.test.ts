// Runs with: meshctl filter test filters/retries (or bun test filters/ after a build).
// The policy is pure (assembly/policy.ts); these tests drive it through the compiled filter with
// synthetic responses, using the harness's copy of the proxy's attempt loop (FilterHarness.exchange).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildFilter } from "../../control/cli/filter-build.ts";
import { FilterHarness, type TestResponse } from "../../runtime/wasm/harness.ts";

let wasm: string;
const open: FilterHarness[] = [];
async function load(config: unknown, settings: { maxBodyBytes?: number } = {}) {
  const h = await FilterHarness.load(wasm, { config, ...settings });
  open.push(h);
  return h;
}

beforeAll(async () => {
  wasm = (await buildFilter(import.meta.dir, { cache: true })).outFile;
});
afterAll(() => Promise.all(open.map((h) => h.close())));

function metric(h: FilterHarness, name: string): number {
  const m = new RegExp(`^mesh_filter_${name}\\{filter="retries"\\} (\\d+)`, "m").exec(h.metricsText());
  return m ? Number(m[1]) : 0;
}

const kinds = (x: ReturnType<FilterHarness["exchange"]>) => x.attempts.map((a) => a.response.outcome.kind);
const always = (r: TestResponse) => () => r;
/** A budget that never gets in the way, for tests about something else. */
const noBudget = { percent: 1000, minRetriesPerSecond: 1_000_000 };

describe("attempts", () => {
  test("retries a GET that failed twice with 503 and sends the attempt number on every attempt", async () => {
    const h = await load({ maxAttempts: 3 });
    const x = h.exchange({ method: "GET", path: "/a" }, (n) => ({ status: n < 3 ? 503 : 200 }));
    expect(kinds(x)).toEqual(["retry", "retry", "continue"]);
    expect(x.attempts.map((a) => a.headers.find(([n]) => n === "x-mesh-attempt")?.[1])).toEqual(["1", "2", "3"]);
    expect(metric(h, "retries_total")).toBe(2);
  });

  test("stops at maxAttempts and lets the last response through", async () => {
    const h = await load({ maxAttempts: 3 });
    const x = h.exchange({}, always({ status: 503, headers: { "x-from": "upstream" } }));
    expect(kinds(x)).toEqual(["retry", "retry", "continue"]);
    expect(x.attempts[2]!.response.header("x-from")).toBe("upstream");
  });

  test("defaults to two attempts", async () => {
    const h = await load({});
    expect(kinds(h.exchange({}, always({ status: 502 })))).toEqual(["retry", "continue"]);
  });

  test("maxAttempts 1 never retries", async () => {
    const h = await load({ maxAttempts: 1 });
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["continue"]);
  });

  test("overwrites an attempt header the client sent, and can use another name or none", async () => {
    const h = await load({ attemptHeader: "X-Try" });
    const x = h.exchange({ headers: { "x-try": "7" } }, always({ status: 503 }));
    expect(x.attempts.map((a) => a.headers.filter(([n]) => n === "x-try"))).toEqual([[["x-try", "1"]], [["x-try", "2"]]]);
    const none = await load({ attemptHeader: "" });
    const y = none.exchange({}, always({ status: 503 }));
    expect(y.attempts.every((a) => a.headers.every(([n]) => n !== "x-mesh-attempt"))).toBe(true);
    expect(kinds(y)).toEqual(["retry", "continue"]);
  });

  test("sets the per-try timeout in the request phase, and leaves it alone when not configured", async () => {
    expect((await load({ perTryTimeoutMs: 250 })).request().ctx.perTryTimeoutMs).toBe(250);
    expect((await load({})).request().ctx.perTryTimeoutMs).toBe(0);
  });
});

describe("retryOn", () => {
  const cases: [string, unknown[], TestResponse, "retry" | "continue"][] = [
    ["gateway-error (the default) retries 502", [], { status: 502 }, "retry"],
    ["gateway-error retries 504", ["gateway-error"], { status: 504 }, "retry"],
    ["gateway-error retries a refused connection", ["gateway-error"], { upstreamError: "upstream_refused" }, "retry"],
    ["gateway-error retries a per-try timeout", ["gateway-error"], { upstreamError: "upstream_timeout" }, "retry"],
    ["gateway-error leaves 500 alone", ["gateway-error"], { status: 500 }, "continue"],
    ["5xx retries 500", ["5xx"], { status: 500 }, "retry"],
    ["5xx retries 501", ["5xx"], { status: 501 }, "retry"],
    ["5xx retries a reset", ["5xx"], { upstreamError: "upstream_reset" }, "retry"],
    ["5xx leaves 429 alone", ["5xx"], { status: 429 }, "continue"],
    ["connect-failure retries a refused connection", ["connect-failure"], { upstreamError: "upstream_refused" }, "retry"],
    ["connect-failure retries a connect timeout", ["connect-failure"], { upstreamError: "upstream_connect_timeout" }, "retry"],
    ["connect-failure leaves a reset alone", ["connect-failure"], { upstreamError: "upstream_reset" }, "continue"],
    ["connect-failure leaves an upstream's 503 alone", ["connect-failure"], { status: 503 }, "continue"],
    ["connect-failure leaves a timeout alone", ["connect-failure"], { upstreamError: "upstream_timeout" }, "continue"],
    ["reset retries a reset", ["reset"], { upstreamError: "upstream_reset" }, "retry"],
    ["reset leaves a refused connection alone", ["reset"], { upstreamError: "upstream_refused" }, "continue"],
    ["reset leaves an upstream's 502 alone", ["reset"], { status: 502 }, "continue"],
  ];
  for (const [name, retryOn, res, want] of cases) {
    test(name, async () => {
      const h = await load(retryOn.length === 0 ? {} : { retryOn });
      expect(h.response(res, h.request()).outcome.kind).toBe(want);
    });
  }

  test("retriable-status-codes retries the listed statuses an upstream answered, not the proxy's stand-ins", async () => {
    const h = await load({ retryOn: ["retriable-status-codes"], statusCodes: [409, 503] });
    expect(h.response({ status: 409 }, h.request()).outcome.kind).toBe("retry");
    expect(h.response({ status: 503 }, h.request()).outcome.kind).toBe("retry");
    expect(h.response({ upstreamError: "upstream_refused" }, h.request()).outcome.kind).toBe("continue");
    expect(h.response({ status: 500 }, h.request()).outcome.kind).toBe("continue");
    expect(h.response({ status: 200 }, h.request()).outcome.kind).toBe("continue");
  });

  test("never retries a success", async () => {
    const h = await load({ retryOn: ["5xx", "gateway-error", "connect-failure", "reset"] });
    for (const status of [200, 204, 301, 404]) expect(h.response({ status }, h.request()).outcome.kind).toBe("continue");
  });
});

describe("methods and bodies", () => {
  test("does not retry a POST or PATCH unless retryNonIdempotent", async () => {
    const h = await load({});
    for (const method of ["POST", "PATCH"]) expect(kinds(h.exchange({ method }, always({ status: 503 })))).toEqual(["continue"]);
    for (const method of ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]) {
      expect(kinds(h.exchange({ method }, always({ status: 503 })))).toEqual(["retry", "continue"]);
    }
    const yes = await load({ retryNonIdempotent: true });
    expect(kinds(yes.exchange({ method: "POST", body: "{}" }, always({ status: 503 })))).toEqual(["retry", "continue"]);
  });

  test("retries a body up to maxBodyBytes and not a larger one", async () => {
    const h = await load({ retryNonIdempotent: true, maxBodyBytes: 16 });
    expect(h.chain.wantsBody).toBe(16);
    const small = h.exchange({ method: "PUT", body: "0123456789abcdef" }, always({ status: 503 }));
    expect(small.request.ctx.replayable).toBe(true);
    expect(kinds(small)).toEqual(["retry", "continue"]);
    const large = h.exchange({ method: "PUT", body: "0123456789abcdefg" }, always({ status: 503 }));
    expect(large.request.ctx.replayable).toBe(false);
    expect(kinds(large)).toEqual(["continue"]);
    expect(metric(h, "retries_total")).toBe(1);
  });

  test("maxBodyBytes 0 retries only requests without a body", async () => {
    const h = await load({ maxBodyBytes: 0 });
    expect(h.chain.wantsBody).toBe(0);
    expect(kinds(h.exchange({ method: "PUT", body: "x" }, always({ status: 503 })))).toEqual(["continue"]);
    expect(kinds(h.exchange({ method: "PUT" }, always({ status: 503 })))).toEqual(["retry", "continue"]);
  });

  test("the filter's own maxBodyBytes setting caps what it can replay", async () => {
    const h = await load({ maxBodyBytes: 1_000_000 }, { maxBodyBytes: 1024 });
    expect(h.chain.wantsBody).toBe(1024);
  });
});

describe("backoff", () => {
  test("waits a full-jitter delay in [0, min(maxMs, baseMs * 2^(n-1))) before retry n", async () => {
    const h = await load({ maxAttempts: 10, backoff: { baseMs: 10, maxMs: 60 }, budget: noBudget });
    const ceilings = [10, 20, 40, 60, 60, 60, 60, 60, 60];
    const highest = ceilings.map(() => 0);
    for (let i = 0; i < 200; i++) {
      const x = h.exchange({}, always({ status: 503 }));
      expect(x.delays.length).toBe(9);
      x.delays.forEach((d, n) => {
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(ceilings[n]!);
        highest[n] = Math.max(highest[n]!, d);
      });
    }
    // Jitter spreads over the whole range: 200 draws all below half the ceiling has odds of 2^-200.
    highest.forEach((d, n) => expect(d).toBeGreaterThanOrEqual(ceilings[n]! / 2));
  });

  test("baseMs 0 retries at once; baseMs alone caps at ten times it", async () => {
    const zero = await load({ maxAttempts: 4, backoff: { baseMs: 0, maxMs: 0 } });
    expect(zero.exchange({}, always({ status: 503 })).delays).toEqual([0, 0, 0]);
    const h = await load({ maxAttempts: 10, backoff: { baseMs: 1 }, budget: noBudget });
    let highest = 0;
    for (let i = 0; i < 100; i++) for (const d of h.exchange({}, always({ status: 503 })).delays) highest = Math.max(highest, d);
    expect(highest).toBeLessThan(10);
    expect(highest).toBeGreaterThanOrEqual(5);
  });
});

describe("budget", () => {
  test("during a total outage allows about percent % retries, not one per request", async () => {
    const h = await load({ maxAttempts: 3, backoff: { baseMs: 0, maxMs: 0 }, budget: { percent: 20, minRetriesPerSecond: 0 } });
    let retried = 0;
    for (let i = 0; i < 100; i++) retried += h.exchange({}, always({ upstreamError: "upstream_refused" })).delays.length;
    expect(retried).toBeGreaterThanOrEqual(19);
    expect(retried).toBeLessThanOrEqual(20);
    expect(metric(h, "retries_total")).toBe(retried);
    // Every request saw at least one refusal: its first attempt, or the retry that also failed.
    expect(metric(h, "retry_budget_exhausted_total")).toBeGreaterThanOrEqual(100 - retried);
  });

  test("minRetriesPerSecond lets a quiet service retry", async () => {
    const h = await load({ budget: { percent: 0, minRetriesPerSecond: 0.5, windowMs: 4000 } }); // 2 retries per window
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["retry", "continue"]);
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["retry", "continue"]);
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["continue"]);
    expect(metric(h, "retry_budget_exhausted_total")).toBe(1);
  });

  test("refills as the window slides past old retries", async () => {
    const h = await load({ budget: { percent: 0, minRetriesPerSecond: 10, windowMs: 100 } }); // one retry per 100 ms
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["retry", "continue"]);
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["continue"]);
    await Bun.sleep(130);
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["retry", "continue"]);
  });

  test("counts requests that were not retried towards the budget", async () => {
    const h = await load({ budget: { percent: 10, minRetriesPerSecond: 0 } });
    for (let i = 0; i < 9; i++) expect(h.request().outcome.kind).toBe("continue"); // successes: no response needed
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["retry", "continue"]);
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["continue"]);
  });
});

describe("config", () => {
  test("refuses an unknown retryOn, naming the field", async () => {
    const h = await load({});
    const errors = await h.reconfigure([{ retryOn: ["5xx", "timeouts"] }]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toStartWith("routes[0].filters[0].config.retryOn[1]: expected one of");
  });

  test("refuses more attempts than the proxy makes", async () => {
    const h = await load({});
    expect(await h.reconfigure([{ maxAttempts: 11 }])).toEqual(["routes[0].filters[0].config.maxAttempts: expected at most 10"]);
  });

  test("refuses retriable-status-codes without statusCodes, and statusCodes without it", async () => {
    const h = await load({});
    expect(await h.reconfigure([{ retryOn: ["retriable-status-codes"] }])).toEqual([
      "routes[0].filters[0].config: statusCodes: required (non-empty) when retryOn has retriable-status-codes",
    ]);
    expect(await h.reconfigure([{ retryOn: ["5xx"], statusCodes: [409] }])).toEqual([
      "routes[0].filters[0].config: statusCodes: only used with retryOn retriable-status-codes",
    ]);
  });

  test("refuses a backoff whose maxMs is below baseMs, and keeps the old config", async () => {
    const h = await load({ maxAttempts: 3 });
    const errors = await h.reconfigure([{ maxAttempts: 5, backoff: { baseMs: 100, maxMs: 50 } }]);
    expect(errors).toEqual(["routes[0].filters[0].config: backoff.maxMs: expected at least backoff.baseMs (100)"]);
    expect(kinds(h.exchange({}, always({ status: 503 })))).toHaveLength(3);
  });

  test("refuses an attempt header that is not a header name", async () => {
    const h = await load({});
    const errors = await h.reconfigure([{ attemptHeader: "x attempt" }]);
    expect(errors[0]).toStartWith("routes[0].filters[0].config.attemptHeader: expected a string matching");
  });

  test("a reload keeps the budget's counts", async () => {
    const h = await load({ budget: { percent: 0, minRetriesPerSecond: 0.2, windowMs: 5000 } }); // 1 retry per window
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["retry", "continue"]);
    expect(await h.reconfigure([{ maxAttempts: 3, budget: { percent: 0, minRetriesPerSecond: 0.2, windowMs: 5000 } }])).toEqual([]);
    expect(kinds(h.exchange({}, always({ status: 503 })))).toEqual(["continue"]);
  });
});
