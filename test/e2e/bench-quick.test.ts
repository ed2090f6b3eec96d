// The bench suite works end to end: `bench/run.ts --quick` runs every scenario briefly and writes the
// report files. It checks that the files are written and well formed, not the numbers.
import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { BUN, ROOT, tempDir } from "./harness.ts";

test("npm run bench -- --quick writes the JSON results, the Markdown table and the SVG chart", () => {
  const out = tempDir("mesh-bench-");
  const r = spawnSync(BUN, [join(ROOT, "bench/run.ts"), "--quick", "--out", out, "--no-install"], { cwd: ROOT, encoding: "utf8", timeout: 280_000 });
  if (r.status !== 0) console.error(r.stdout.slice(-3000), r.stderr.slice(-3000));
  expect(r.status).toBe(0);
  for (const f of ["latest.json", "latest.md", "latest.svg"]) expect(existsSync(join(out, f))).toBe(true);
  expect(readdirSync(out).some((f) => /^\d{4}-\d\d-\d\dT.*\.json$/.test(f))).toBe(true);

  const json = JSON.parse(readFileSync(join(out, "latest.json"), "utf8"));
  expect(JSON.stringify(json)).toContain("meshwasm-bun");
  const md = readFileSync(join(out, "latest.md"), "utf8");
  expect(md).toContain("| Scenario | req/s |");
  expect(md).toContain("meshwasm on Bun, passthrough");
  const svg = readFileSync(join(out, "latest.svg"), "utf8");
  expect(svg.startsWith("<svg") || svg.startsWith("<?xml")).toBe(true);
  expect(svg).toContain("</svg>");
}, 300_000);
