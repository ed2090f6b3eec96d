// `npm test`: builds the filters, runs the Bun suite and the Deno suite, and ends with one line
// "N passed, N failed" that covers both.
import { existsSync, readdirSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const bin = (name: string) => join(root, "node_modules", ".bin", name);
let passed = 0;
let failed = 0;
let broken = false;

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 256 * 1024 * 1024, env: { ...process.env, FORCE_COLOR: "0", NO_COLOR: "1" } });
  process.stdout.write(r.stdout ?? "");
  process.stderr.write(r.stderr ?? "");
  if (r.status !== 0) broken = true;
  // Runners may colour their summary even when asked not to: read it without escape codes.
  return `${r.stdout ?? ""}\n${r.stderr ?? ""}`.replace(/\x1b\[[0-9;]*m/g, "");
}

// 1. Build every filter so the suites test the real .wasm files.
if (existsSync(join(root, "control/cli/meshctl.ts"))) {
  const out = spawnSync(bin("bun"), ["control/cli/meshctl.ts", "filter", "build", "--all"], { cwd: root, stdio: "inherit" });
  if (out.status !== 0) {
    console.error("filter build failed");
    failed++;
  }
}

// 2. Bun suite.
const bunOut = run(bin("bun"), ["test", "--timeout", "60000", ...process.argv.slice(2)]);
const bunPass = /^\s*(\d+) pass\s*$/m.exec(bunOut);
const bunFail = /^\s*(\d+) fail\s*$/m.exec(bunOut);
if (!bunPass) {
  console.error("could not read the bun test summary");
  failed++;
} else {
  passed += Number(bunPass[1]);
  failed += Number(bunFail?.[1] ?? 0);
}

// 3. Deno suite (files named *_deno.ts, which bun test does not pick up).
const denoDir = join(root, "test", "deno");
const denoFiles = existsSync(denoDir) ? readdirSync(denoDir).filter((f) => f.endsWith("_deno.ts")).map((f) => join("test", "deno", f)) : [];
if (denoFiles.length > 0 && process.argv.length <= 2) {
  const denoOut = run(bin("deno"), ["test", "-A", "--no-check", ...denoFiles]);
  const m = /(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed/.exec(denoOut);
  if (!m) {
    console.error("could not read the deno test summary");
    failed++;
  } else {
    passed += Number(m[1]);
    failed += Number(m[2]);
  }
}

if (broken && failed === 0) failed = 1; // a runner exited non-zero without saying why in its counts
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
