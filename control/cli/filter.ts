// `meshctl filter new|build|test`: scaffold, compile and test WebAssembly filters.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { BuildError, buildFilter, listFilterDirs, REPO_ROOT } from "./filter-build.ts";

const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export const FILTER_USAGE = `usage:
  meshctl filter new NAME [--dir DIR]     scaffold DIR/NAME (default filters/NAME in this repo, else ./NAME)
  meshctl filter build [DIR] [--out-dir D] compile DIR (default .) to D/NAME.wasm (default DIR/build)
  meshctl filter build --all [--out-dir D] compile every filters/*/ (default D: filters/dist, a ready filterDir)
  meshctl filter test [DIR]                build DIR, then run its *.test.ts with bun test`;

interface Flags {
  positional: string[];
  all: boolean;
  outDir?: string;
  dir?: string;
}

function parseFlags(args: string[]): Flags {
  const f: Flags = { positional: [], all: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--all") f.all = true;
    else if (a === "--out-dir") f.outDir = args[++i];
    else if (a.startsWith("--out-dir=")) f.outDir = a.slice("--out-dir=".length);
    else if (a === "--dir") f.dir = args[++i];
    else if (a.startsWith("--dir=")) f.dir = a.slice("--dir=".length);
    else if (a.startsWith("-")) throw new UsageError(`unknown flag ${a}`);
    else f.positional.push(a);
  }
  return f;
}

export class UsageError extends Error {}

/** Runs `meshctl filter ...`; returns the exit code. */
export async function filterCommand(args: string[], out = console.log, err = console.error): Promise<number> {
  const [sub, ...rest] = args;
  try {
    const flags = parseFlags(rest);
    switch (sub) {
      case "new":
        return scaffold(flags, out, err);
      case "build":
        return await build(flags, out, err);
      case "test":
        return await test(flags, out, err);
      default:
        err(FILTER_USAGE);
        return 2;
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`${e.message}\n${FILTER_USAGE}`);
      return 2;
    }
    if (e instanceof BuildError) {
      err(e.message);
      return 1;
    }
    throw e;
  }
}

async function build(flags: Flags, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const dirs = flags.all ? listFilterDirs() : [resolve(flags.positional[0] ?? ".")];
  if (dirs.length === 0) {
    err("no filters found (expected filters/<name>/assembly/index.ts)");
    return 1;
  }
  const outDir = flags.outDir ?? (flags.all ? join(REPO_ROOT, "filters", "dist") : undefined);
  let failed = 0;
  for (const dir of dirs) {
    try {
      const r = await buildFilter(dir, { outDir, cache: true });
      out(`built ${r.name} -> ${relative(process.cwd(), r.outFile) || r.outFile} (${r.bytes.length} bytes, sha256 ${r.sha256})`);
    } catch (e) {
      if (!(e instanceof BuildError)) throw e;
      err(e.message);
      failed++;
    }
  }
  return failed === 0 ? 0 : 1;
}

async function test(flags: Flags, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const dir = resolve(flags.positional[0] ?? ".");
  const code = await build({ ...flags, all: false, positional: [dir] }, out, err);
  if (code !== 0) return code;
  const bun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? process.execPath : join(REPO_ROOT, "node_modules", ".bin", "bun");
  const r = spawnSync(bun, ["test", dir], { stdio: "inherit", cwd: dir });
  return r.status ?? 1;
}

function scaffold(flags: Flags, out: (s: string) => void, err: (s: string) => void): number {
  const name = flags.positional[0];
  if (!name) throw new UsageError("filter new needs a NAME");
  if (!NAME.test(name)) throw new UsageError(`"${name}" is not a valid filter name (lower-case letters, digits, '.', '_' or '-')`);
  const parent = resolve(flags.dir ?? (existsSync(join(process.cwd(), "filters")) ? "filters" : "."));
  const dir = join(parent, name);
  if (existsSync(dir)) {
    err(`${dir} already exists`);
    return 1;
  }
  mkdirSync(join(dir, "assembly"), { recursive: true });
  const toRepo = relative(dir, REPO_ROOT).replace(/\\/g, "/") || ".";
  for (const [file, text] of Object.entries(templates(name, toRepo))) writeFileSync(join(dir, file), text);
  out(`created ${relative(process.cwd(), dir) || dir}/`);
  for (const file of Object.keys(templates(name, toRepo))) out(`  ${file}`);
  out(`next: meshctl filter test ${relative(process.cwd(), dir) || "."}`);
  return 0;
}

