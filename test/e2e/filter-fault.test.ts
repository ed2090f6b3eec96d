// The fault filter through a running proxy: aborts, delays, header-requested faults, percentages.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildStandardFilters, startInProcess, upstream, type InProcessProxy } from "./harness.ts";

describe("fault filter", () => {
  let hits = 0;
  let lastHeaders: Record<string, string> = {};
  const up = upstream((req) => {
    hits++;
    lastHeaders = {};
    req.headers.forEach((v, k) => (lastHeaders[k] = v));
    return new Response("ok");
  });
  let p: InProcessProxy;

  /** Status, body, fault header and milliseconds taken. */
  async function timed(path: string, headers: Record<string, string> = {}) {
    const t0 = performance.now();
    const res = await fetch(`${p.url}${path}`, { headers });
    const body = await res.text();
    return { status: res.status, body, fault: res.headers.get("x-mesh-fault"), type: res.headers.get("content-type"), ms: performance.now() - t0 };
  }

  beforeAll(async () => {
    await buildStandardFilters("fault");
    p = await startInProcess(`
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
filterDir: filters/dist
routes:
  - name: abort
    match: { path: { prefix: /abort } }
    cluster: up
    filters: [{ name: fault, config: { abort: { status: 503 } } }]
  - name: delay
    match: { path: { prefix: /delay } }
    cluster: up
    filters: [{ name: fault, config: { delay: { ms: 150 } } }]
  - name: marked
    match: { path: { prefix: /marked } }
    cluster: up
    filters: [{ name: fault, config: { delay: { ms: 20 }, delayedRequestHeader: x-fault-delayed } }]
  - name: overrides
    match: { path: { prefix: /overrides } }
    cluster: up
    filters: [{ name: fault, config: { allowHeaderOverrides: true, maxDelayMs: 200 } }]
  - name: share
    match: { path: { prefix: /share } }
    cluster: up
    filters: [{ name: fault, config: { abort: { percent: 20, status: 502 }, delay: { percent: 30, ms: 1 } } }]
  - name: plain
    cluster: up
clusters:
  - { name: up, endpoints: ["127.0.0.1:${up.port}"] }
`);
  });
  afterAll(async () => {
    await p.stop();
    up.stop();
  });

  test("an abort answers without reaching the upstream, with a JSON body and x-mesh-fault", async () => {
    hits = 0;
    const r = await timed("/abort");
    expect(r.status).toBe(503);
    expect(r.fault).toBe("abort");
    expect(r.type).toBe("application/json");
    expect(JSON.parse(r.body)).toEqual({ error: "fault_injected", fault: "abort", status: 503 });
    expect(hits).toBe(0);
  });

  test("a delay holds the request, then forwards it unchanged", async () => {
    const r = await timed("/delay", { "x-probe": "1" });
    expect(r.status).toBe(200);
    expect(r.ms).toBeGreaterThanOrEqual(145);
    expect(r.fault).toBeNull();
    expect(lastHeaders["x-probe"]).toBe("1");
    expect(Object.keys(lastHeaders).filter((k) => k.includes("fault"))).toEqual([]);
  });

  test("a delayed request carries delayedRequestHeader upstream when configured", async () => {
    expect((await timed("/marked")).status).toBe(200);
    expect(lastHeaders["x-fault-delayed"]).toBe("20");
  });

  test("honours fault headers where allowHeaderOverrides is on, bounded by maxDelayMs", async () => {
    const aborted = await timed("/overrides", { "x-mesh-fault-abort": "418" });
    expect([aborted.status, aborted.fault]).toEqual([418, "abort"]);
    const delayed = await timed("/overrides", { "x-mesh-fault-delay-ms": "100" });
    expect(delayed.status).toBe(200);
    expect(delayed.ms).toBeGreaterThanOrEqual(95);
    const capped = await timed("/overrides", { "x-mesh-fault-delay-ms": "60000" });
    expect(capped.status).toBe(200);
    expect(capped.ms).toBeGreaterThanOrEqual(195);
    expect(capped.ms).toBeLessThan(2000);
    expect((await timed("/overrides")).status).toBe(200);
  });

  test("ignores fault headers elsewhere", async () => {
    const r = await timed("/plain-share", { "x-mesh-fault-abort": "500", "x-mesh-fault-delay-ms": "1000" });
    expect(r.status).toBe(200);
    expect(r.ms).toBeLessThan(500);
    const d = await timed("/delay", { "x-mesh-fault-abort": "500" });
    expect(d.status).toBe(200);
  });

  test("aborts and delays the configured shares of 2000 requests", async () => {
    hits = 0;
    const statuses: number[] = [];
    for (let batch = 0; batch < 40; batch++) {
      const rs = await Promise.all(Array.from({ length: 50 }, () => timed("/share")));
      for (const r of rs) statuses.push(r.status);
    }
    const aborted = statuses.filter((s) => s === 502).length;
    // 20 % of 2000: sd 0.9 points; 4 points is over 4 sd.
    expect(Math.abs((aborted * 100) / 2000 - 20)).toBeLessThan(4);
    expect(statuses.filter((s) => s === 200).length).toBe(2000 - aborted);
    expect(hits).toBe(2000 - aborted);
    const metrics = await (await fetch(`http://127.0.0.1:${p.admin}/metrics`)).text();
    const delayed = Number(/^mesh_filter_fault_delays_total\{filter="fault"\} (\d+)$/m.exec(metrics)?.[1]);
    expect(Math.abs((delayed * 100) / 2000 - 30)).toBeLessThan(4);
  });
});
