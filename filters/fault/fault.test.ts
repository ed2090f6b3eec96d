// Runs with: meshctl filter test filters/fault (or bun test filters/ after a build).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildFilter } from "../../control/cli/filter-build.ts";
import type { RequestOutcome } from "../../runtime/wasm/types.ts";
import { FilterHarness, type TestRequest } from "../../runtime/wasm/harness.ts";

let wasm: string;
const open: FilterHarness[] = [];
async function load(config: unknown) {
  const h = await FilterHarness.load(wasm, { config });
  open.push(h);
  return h;
}

beforeAll(async () => {
  wasm = (await buildFilter(import.meta.dir, { cache: true })).outFile;
});
afterAll(() => Promise.all(open.map((h) => h.close())));

function respond(o: RequestOutcome) {
  if (o.kind !== "respond") throw new Error(`expected a respond outcome, got ${o.kind}`);
  return { status: o.status, header: (n: string) => o.headers.find(([k]) => k === n)?.[1] ?? null, body: new TextDecoder().decode(o.body) };
}

/** Shares (in percent) of `n` requests aborted and delayed, and the delays seen. */
function sample(h: FilterHarness, n: number, req: TestRequest = {}) {
  let aborted = 0;
  let delayed = 0;
  const ms = new Set<number>();
  for (let i = 0; i < n; i++) {
    const o = h.request(req).outcome;
    if (o.kind === "respond") aborted++;
    else if (o.kind === "delay") {
      delayed++;
      ms.add(o.ms);
    } else expect(o.kind).toBe("continue");
  }
  return { aborted: (aborted * 100) / n, delayed: (delayed * 100) / n, abortCount: aborted, delayCount: delayed, ms };
}

function metric(h: FilterHarness, name: string): number {
  const m = new RegExp(`^mesh_filter_${name}\\{filter="fault"\\} (\\S+)$`, "m").exec(h.metricsText());
  return m ? Number(m[1]) : 0;
}

describe("percentages over 10,000 requests", () => {
  // Binomial: at 10 % the standard deviation over 10,000 is 0.3 points, at 25 % 0.43; 2 points is
  // over 4.5 of them.
  test("aborts 10 % of requests, within 2 points", async () => {
    const h = await load({ abort: { percent: 10, status: 503 } });
    const s = sample(h, 10_000);
    expect(Math.abs(s.aborted - 10)).toBeLessThan(2);
    expect(s.delayed).toBe(0);
    expect(metric(h, "fault_aborts_total")).toBe(s.abortCount);
  });

  test("delays 25 % of requests by the configured time, within 2 points", async () => {
    const h = await load({ delay: { percent: 25, ms: 40 } });
    const s = sample(h, 10_000);
    expect(Math.abs(s.delayed - 25)).toBeLessThan(2);
    expect(s.aborted).toBe(0);
    expect([...s.ms]).toEqual([40]);
    expect(metric(h, "fault_delays_total")).toBe(s.delayCount);
  });

  test("with both configured, each share holds and no request gets both", async () => {
    const h = await load({ delay: { percent: 25, ms: 5 }, abort: { percent: 10 } });
    const s = sample(h, 10_000);
    expect(Math.abs(s.aborted - 10)).toBeLessThan(2);
    expect(Math.abs(s.delayed - 25)).toBeLessThan(2);
  });

  test("takes fractional percentages", async () => {
    const h = await load({ abort: { percent: 2.5 } });
    expect(Math.abs(sample(h, 10_000).aborted - 2.5)).toBeLessThan(1);
  });

  test("0 % never injects and 100 % always does", async () => {
    expect(sample(await load({ delay: { percent: 0, ms: 1 }, abort: { percent: 0, status: 503 } }), 2000)).toMatchObject({ abortCount: 0, delayCount: 0 });
    expect(sample(await load({ abort: { percent: 100 } }), 2000).aborted).toBe(100);
    expect(sample(await load({ delay: { ms: 7 } }), 2000).delayed).toBe(100); // percent defaults to 100
  });
});

describe("aborts and delays", () => {
  test("an abort answers with the status, a small JSON body and x-mesh-fault: abort", async () => {
    const h = await load({ abort: { status: 503 } });
    const r = respond(h.request().outcome);
    expect(r.status).toBe(503);
    expect(r.header("x-mesh-fault")).toBe("abort");
    expect(r.header("content-type")).toBe("application/json");
    expect(JSON.parse(r.body)).toEqual({ error: "fault_injected", fault: "abort", status: 503 });
  });

  test("an abort can carry its own body and content type", async () => {
    const plain = respond((await load({ abort: { status: 429, body: "slow down" } })).request().outcome);
    expect([plain.status, plain.body, plain.header("content-type")]).toEqual([429, "slow down", "text/plain; charset=utf-8"]);
    const xml = respond((await load({ abort: { status: 500, body: "<e/>", contentType: "application/xml" } })).request().outcome);
    expect([xml.body, xml.header("content-type"), xml.header("x-mesh-fault")]).toEqual(["<e/>", "application/xml", "abort"]);
  });

  test("a delayed request goes upstream unchanged, unless delayedRequestHeader is set", async () => {
    const plain = (await load({ delay: { ms: 25 } })).request({ headers: { a: "1" } });
    expect(plain.outcome).toEqual({ kind: "delay", ms: 25 });
    expect(plain.ctx.headers.list()).toEqual([["a", "1"]]);
    const marked = (await load({ delay: { ms: 25 }, delayedRequestHeader: "X-Fault-Delayed" })).request({ headers: { a: "1" } });
    expect(marked.ctx.headers.list()).toEqual([["a", "1"], ["x-fault-delayed", "25"]]);
  });
});

