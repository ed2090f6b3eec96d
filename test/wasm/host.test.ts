// The filter host with real compiled filters: the ABI, outcomes, config, state, failures, hot loads.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import binaryen from "binaryen";
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { validateConfig } from "../../runtime/config/load.ts";
import { createLogger } from "../../runtime/observability/log.ts";
import { Registry } from "../../runtime/observability/metrics.ts";
import type { RequestContext } from "../../runtime/proxy/context.ts";
import { ListHeaders } from "../../runtime/proxy/filter-headers.ts";
import { FilterHarness, type HarnessFilter } from "../../runtime/wasm/harness.ts";
import { createFilterHost } from "../../runtime/wasm/host.ts";
import { buildFixtures, type Built } from "./fixtures.ts";

let w: Built;
const open: FilterHarness[] = [];
async function harness(filters: Omit<HarnessFilter, "wasm">[] | Omit<HarnessFilter, "wasm">, wasm?: string): Promise<FilterHarness> {
  const list = (Array.isArray(filters) ? filters : [filters]).map((f) => ({ wasm: wasm ?? w.kit, ...f }));
  const h = await FilterHarness.create(list);
  open.push(h);
  return h;
}
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** A minimal module with the SDK's exports, written by hand (binaryen parses the text format). */
function handMade(opts: { start: "unreachable" | "nop"; abi: number }): Uint8Array {
  const mod = binaryen.parseText(`(module
    (memory (export "memory") 1)
    (func (export "mesh_start") (${opts.start}))
    (func (export "mesh_abi_version") (result i32) (i32.const ${opts.abi}))
    (func (export "mesh_buffer") (param i32) (result i32) (i32.const 1024))
    (func (export "mesh_configure") (param i32) (result i32) (i32.const 0))
    (func (export "mesh_phases") (result i32) (i32.const 1))
    (func (export "mesh_body_limit") (result i32) (i32.const 0))
    (func (export "mesh_on_request") (result i32) (i32.const 0))
    (func (export "mesh_on_response") (param i32) (result i32) (i32.const 0)))`);
  const bytes = mod.emitBinary();
  mod.dispose();
  return bytes;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(10);
  }
}

beforeAll(async () => {
  w = await buildFixtures();
}, 60_000);
afterAll(() => Promise.all(open.map((h) => h.close())));

