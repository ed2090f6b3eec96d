// Builds the filters the wasm tests load (cached by source hash under .tmp/, so re-runs skip asc).
import { join } from "node:path";
import { buildFilter, REPO_ROOT } from "../../control/cli/filter-build.ts";

export const OUT = join(REPO_ROOT, ".tmp", "wasm-test");

export interface Built {
  kit: string;
  addHeader: string;
  denyPath: string;
}

let built: Promise<Built> | null = null;

/** Paths of kit.wasm (test/wasm/fixtures/kit), add-header.wasm and deny-path.wasm. */
export function buildFixtures(): Promise<Built> {
  built ??= (async () => {
    const kit = await buildFilter(join(REPO_ROOT, "test/wasm/fixtures/kit"), { outDir: OUT, cache: true });
    const addHeader = await buildFilter(join(REPO_ROOT, "filters/add-header"), { outDir: OUT, cache: true });
    const denyPath = await buildFilter(join(REPO_ROOT, "filters/deny-path"), { outDir: OUT, cache: true });
    return { kit: kit.outFile, addHeader: addHeader.outFile, denyPath: denyPath.outFile };
  })();
  return built;
}
