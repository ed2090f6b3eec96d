// Runs with: meshctl filter test filters/deny-path (or bun test filters/ after a build).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { buildFilter } from "../../control/cli/filter-build.ts";
import { FilterHarness } from "../../runtime/wasm/harness.ts";

let h: FilterHarness;

beforeAll(async () => {
  const { outFile } = await buildFilter(import.meta.dir, { cache: true });
  h = await FilterHarness.load(outFile, { config: { prefixes: ["/admin", "/internal/"], exceptMethods: ["OPTIONS"] } });
});
afterAll(() => h.close());

test("answers 403 for a denied prefix and counts it", () => {
  const r = h.request({ path: "/admin/users?id=1" });
  expect(r.outcome.kind).toBe("respond");
  if (r.outcome.kind !== "respond") return;
  expect(r.outcome.status).toBe(403);
  expect(new TextDecoder().decode(r.outcome.body)).toBe("forbidden");
  expect(r.outcome.headers).toContainEqual(["content-type", "text/plain; charset=utf-8"]);
  expect(h.metricsText()).toContain('mesh_filter_denied_total{filter="deny-path"} 1');
});

test("lets other paths and excepted methods through", () => {
  expect(h.request({ path: "/api/admin" }).outcome.kind).toBe("continue");
  expect(h.request({ path: "/internal" }).outcome.kind).toBe("continue");
  expect(h.request({ method: "OPTIONS", path: "/admin" }).outcome.kind).toBe("continue");
});

test("has no response phase", () => {
  expect(h.chain.hasResponsePhase).toBe(false);
});

test("refuses a config without prefixes, naming the field", async () => {
  const errors = await h.reconfigure([{ status: 404 }]);
  expect(errors).toEqual(["routes[0].filters[0].config.prefixes: required"]);
  expect(h.request({ path: "/admin" }).outcome.kind).toBe("respond");
});