describe("request phase ABI", () => {
  test("reads method, path, query, client, route, peer and request id", async () => {
    const h = await harness({ config: { mode: "echo" } });
    const r = h.request({ method: "POST", path: "/a/b?q=42&z", clientAddress: "10.0.0.7", peerIdentity: "spiffe://mesh/ns/a/sa/b", requestId: "rid-1" });
    expect(r.outcome.kind).toBe("continue");
    expect(r.header("x-method")).toBe("POST");
    expect(r.header("x-path")).toBe("/a/b");
    expect(r.header("x-query")).toBe("q=42&z");
    expect(r.header("x-q")).toBe("42");
    expect(r.header("x-client")).toBe("10.0.0.7");
    expect(r.header("x-route")).toBe("test");
    expect(r.header("x-peer")).toBe("spiffe://mesh/ns/a/sa/b");
    expect(r.header("x-request-id")).toBe("rid-1");
    expect(r.header("x-clock-ok")).toBe("1");
    expect(h.request({}).header("x-peer")).toBe("(none)");
  });

  test("gets, sets, adds, removes and lists headers in place", async () => {
    const h = await harness({ config: { mode: "echo" } });
    const r = h.request({ headers: [["x-copy-me", "hello"], ["X-Remove-Me", "1"], ["x-count", "stale"], ["x-add-twice", "1"], ["x-remove-me", "2"]] });
    const headers = r.ctx.headers.list();
    expect(r.header("x-copied")).toBe("hello");
    expect(headers.some(([n]) => n === "x-remove-me")).toBe(false);
    // set replaces the existing value in its place rather than appending a second one
    expect(headers.filter(([n]) => n === "x-count")).toEqual([["x-count", "1"]]);
    expect(headers[1]).toEqual(["x-count", "1"]);
    expect(headers.filter(([n]) => n === "x-twice").map(([, v]) => v)).toEqual(["a", "b"]);
    expect(r.header("x-first-header")).toBe("x-copy-me=hello");
    expect(Number(r.header("x-header-count"))).toBeGreaterThan(10);
  });

  test("lists thousands of long headers while the filter's memory grows under the host", async () => {
    // Decoding ~1.3 MB of headers can exceed the default 5 ms budget on a loaded machine.
    const h = await harness({ config: { mode: "echo" }, cpuBudgetMs: 500 });
    const many: [string, string][] = Array.from({ length: 3000 }, (_, i) => [`x-h${i}`, "v".repeat(200) + i]);
    const r = h.request({ headers: many });
    expect(r.outcome).toEqual({ kind: "continue" });
    expect(Number(r.header("x-header-count"))).toBe(3000 + 10); // plus the ten x-* the kit set before listing
    expect(r.header("x-first-header")).toBe(`x-h0=${"v".repeat(200)}0`);
    expect(r.header("x-h2999")).toBe("v".repeat(200) + "2999");
  });

  test("changes the path and keeps the query", async () => {
    const h = await harness({ config: { mode: "echo" } });
    const r = h.request({ path: "/old?keep=1", headers: { "x-set-path": "/new/place" } });
    expect(r.ctx.target).toBe("/new/place?keep=1");
  });

  test("sees the body only when it asked for it and it fits", async () => {
    const h = await harness({ config: { mode: "echo", wantBody: 1024 }, maxBodyBytes: 16 });
    expect(h.chain.wantsBody).toBe(16);
    expect(h.request({ method: "POST", body: "hello" }).header("x-body")).toBe("hello");
    expect(h.request({ method: "POST", body: "x".repeat(17) }).header("x-body")).toBe("(none)");
    const none = await harness({ config: { mode: "echo" } });
    expect(none.chain.wantsBody).toBe(0);
    expect(none.request({ method: "POST", body: "hello" }).header("x-body")).toBe("(none)");
  });
});

describe("outcomes", () => {
  test("respond carries status, headers and body", async () => {
    const h = await harness({ config: { mode: "respond", status: 451, body: "unavailable for legal reasons" } });
    const r = h.request({ path: "/x" });
    expect(r.outcome).toEqual({
      kind: "respond",
      status: 451,
      headers: [["content-type", "text/plain"], ["x-kit", "1"]],
      body: new TextEncoder().encode("unavailable for legal reasons"),
    });
  });

  test("delay asks the proxy to wait, and a later respond carries the delay", async () => {
    const h = await harness([{ name: "slow", config: { mode: "delay", delayMs: 30 } }, { name: "deny", config: { mode: "respond", status: 429 } }]);
    const r = h.request({});
    expect(r.outcome.kind).toBe("respond");
    if (r.outcome.kind === "respond") expect(r.outcome.delayMs).toBe(30);
    const only = await harness({ config: { mode: "delay", delayMs: 30 } });
    expect(only.request({}).outcome).toEqual({ kind: "delay", ms: 30 });
  });

  test("response phase changes headers, asks for a retry, or replaces the response", async () => {
    const h = await harness({ config: { mode: "retry" } });
    const ok = h.response({ status: 200, headers: { "x-upstream-secret": "s3cr3t", server: "up" } });
    expect(ok.outcome.kind).toBe("continue");
    expect(ok.headers).toEqual([["server", "up"], ["x-kit-status", "200"], ["x-kit-count", "1"]]);
    expect(h.response({ status: 503 }).outcome).toEqual({ kind: "retry", delayMs: 25 });
    const r = await harness({ config: { mode: "replace" } });
    const out = r.response({ status: 500 }).outcome;
    expect(out.kind).toBe("respond");
    if (out.kind === "respond") expect([out.status, text(out.body)]).toEqual([502, "replaced by kit"]);
  });

  test("a phase the filter does not register is not in the chain", async () => {
    const h = await harness({ config: { prefixes: ["/admin"] } }, w.denyPath);
    expect(h.chain.hasResponsePhase).toBe(false);
    expect(h.response({ status: 200 }).outcome.kind).toBe("continue");
    expect(h.metricsText()).not.toContain('phase="response"');
  });
});

