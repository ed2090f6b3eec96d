// Runs with: meshctl filter test filters/add-header (or bun test filters/ after a build).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { buildFilter } from "../../control/cli/filter-build.ts";
import { FilterHarness } from "../../runtime/wasm/harness.ts";

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

test("sets request headers, replacing existing values", async () => {
  const h = await load({ request: { "x-tenant": "blue", "X-Env": "prod" } });
  const r = h.request({ headers: { "x-tenant": "red", accept: "*/*" } });
  expect(r.outcome.kind).toBe("continue");
  expect(r.ctx.headers.list()).toEqual([["x-tenant", "blue"], ["accept", "*/*"], ["x-env", "prod"]]);
});

test("has no response phase unless response headers are configured", async () => {
  const h = await load({ request: { "x-a": "1" } });
  expect(h.chain.hasResponsePhase).toBe(false);
  const errors = await h.reconfigure([{ response: { "x-served-by": "mesh" } }]);
  expect(errors).toEqual([]);
  expect(h.chain.hasResponsePhase).toBe(true);
  expect(h.response({ status: 200 }).header("x-served-by")).toBe("mesh");
});

test("rejects a header value that is not a string", async () => {
  const h = await load({});
  const errors = await h.reconfigure([{ request: { "x-a": 1 } }]);
  expect(errors.length).toBeGreaterThan(0);
  expect(errors[0]).toContain("routes[0].filters[0].config.request.x-a");
});
