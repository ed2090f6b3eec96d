// Where the bench finds built filters: it must find what `npm run build:filters` writes.
import { expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const HERE = import.meta.dir;

/** findFilterModule/filterState of `names` in a fresh process with BENCH_FILTERS_DIR=dir (it is read at import). */
function lookUp(dir: string, names: string[]): { module: string | null; state: string }[] {
  const script = `import { findFilterModule, filterState } from ${JSON.stringify(join(HERE, "meshwasm.ts"))};
console.log(JSON.stringify(${JSON.stringify(names)}.map((n) => ({ module: findFilterModule(n) ?? null, state: filterState(n) }))));`;
  const r = Bun.spawnSync([process.execPath, "-e", script], { env: { ...process.env, BENCH_FILTERS_DIR: dir }, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return JSON.parse(r.stdout.toString());
}

test("a filter built by build:filters (filters/dist/<name>.wasm) counts as built, ahead of other builds under filters/<name>/", () => {
  const dir = mkdtempSync(join(tmpdir(), "bench-filters-"));
  try {
    for (const name of ["a", "b", "c"]) mkdirSync(join(dir, name, "assembly"), { recursive: true });
    mkdirSync(join(dir, "dist"));
    writeFileSync(join(dir, "dist", "a.wasm"), "");
    mkdirSync(join(dir, "a", "build"));
    writeFileSync(join(dir, "a", "build", "a.wasm"), "");
    mkdirSync(join(dir, "b", "build"));
    writeFileSync(join(dir, "b", "build", "b.wasm"), "");
    mkdirSync(join(dir, "c", "testdata"));
    writeFileSync(join(dir, "c", "testdata", "c.wasm"), "");
    expect(lookUp(dir, ["a", "b", "c", "d"])).toEqual([
      { module: join(dir, "dist", "a.wasm"), state: "built" },
      { module: join(dir, "b", "build", "b.wasm"), state: "built" },
      { module: null, state: "source" }, // fixtures are not the filter
      { module: null, state: "missing" },
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