describe("faults requested by header", () => {
  test("are ignored unless allowHeaderOverrides is on", async () => {
    const h = await load({});
    expect(h.request({ headers: { "x-mesh-fault-abort": "503", "x-mesh-fault-delay-ms": "100" } }).outcome.kind).toBe("continue");
  });

  test("abort with the status the header gives, and delay by the milliseconds it gives", async () => {
    const h = await load({ allowHeaderOverrides: true });
    const r = respond(h.request({ headers: { "x-mesh-fault-abort": "418" } }).outcome);
    expect([r.status, r.header("x-mesh-fault"), JSON.parse(r.body).status]).toEqual([418, "abort", 418]);
    expect(h.request({ headers: { "x-mesh-fault-delay-ms": "120" } }).outcome).toEqual({ kind: "delay", ms: 120 });
    expect(h.request().outcome.kind).toBe("continue");
  });

  test("cut delays to maxDelayMs", async () => {
    const h = await load({ allowHeaderOverrides: true, maxDelayMs: 250 });
    expect(h.request({ headers: { "x-mesh-fault-delay-ms": "999999999" } }).outcome).toEqual({ kind: "delay", ms: 250 });
    const d = await load({ allowHeaderOverrides: true });
    expect(d.request({ headers: { "x-mesh-fault-delay-ms": "60000" } }).outcome).toEqual({ kind: "delay", ms: 10000 });
  });

  test("with invalid values are ignored and counted", async () => {
    const h = await load({ allowHeaderOverrides: true });
    for (const v of ["abc", "99", "600", "5030", "-1", ""]) expect(h.request({ headers: { "x-mesh-fault-abort": v } }).outcome.kind).toBe("continue");
    for (const v of ["1e3", "-5", "12.5", "1234567890"]) expect(h.request({ headers: { "x-mesh-fault-delay-ms": v } }).outcome.kind).toBe("continue");
    expect(metric(h, "fault_header_rejected_total")).toBe(10);
    expect(h.request({ headers: { "x-mesh-fault-delay-ms": "0" } }).outcome.kind).toBe("continue");
  });

  test("use the configured header names", async () => {
    const h = await load({ allowHeaderOverrides: true, headers: { delay: "X-Envoy-Fault-Delay-Request", abort: "x-envoy-fault-abort-request" } });
    expect(h.request({ headers: { "x-envoy-fault-delay-request": "30" } }).outcome).toEqual({ kind: "delay", ms: 30 });
    expect(h.request({ headers: { "x-envoy-fault-abort-request": "502" } }).outcome.kind).toBe("respond");
    expect(h.request({ headers: { "x-mesh-fault-abort": "502" } }).outcome.kind).toBe("continue");
  });

  test("take precedence over the configured percentages; an abort header over a delay header", async () => {
    const h = await load({ allowHeaderOverrides: true, abort: { percent: 100, status: 500 } });
    expect(h.request({ headers: { "x-mesh-fault-delay-ms": "10" } }).outcome).toEqual({ kind: "delay", ms: 10 });
    expect(respond(h.request({ headers: { "x-mesh-fault-abort": "502", "x-mesh-fault-delay-ms": "10" } }).outcome).status).toBe(502);
    expect(respond(h.request().outcome).status).toBe(500);
  });
});

describe("config", () => {
  test("the schema names bad fields before the filter runs", async () => {
    const h = await load({});
    expect(await h.reconfigure([{ abort: { percent: 100.5 } }])).toEqual(["routes[0].filters[0].config.abort.percent: expected at most 100"]);
    expect(await h.reconfigure([{ delay: { percent: 5 } }])).toEqual(["routes[0].filters[0].config.delay.ms: required"]);
    expect(await h.reconfigure([{ abort: { status: 600 } }])).toEqual(["routes[0].filters[0].config.abort.status: expected at most 599"]);
    expect(await h.reconfigure([{ delay: { ms: 1.5 } }])).toEqual(["routes[0].filters[0].config.delay.ms: expected integer, got number"]);
    expect(await h.reconfigure([{ headers: { delay: "x y" } }])).toEqual([
      "routes[0].filters[0].config.headers.delay: expected a string matching /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/",
    ]);
    expect(await h.reconfigure([{ abort: { percent: 5 }, allowHeaders: true }])).toEqual(['routes[0].filters[0].config: unknown field "allowHeaders"']);
  });

  test("refuses percentages that add up to more than 100, and keeps the running config", async () => {
    const h = await load({ abort: { percent: 100, status: 503 } });
    const errors = await h.reconfigure([{ delay: { percent: 60, ms: 10 }, abort: { percent: 50 } }]);
    expect(errors).toEqual([
      "routes[0].filters[0].config: delay.percent + abort.percent: expected at most 100 (a request is delayed or aborted, not both; for delayed aborts list two fault filters, the delay first)",
    ]);
    expect(h.request().outcome.kind).toBe("respond");
  });

  test("two fault filters in a chain give a delayed abort", async () => {
    const h = await FilterHarness.create([
      { wasm, name: "slow", config: { delay: { ms: 30 } } },
      { wasm, name: "fail", config: { abort: { status: 504 } } },
    ]);
    open.push(h);
    const o = h.request().outcome;
    expect(o).toMatchObject({ kind: "respond", status: 504, delayMs: 30 });
  });
});