describe("config", () => {
  test("is delivered at start and again on change, keeping state", async () => {
    const h = await harness({ config: { mode: "echo", v: 1 } });
    expect(h.request({}).header("x-config")).toBe('{"mode":"echo","v":1}');
    expect(h.request({}).header("x-count")).toBe("2");
    expect(await h.reconfigure([{ mode: "echo", v: 2 }])).toEqual([]);
    const r = h.request({});
    expect(r.header("x-config")).toBe('{"mode":"echo","v":2}');
    expect(r.header("x-count")).toBe("3");
  });

  test("a config the filter rejects is an error naming the field, and the old config stays", async () => {
    const h = await harness({ config: { mode: "echo", v: 1 } });
    const errors = await h.reconfigure([{ mode: "reject-config" }]);
    expect(errors).toEqual(["routes[0].filters[0].config: this config is rejected on purpose"]);
    expect(h.request({}).header("x-config")).toBe('{"mode":"echo","v":1}');
  });

  test("a config hook that traps is an error; the filter keeps serving the old config", async () => {
    const h = await harness({ config: { mode: "echo", v: 1 } });
    const errors = await h.reconfigure([{ mode: "echo", trapOnConfigure: true }]);
    expect(errors.length).toBe(1);
    expect(errors[0]).toMatch(/^routes\[0\]\.filters\[0\]\.config: config hook failed \(trap\)/);
    expect(h.request({}).header("x-config")).toBe('{"mode":"echo","v":1}');
  });

  test("the module's schema is checked before the filter sees the config", async () => {
    const h = await harness({ config: { prefixes: ["/a"] } }, w.denyPath);
    expect(await h.reconfigure([{ prefixes: ["a"], extra: true }])).toEqual([
      "routes[0].filters[0].config.prefixes[0]: expected a string matching /^//",
      'routes[0].filters[0].config: unknown field "extra"',
    ]);
  });

  test("a missing module is an error naming the field and the directory", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mesh-filters-"));
    try {
      const host = createFilterHost({ log: createLogger({ sink: () => {} }), metrics: new Registry(), filterDir: dir, watch: false });
      const cfg = validateConfig({
        routes: [{ name: "r0", cluster: "c" }, { name: "r1", cluster: "c", filters: [{ name: "auth" }] }],
        clusters: [{ name: "c", endpoints: ["127.0.0.1:9"] }],
      });
      if (!cfg.ok) throw new Error(cfg.errors.join());
      expect(await host.applyConfig(cfg.config)).toEqual([`routes[1].filters[0].module: no module "auth" in ${dir}`]);
      expect(host.chain("r1")).toBeNull();
      await host.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("state and isolation", () => {
  test("state persists across calls and is private to each filter", async () => {
    const h = await harness([{ name: "a", config: { mode: "echo" } }, { name: "b", config: { mode: "echo" } }]);
    for (let i = 1; i <= 3; i++) {
      const r = h.request({});
      // One shared counter would read 1 then 2 within a single request.
      expect([r.header("x-count-a"), r.header("x-count-b")]).toEqual([String(i), String(i)]);
    }
  });

  test("metrics appear in the registry labelled with each filter's name", async () => {
    const h = await harness([{ name: "a", config: { mode: "echo" } }, { name: "b", config: { mode: "echo" } }]);
    h.request({ path: "/abc" });
    h.request({ path: "/abcdefgh" });
    const m = h.metricsText();
    expect(m).toContain('mesh_filter_kit_requests_total{filter="a"} 2');
    expect(m).toContain('mesh_filter_kit_requests_total{filter="b"} 2');
    expect(m).toContain('mesh_filter_kit_path_length_bucket{filter="a",le="4"} 1');
    expect(m).toContain('mesh_filter_kit_path_length_bucket{filter="a",le="16"} 2');
    expect(m).toContain('mesh_filter_calls_total{filter="b",phase="request"} 2');
  });

  test("logs go to the proxy log tagged with the filter", async () => {
    const h = await harness({ name: "chatty", config: { mode: "log" } });
    h.request({ path: "/seen" });
    expect(h.logs).toContainEqual(expect.objectContaining({ level: "warn", msg: "kit saw /seen", filter: "chatty", route: "test" }));
  });
});

describe("failures", () => {
  test("a trapping fail-closed filter gives a fail outcome and is replaced by a fresh instance", async () => {
    const h = await harness({ config: { mode: "echo" } });
    expect(h.request({}).header("x-count")).toBe("1");
    expect(h.request({}).header("x-count")).toBe("2");
    const r = h.request({ headers: { "x-trap": "1" } });
    expect(r.outcome).toMatchObject({ kind: "fail", filter: "kit", phase: "request", reason: "trap" });
    // The spare took over at once: fresh state, already configured.
    const next = h.request({});
    expect(next.outcome.kind).toBe("continue");
    expect(next.header("x-count")).toBe("1");
    expect(next.header("x-config")).toBe('{"mode":"echo"}');
    expect(h.metricsText()).toContain('mesh_filter_failures_total{filter="kit",phase="request",reason="trap"} 1');
    expect(h.logs).toContainEqual(expect.objectContaining({ level: "warn", msg: "filter failed; replacing its instance", reason: "trap" }));
    const rt = h.chain.filters[0]!;
    await until(() => rt.health().spare);
  });

  test("a trapping fail-open filter is skipped and the chain goes on", async () => {
    const h = await harness([{ name: "flaky", failurePolicy: "open", config: { mode: "trap" } }, { name: "after", config: { mode: "echo" } }]);
    const r = h.request({});
    expect(r.outcome.kind).toBe("continue");
    expect(r.header("x-count-after")).toBe("1");
    expect(h.metricsText()).toContain('mesh_filter_failures_total{filter="flaky",phase="request",reason="trap"} 1');
  });

  test("abort() (a failed assert) is a trap whose message says where", async () => {
    const h = await harness({ config: { mode: "echo" } });
    const out = h.request({ headers: { "x-abort": "1" } }).outcome;
    expect(out).toMatchObject({ kind: "fail", reason: "trap" });
    if (out.kind === "fail") expect(out.message).toMatch(/kit asserted at assembly\/index\.ts:\d+:\d+/);
  });

  test("a trap in the response phase is reported for that phase", async () => {
    const h = await harness({ config: { mode: "echo" } });
    expect(h.response({ status: 200, headers: { "x-trap-response": "1" } }).outcome).toMatchObject({ kind: "fail", phase: "response", reason: "trap" });
  });

  test("an infinite loop is stopped within its CPU budget", async () => {
    const h = await harness({ config: { mode: "echo" }, cpuBudgetMs: 5 });
    const t = performance.now();
    const r = h.request({ headers: { "x-loop": "1" } });
    const ms = performance.now() - t;
    expect(r.outcome).toMatchObject({ kind: "fail", reason: "cpu_budget" });
    expect(ms).toBeLessThan(50);
    expect(h.request({}).outcome.kind).toBe("continue");
    expect(h.metricsText()).toContain('reason="cpu_budget"} 1');
  });

  test("a filter that allocates past memoryLimitMb fails with reason memory and is replaced", async () => {
    const h = await harness({ config: { mode: "echo" }, memoryLimitMb: 2 });
    const r = h.request({ headers: { "x-hog": "1" } });
    expect(r.outcome).toMatchObject({ kind: "fail", reason: "memory" });
    const rt = h.chain.filters[0]!;
    expect(rt.liveMemoryBytes()).toBeLessThanOrEqual(2 * 1024 * 1024);
    expect(h.request({}).header("x-count")).toBe("1");
  });
});

describe("hot load", () => {
  test("loadModule swaps in new instances; a request in flight finishes on the old one", async () => {
    const h = await harness({ config: { mode: "echo" } });
    h.request({});
    const inFlight = h.request({}); // count 2 on the old instance
    const res = await h.loadModule("kit", new Uint8Array(readFileSync(w.kit)));
    expect(res).toEqual({ ok: true });
    expect(h.response({ status: 200 }, inFlight).header("x-kit-count")).toBe("2");
    expect(h.request({}).header("x-count")).toBe("1");
    expect(h.metricsText()).toContain('mesh_filter_module_loads_total{module="kit",result="ok"} 2');
  });

  test("a wrong sha256 is refused and the old module keeps serving", async () => {
    const h = await harness({ config: { mode: "echo" } });
    h.request({});
    const res = await h.loadModule("kit", new Uint8Array(readFileSync(w.kit)), "00".repeat(32));
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.error).toContain('sha256 mismatch for module "kit"');
    expect(h.request({}).header("x-count")).toBe("2");
  });

  test("bad modules are refused with the reason, the old one still serving", async () => {
    const h = await harness({ config: { mode: "echo" } });
    const garbage = await h.loadModule("kit", new TextEncoder().encode("not wasm at all"));
    expect(garbage).toEqual({ ok: false, error: "not a WebAssembly module (bad magic number)" });
    const empty = await h.loadModule("kit", new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]));
    expect(empty.ok).toBe(false);
    if (!empty.ok) expect(empty.error).toContain("lacks required exports memory, mesh_start");
    // deny-path's schema requires "prefixes": its init would fail for this filter's config.
    const wrong = await h.loadModule("kit", new Uint8Array(readFileSync(w.denyPath)));
    expect(wrong.ok).toBe(false);
    if (!wrong.ok) expect(wrong.error).toContain("routes[0].filters[0]");
    expect(h.request({}).header("x-count")).toBe("1");
  });

  test("a module that traps while starting, or speaks another ABI, is refused; the old one serves", async () => {
    const h = await harness({ config: { mode: "echo" } });
    h.request({});
    const trapsAtStart = await h.loadModule("kit", handMade({ start: "unreachable", abi: 1 }));
    expect(trapsAtStart.ok).toBe(false);
    if (!trapsAtStart.ok) expect(trapsAtStart.error).toMatch(/module "kit" failed to start \(trap\)/);
    const otherAbi = await h.loadModule("kit", handMade({ start: "nop", abi: 2 }));
    expect(otherAbi.ok).toBe(false);
    if (!otherAbi.ok) expect(otherAbi.error).toContain('module "kit" speaks filter ABI 2; this host speaks 1');
    expect(h.request({}).header("x-count")).toBe("2");
    expect(h.metricsText()).toContain('mesh_filter_module_loads_total{module="kit",result="rejected"} 2');
  });

  test("writing a module into the watched filter dir hot-loads it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mesh-filters-"));
    const metrics = new Registry();
    const host = createFilterHost({ log: createLogger({ sink: () => {} }), metrics, filterDir: dir });
    try {
      writeFileSync(join(dir, "hot.wasm"), readFileSync(w.addHeader));
      const cfg = validateConfig({ routes: [{ name: "r", cluster: "c", filters: [{ name: "hot", config: {} }] }], clusters: [{ name: "c", endpoints: ["127.0.0.1:9"] }] });
      if (!cfg.ok) throw new Error(cfg.errors.join());
      expect(await host.applyConfig(cfg.config)).toEqual([]);
      const chain = host.chain("r")!;
      const ctx = (): RequestContext => ({ requestId: "1", method: "GET", target: "/", headers: new ListHeaders([]), clientAddress: "", routeName: "r", peerIdentity: null, startedAt: 0, perTryTimeoutMs: 0, attempt: 1, upstreamError: null, replayable: true });
      const c1 = ctx();
      chain.onRequest(c1, null);
      expect(c1.headers.list()).toEqual([]); // add-header with no config adds nothing
      // Write then rename, as `meshctl filter build` does.
      writeFileSync(join(dir, "hot.wasm.tmp"), readFileSync(w.kit));
      renameSync(join(dir, "hot.wasm.tmp"), join(dir, "hot.wasm"));
      await until(() => {
        const c = ctx();
        chain.onRequest(c, null);
        return c.headers.get("x-count") !== null;
      });
      expect(metrics.render()).toContain('mesh_filter_module_loads_total{module="hot",result="ok"} 1');
    } finally {
      await host.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
