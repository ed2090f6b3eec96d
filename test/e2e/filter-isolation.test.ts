// Filters under load, through a real proxy process: hot swaps lose no request, and a filter that
// traps or never returns hurts nobody else.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildFilter, REPO_ROOT } from "../../control/cli/filter-build.ts";
import { buildFixtures } from "../wasm/fixtures.ts";
import { startReadyProcess, tempDir, upstream, type ProxyProcess } from "./harness.ts";

/** Two builds of add-header that also stamp `x-version: A` or `B`, so a swap is visible per request. */
async function buildVariants(dir: string): Promise<{ A: Uint8Array; B: Uint8Array }> {
  const out: Record<string, Uint8Array> = {};
  for (const v of ["A", "B"]) {
    const src = join(dir, `variant-${v.toLowerCase()}`);
    cpSync(join(REPO_ROOT, "filters/add-header"), src, { recursive: true });
    const entry = join(src, "assembly/index.ts");
    const code = readFileSync(entry, "utf8").replace(
      "onRequest((req: Request): Outcome => {",
      `onRequest((req: Request): Outcome => {\n  req.headers.set("x-version", "${v}");`,
    );
    if (!code.includes(`"x-version", "${v}"`)) throw new Error("could not patch the add-header source");
    writeFileSync(entry, code);
    const built = await buildFilter(src, { outDir: join(dir, "out") });
    out[v] = built.bytes;
  }
  return { A: out.A!, B: out.B! };
}

interface Sample {
  issuedAt: number;
  status: number;
  version: string | null;
  ms: number;
}

/** `n` loops sending requests until stopped; every outcome recorded with when it was issued. */
function load(url: string, n: number, init: RequestInit = {}) {
  const samples: Sample[] = [];
  const errors: string[] = [];
  let running = true;
  const loops = Array.from({ length: n }, async () => {
    while (running) {
      const issuedAt = performance.now();
      try {
        const res = await fetch(url, init);
        const body = await res.text();
        samples.push({ issuedAt, status: res.status, version: JSON.parse(body).headers?.["x-version"] ?? null, ms: performance.now() - issuedAt });
      } catch (err) {
        errors.push(String(err));
      }
    }
  });
  return {
    samples,
    errors,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

const echo = () =>
  upstream((req) => {
    const headers: Record<string, string> = {};
    req.headers.forEach((v, k) => (headers[k] = v));
    return Response.json({ headers });
  });

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

describe("filters under load", () => {
  const up = echo();
  let dir: string;
  let variants: { A: Uint8Array; B: Uint8Array };
  let proxy: ProxyProcess;

  beforeAll(async () => {
    dir = tempDir("mesh-isolation-");
    variants = await buildVariants(dir);
    const filterDir = join(dir, "filters");
    mkdirSync(filterDir);
    writeFileSync(join(filterDir, "swap.wasm"), variants.A);
    writeFileSync(join(filterDir, "kit.wasm"), readFileSync((await buildFixtures()).kit));
    proxy = await startReadyProcess(`
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
filterDir: ${filterDir}
routes:
  - name: swapped
    match: { path: { prefix: /swap } }
    cluster: up
    filters: [{ name: swap, config: {} }]
  - name: hostile
    match: { path: { prefix: /hostile } }
    cluster: up
    filters: [{ name: kit, failurePolicy: closed, cpuBudgetMs: 5, config: { mode: echo } }]
  - name: plain
    cluster: up
clusters:
  - { name: up, endpoints: ["127.0.0.1:${up.port}"] }
`);
  }, 120_000);

  afterAll(() => {
    proxy?.kill("SIGKILL");
    up.stop();
  });

  test("20 hot swaps under sustained load: no failed request, and every request after a swap sees the new module", async () => {
    const admin = `http://127.0.0.1:${proxy.admin}`;
    const traffic = load(`${proxy.url}/swap`, 16);
    const swaps: { startedAt: number; doneAt: number; version: string }[] = [];
    await Bun.sleep(200);
    for (let i = 0; i < 20; i++) {
      const version = i % 2 === 0 ? "B" : "A";
      const bytes = variants[version as "A" | "B"];
      const startedAt = performance.now();
      const res = await fetch(`${admin}/filters/swap`, {
        method: "PUT",
        body: bytes as Uint8Array<ArrayBuffer>,
        headers: { "x-sha256": createHash("sha256").update(bytes).digest("hex") },
      });
      expect(await res.json()).toEqual({ ok: true });
      swaps.push({ startedAt, doneAt: performance.now(), version });
      await Bun.sleep(60);
    }
    await Bun.sleep(100);
    await traffic.stop();

    expect(traffic.errors).toEqual([]);
    expect(traffic.samples.length).toBeGreaterThan(500);
    expect(traffic.samples.filter((s) => s.status !== 200)).toEqual([]);
    // A request issued after swap i finished and before swap i+1 began must see swap i's module.
    let checked = 0;
    for (let i = 0; i < swaps.length; i++) {
      const from = swaps[i]!.doneAt;
      const to = swaps[i + 1]?.startedAt ?? Infinity;
      for (const s of traffic.samples) {
        if (s.issuedAt > from && s.issuedAt < to) {
          expect(s.version).toBe(swaps[i]!.version);
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThan(200);
  }, 60_000);

  test("a filter that traps or never returns is stopped; the other routes keep their latency", async () => {
    const baseline = load(`${proxy.url}/plain`, 8);
    await Bun.sleep(500);
    await baseline.stop();
    const before = baseline.samples.map((s) => s.ms);

    const steady = load(`${proxy.url}/plain`, 8);
    const hostile: { status: number; code: string | null; ms: number }[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const res = await fetch(`${proxy.url}/hostile`, { headers: i % 2 === 0 ? { "x-loop": "1" } : { "x-trap": "1" } });
      await res.text();
      hostile.push({ status: res.status, code: res.headers.get("x-mesh-error"), ms: performance.now() - t0 });
      // the replacement instance serves ordinary requests on the same route
      const ok = await fetch(`${proxy.url}/hostile`);
      await ok.text();
      expect(ok.status).toBe(200);
    }
    await steady.stop();
    const during = steady.samples.map((s) => s.ms);

    expect(hostile.every((h) => h.status === 500 && h.code === "filter_failed")).toBe(true);
    // Stopped within the budget's order of magnitude even counting a cold first call, not hung.
    expect(Math.max(...hostile.map((h) => h.ms))).toBeLessThan(1000);
    expect(steady.errors).toEqual([]);
    expect(steady.samples.every((s) => s.status === 200)).toBe(true);
    const p50Before = pct(before, 50);
    const p50During = pct(during, 50);
    console.log(`plain route p50 ${p50Before.toFixed(2)} ms before, ${p50During.toFixed(2)} ms during; p99 during ${pct(during, 99).toFixed(2)} ms`);
    // Each runaway call holds the event loop for its CPU budget (5 ms here), so a stream of them costs
    // everyone a few ms; a filter that hung the proxy would push this to seconds.
    expect(p50During).toBeLessThan(p50Before * 3 + 10);
    expect(pct(during, 99)).toBeLessThan(100);
    const metrics = await (await fetch(`http://127.0.0.1:${proxy.admin}/metrics`)).text();
    expect(metrics).toMatch(/mesh_filter_failures_total\{[^}]*filter="kit"[^}]*\} \d+/);
  }, 60_000);
});
