// Compiles a filter directory (assembly/index.ts) to an optimised, reproducible .wasm with the SDK linked in.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (this file is control/cli/filter-build.ts). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const SDK_DIR = join(REPO_ROOT, "sdk", "assembly");

/** The custom section that carries a filter's config schema (schema.json) inside its .wasm. */
export const SCHEMA_SECTION = "meshwasm.config-schema";

/**
 * Compiler flags. Fixed here, never taken from the environment, so the same sources give the same
 * bytes on every machine. `--exportStart mesh_start` keeps the top-level code out of the Wasm start
 * section: the host sets the CPU budget before running it, and a trap there is an init failure it
 * can report rather than an instantiation error.
 */
export const ASC_FLAGS = ["--optimizeLevel", "3", "--shrinkLevel", "0", "--runtime", "incremental", "--exportStart", "mesh_start"];

export interface BuildResult {
  name: string;
  dir: string;
  outFile: string;
  bytes: Uint8Array;
  sha256: string;
  /** True when the output came from the build cache. */
  cached: boolean;
}

export class BuildError extends Error {
  constructor(readonly dir: string, readonly diagnostics: string) {
    super(`build of ${dir} failed:\n${diagnostics}`);
    this.name = "BuildError";
  }
}

// The compiler is ~8 MB of JavaScript; load it once, on first use.
let ascPromise: Promise<typeof import("assemblyscript/asc").default> | null = null;
function loadAsc() {
  ascPromise ??= import("assemblyscript/asc").then((m) => m.default);
  return ascPromise;
}

function ascVersion(): string {
  try {
    return JSON.parse(readFileSync(join(REPO_ROOT, "node_modules/assemblyscript/package.json"), "utf8")).version;
  } catch {
    return "unknown";
  }
}

/** `import ... from "@meshwasm/sdk"` resolves to sdk/assembly/ unless a real package is installed. */
function sdkPath(requested: string): string | null {
  const m = /(?:^|\/)node_modules\/@meshwasm\/sdk\/(.*)$/.exec(requested.replace(/\\/g, "/"));
  if (!m) return null;
  let rest = m[1]!;
  if (rest === "package.json") return null; // fall back to the inner assembly/ folder convention
  rest = rest.replace(/^assembly\//, "");
  return join(SDK_DIR, rest);
}

function listTs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const p = join(dir, entry);
    if (statSync(p).isDirectory()) out.push(...listTs(p));
    else if (entry.endsWith(".ts") || entry.endsWith(".json")) out.push(p);
  }
  return out;
}

/** Hash of everything that decides the output: sources, SDK, schema, compiler version and flags. */
export function sourceHash(dir: string): string {
  const h = createHash("sha256");
  h.update(ascVersion() + "\0" + ASC_FLAGS.join(" ") + "\0");
  for (const file of [...listTs(join(dir, "assembly")), ...listTs(SDK_DIR), join(dir, "schema.json")]) {
    if (!existsSync(file)) continue;
    h.update(relative(REPO_ROOT, file) + "\0");
    h.update(readFileSync(file));
  }
  return h.digest("hex");
}

function leb128(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Appends a custom section (id 0) to a module. */
export function appendCustomSection(wasm: Uint8Array, name: string, payload: Uint8Array): Uint8Array {
  const nameBytes = new TextEncoder().encode(name);
  const body = [...leb128(nameBytes.length), ...nameBytes, ...payload];
  const section = new Uint8Array([0, ...leb128(body.length), ...body]);
  const out = new Uint8Array(wasm.length + section.length);
  out.set(wasm, 0);
  out.set(section, wasm.length);
  return out;
}

/** Filter name of a directory: its base name, which must be a valid module name. */
export function filterName(dir: string): string {
  return basename(resolve(dir));
}

export interface BuildOptions {
  /** Where to write <name>.wasm; default <dir>/build. */
  outDir?: string;
  /** Reuse a previous output with the same source hash (recorded under .tmp/build-cache/). */
  cache?: boolean;
}

/**
 * Builds one filter. Paths handed to the compiler are relative to the filter directory, so no
 * machine-specific path ends up in the binary (abort messages carry file names).
 */
export async function buildFilter(dir: string, opts: BuildOptions = {}): Promise<BuildResult> {
  dir = resolve(dir);
  const name = filterName(dir);
  const entry = join(dir, "assembly", "index.ts");
  if (!existsSync(entry)) throw new BuildError(dir, `no assembly/index.ts in ${dir}`);
  const outDir = resolve(opts.outDir ?? join(dir, "build"));
  const outFile = join(outDir, `${name}.wasm`);
  const hashFile = join(REPO_ROOT, ".tmp", "build-cache", `${createHash("sha256").update(outFile).digest("hex").slice(0, 16)}.hash`);
  const hash = opts.cache ? sourceHash(dir) : "";
  if (opts.cache && existsSync(outFile) && existsSync(hashFile) && readFileSync(hashFile, "utf8") === hash) {
    const bytes = new Uint8Array(readFileSync(outFile));
    return { name, dir, outFile, bytes, sha256: sha256Hex(bytes), cached: true };
  }

  const asc = await loadAsc();
  let output: Uint8Array | null = null;
  const stderr: string[] = [];
  const result = await asc.main(["assembly/index.ts", "--outFile", "out.wasm", ...ASC_FLAGS], {
    readFile(filename: string, baseDir: string) {
      const mapped = sdkPath(filename);
      const path = mapped ?? resolve(dir, baseDir, filename);
      try {
        return readFileSync(path, "utf8");
      } catch {
        return null;
      }
    },
    writeFile(filename: string, contents: Uint8Array | string) {
      if (filename.endsWith(".wasm")) output = typeof contents === "string" ? new TextEncoder().encode(contents) : contents;
    },
    listFiles(dirname: string, baseDir: string) {
      try {
        return readdirSync(resolve(dir, baseDir, dirname)).filter((f) => f.endsWith(".ts"));
      } catch {
        return null;
      }
    },
    stderr: { write: (chunk: Uint8Array | string) => void stderr.push(typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk)) } as never,
    stdout: { write: () => undefined } as never,
  });
  if (result.error || !output) {
    throw new BuildError(dir, stderr.join("") || String(result.error ?? "no output"));
  }
  let bytes: Uint8Array = output;
  const schemaFile = join(dir, "schema.json");
  if (existsSync(schemaFile)) {
    const text = readFileSync(schemaFile, "utf8");
    try {
      JSON.parse(text);
    } catch (err) {
      throw new BuildError(dir, `schema.json: ${(err as Error).message}`);
    }
    // Re-serialised so formatting changes do not change the binary.
    bytes = appendCustomSection(bytes, SCHEMA_SECTION, new TextEncoder().encode(JSON.stringify(JSON.parse(text))));
  }
  mkdirSync(outDir, { recursive: true });
  // Write then rename: a watching proxy never sees half a module.
  const tmp = `${outFile}.tmp-${process.pid}`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, outFile);
  if (opts.cache) {
    mkdirSync(dirname(hashFile), { recursive: true });
    writeFileSync(hashFile, hash);
  }
  return { name, dir, outFile, bytes, sha256: sha256Hex(bytes), cached: false };
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Every filters/<name>/ that has assembly/index.ts. */
export function listFilterDirs(root = join(REPO_ROOT, "filters")): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .sort()
    .map((d) => join(root, d))
    .filter((d) => existsSync(join(d, "assembly", "index.ts")));
}
