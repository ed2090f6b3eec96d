// The same compiled filters run on Deno: run with `deno test -A test/deno/wasm_host_deno.ts`.
// Builds (or reuses) the .wasm files the Bun suite uses, so both runtimes load identical bytes.
import assert from "node:assert/strict";
import { FilterHarness } from "../../runtime/wasm/harness.ts";
import { buildFixtures } from "../wasm/fixtures.ts";

// deno-lint-ignore no-explicit-any
declare const Deno: any;

const opts = { sanitizeOps: false, sanitizeResources: false };
const built = await buildFixtures();

Deno.test("add-header sets request headers on Deno", opts, async () => {
  const h = await FilterHarness.load(built.addHeader, { config: { request: { "x-tenant": "blue" } } });
  try {
    const r = h.request({ headers: { "x-tenant": "red" } });
    assert.equal(r.outcome.kind, "continue");
    assert.deepEqual(r.ctx.headers.list(), [["x-tenant", "blue"]]);
  } finally {
    await h.close();
  }
});

Deno.test("deny-path answers 403 and counts it on Deno", opts, async () => {
  const h = await FilterHarness.load(built.denyPath, { config: { prefixes: ["/admin"] } });
  try {
    const r = h.request({ path: "/admin/x" });
    assert.equal(r.outcome.kind, "respond");
    if (r.outcome.kind === "respond") assert.equal(r.outcome.status, 403);
    assert.match(h.metricsText(), /mesh_filter_denied_total\{filter="deny-path"\} 1/);
  } finally {
    await h.close();
  }
});

Deno.test("a trap fails closed and the spare takes over; a loop stops within budget", opts, async () => {
  const h = await FilterHarness.load(built.kit, { config: { mode: "echo" }, cpuBudgetMs: 5 });
  try {
    const first = h.request({});
    assert.equal(first.header("x-count"), "1", JSON.stringify(first.outcome));
    const trapped = h.request({ headers: { "x-trap": "1" } }).outcome;
    assert.deepEqual([trapped.kind, trapped.kind === "fail" && trapped.reason], ["fail", "trap"], JSON.stringify(trapped));
    const after = h.request({});
    assert.equal(after.header("x-count"), "1", JSON.stringify(after.outcome));
    const t = performance.now();
    const looped = h.request({ headers: { "x-loop": "1" } }).outcome;
    const ms = performance.now() - t;
    assert.deepEqual([looped.kind, looped.kind === "fail" && looped.reason], ["fail", "cpu_budget"], JSON.stringify(looped));
    assert.ok(ms < 50, `stopped within 50 ms (took ${ms.toFixed(1)} ms; ${JSON.stringify(h.logs[0])})`);
  } finally {
    await h.close();
  }
});

Deno.test("crypto host functions work on Deno", opts, async () => {
  const h = await FilterHarness.load(built.kit, { config: { mode: "crypto" } });
  try {
    const r = h.request({ headers: { "x-op": "hmac", "x-key": "Jefe", "x-data": "what do ya want for nothing?" } });
    assert.equal(r.header("x-result"), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    assert.equal(h.request({ headers: { "x-op": "sha256", "x-data": "abc" } }).header("x-result"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  } finally {
    await h.close();
  }
});