function templates(name: string, toRepo: string): Record<string, string> {
  return {
    "assembly/index.ts": `// ${name}: tags requests with a header, and answers 403 for a blocked path prefix.
import { Config, Counter, Header, Outcome, Request, log, onConfigure, onRequest } from "@meshwasm/sdk";
export * from "@meshwasm/sdk/exports";

// State lives in module variables: it survives across requests, and no other filter can see it.
let header = "x-${name}";
let value = "1";
let blocked = "";
const blockedTotal = new Counter("${name.replace(/[^a-zA-Z0-9_]/g, "_")}_blocked_total", "Requests ${name} blocked");

// Runs at start and on every config change. Validate everything first, then assign: a rejected
// config must leave the filter as it was.
onConfigure((config: Config): string | null => {
  const h = config.getString("header", "x-${name}");
  if (h.length == 0) return "header: expected a non-empty string";
  const b = config.getString("blockPrefix", "");
  if (b.length > 0 && !b.startsWith("/")) return 'blockPrefix: expected a path starting with "/"';
  header = h;
  value = config.getString("value", "1");
  blocked = b;
  log.info("${name} configured");
  return null;
});

onRequest((req: Request): Outcome => {
  if (blocked.length > 0 && req.path.startsWith(blocked)) {
    blockedTotal.inc();
    return Outcome.respond(403, "blocked by ${name}", [new Header("content-type", "text/plain")]);
  }
  req.headers.set(header, value);
  return Outcome.continue();
});
`,
    // For editors only: asc resolves "@meshwasm/sdk" itself (see filter-build.ts).
    "assembly/tsconfig.json": `${JSON.stringify(
      {
        extends: `../${toRepo}/node_modules/assemblyscript/std/assembly.json`,
        compilerOptions: {
          baseUrl: ".",
          paths: { "@meshwasm/sdk": [`../${toRepo}/sdk/assembly/index.ts`], "@meshwasm/sdk/*": [`../${toRepo}/sdk/assembly/*`] },
        },
        include: ["./**/*.ts"],
      },
      null,
      2,
    )}\n`,
    "schema.json": `${JSON.stringify(
      {
        $schema: "https://json-schema.org/draft/2020-12/schema",
        description: `${name}: config of the filter`,
        type: "object",
        additionalProperties: false,
        properties: {
          header: { type: "string", minLength: 1, description: "Header to set on every request" },
          value: { type: "string", description: "Its value" },
          blockPrefix: { type: "string", pattern: "^/", description: "Answer 403 for paths starting with this" },
        },
      },
      null,
      2,
    )}\n`,
    [`${name}.test.ts`]: `// Runs with: meshctl filter test (builds first), or bun test after a build.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { buildFilter } from "${toRepo}/control/cli/filter-build.ts";
import { FilterHarness } from "${toRepo}/runtime/wasm/harness.ts";

let h: FilterHarness;

beforeAll(async () => {
  const { outFile } = await buildFilter(import.meta.dir, { cache: true });
  h = await FilterHarness.load(outFile, { config: { header: "x-tenant", value: "blue", blockPrefix: "/admin" } });
});
afterAll(() => h.close());

test("sets the configured header", () => {
  const r = h.request({ path: "/api" });
  expect(r.outcome.kind).toBe("continue");
  expect(r.header("x-tenant")).toBe("blue");
});

test("answers 403 under the blocked prefix", () => {
  const r = h.request({ path: "/admin/users" });
  expect(r.outcome.kind).toBe("respond");
  if (r.outcome.kind === "respond") expect(r.outcome.status).toBe(403);
  expect(h.metricsText()).toContain('mesh_filter_${name.replace(/[^a-zA-Z0-9_]/g, "_")}_blocked_total{filter="${name}"} 1');
});

test("rejects a config that fails the schema", async () => {
  const errors = await h.reconfigure([{ header: "" }]);
  expect(errors.join()).toContain("config.header");
});
`,
    "README.md": `# ${name}

A meshwasm filter. Edit \`assembly/index.ts\`, describe its config in \`schema.json\`, then:

    meshctl filter test      # build and run ${name}.test.ts in the harness
    meshctl filter build     # -> build/${name}.wasm

Copy \`build/${name}.wasm\` into the proxy's filterDir (or PUT it to the admin API at
/filters/${name}) and reference it from a route:

    filters:
      - name: ${name}
        config: { header: x-tenant, value: blue }

See sdk/README.md for the API.
`,
  };
}
