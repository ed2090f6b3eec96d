// Tooling: `meshctl filter new` scaffolds a filter that builds; builds are byte-for-byte reproducible.
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { filterCommand } from "../../control/cli/filter.ts";
import { buildFilter, REPO_ROOT, SCHEMA_SECTION } from "../../control/cli/filter-build.ts";
import { customSection } from "../../runtime/wasm/module.ts";

const tmp = mkdtempSync(join(tmpdir(), "meshctl-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

test("meshctl filter new scaffolds source, schema, test and readme, and refuses to overwrite", async () => {
  const out: string[] = [];
  expect(await filterCommand(["new", "tenant-tag", "--dir", tmp], (s) => out.push(s))).toBe(0);
  for (const f of ["assembly/index.ts", "assembly/tsconfig.json", "schema.json", "tenant-tag.test.ts", "README.md"]) expect(existsSync(join(tmp, "tenant-tag", f))).toBe(true);
  expect(out.join("\n")).toContain("next: meshctl filter test");
  expect(await filterCommand(["new", "tenant-tag", "--dir", tmp], () => {}, () => {})).toBe(1);
  expect(await filterCommand(["new", "Bad Name", "--dir", tmp], () => {}, () => {})).toBe(2);
});

test("the same sources build to the same bytes, with the config schema embedded", async () => {
  // The scaffold from the test above, built twice from scratch into two places.
  const dir = join(tmp, "tenant-tag");
  const a = await buildFilter(dir, { outDir: join(tmp, "a") });
  const b = await buildFilter(dir, { outDir: join(tmp, "b") });
  expect(a.cached || b.cached).toBe(false);
  expect(a.sha256).toBe(b.sha256);
  expect(Buffer.compare(readFileSync(a.outFile), readFileSync(b.outFile))).toBe(0);
  const schema = customSection(a.bytes, SCHEMA_SECTION);
  expect(schema).not.toBeNull();
  expect(JSON.parse(new TextDecoder().decode(schema!)).properties.header.minLength).toBe(1);
  // No machine path leaks into the binary.
  expect(new TextDecoder().decode(a.bytes)).not.toContain(REPO_ROOT);
  expect(new TextDecoder().decode(a.bytes)).not.toContain(tmp);
}, 60_000);

test("a compile error names the file and line", async () => {
  const errs: string[] = [];
  const code = await filterCommand(["build", join(REPO_ROOT, "test/wasm/fixtures/broken")], () => {}, (s) => errs.push(s));
  expect(code).toBe(1);
  expect(errs.join("\n")).toMatch(/assembly\/index\.ts\(\d+,\d+\)/);
}, 30_000);
