// Where the proxy's CPU goes under load, with JavaScript functions named: perf over the real proxy
// while wrk drives it, JSC's JITDump supplying the names of JIT-compiled code.
//
//   bun bench/profile.ts                                  passthrough, 100 B responses, 64 connections
//   bun bench/profile.ts --filters auth,rateLimit,retries,fault --seconds 10 --path /large
//
// Why this and not `bun --cpu-prof`: JSC's sampling profiler runs on a thread of its own, which (with
// the proxy pinned to one core, as in the bench) steals that core and skews attribution towards
// native calls; it also cannot see the kernel or Bun's own native code. Here perf samples the one
// core; the report splits each request's CPU into the kernel, Bun's native code (unnamed: bun's
// binary has no symbols) and JIT code by function, and charges native samples to the nearest
// JavaScript caller on their stack (what a write or an allocation was made for).
//
// Needs Linux perf (Debian: linux-perf), wrk and taskset. The proxy runs on CPU 0; the upstream and
// wrk on CPU 1. Raw files stay in the printed directory (perf report -i <dir>/perf.jit.data).
import { spawn, spawnSync } from "bun";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { headersFor, writeMeshwasmConfig } from "./peers/meshwasm.ts";
import { freePort } from "./peers/process.ts";
import { FILTERS } from "./scenarios.ts";

const ROOT = join(import.meta.dir, "..");
const { values } = parseArgs({
  options: {
    filters: { type: "string", default: "" },
    seconds: { type: "string", default: "10" },
    connections: { type: "string", default: "64" },
    path: { type: "string", default: "/small" },
    top: { type: "string", default: "25" },
  },
});
const seconds = Number(values.seconds);
const top = Number(values.top);
const filters = values.filters!.split(",").filter(Boolean).map((k) => {
  const f = (FILTERS as Record<string, (typeof FILTERS)[keyof typeof FILTERS]>)[k];
  if (f === undefined) throw new Error(`--filters: no filter ${k}; one of ${Object.keys(FILTERS).join(", ")}`);
  return f;
});

for (const tool of ["perf", "wrk", "taskset"]) {
  if (spawnSync(["sh", "-c", `command -v ${tool}`]).exitCode !== 0) throw new Error(`${tool} not found (Debian: apt-get install linux-perf wrk util-linux)`);
}

const dir = mkdtempSync(join(tmpdir(), "mesh-profile-"));
const jitDir = join(dir, "jit");
mkdirSync(jitDir);
const bun = join(ROOT, "node_modules", "bun", "bin", "bun.exe");
const upstreamPort = freePort();
const files = { port: freePort(), adminPort: freePort(), configFile: join(dir, "meshwasm.yaml"), filterDir: join(ROOT, "filters", "dist") };
writeMeshwasmConfig(files, upstreamPort, { filters });

const upstream = spawn(["taskset", "-c", "1", bun, join(ROOT, "bench", "upstream.ts"), "--port", String(upstreamPort)], { stdout: "ignore", stderr: "ignore" });
const perfData = join(dir, "perf.data");
const proxy = spawn(["taskset", "-c", "0", "perf", "record", "-g", "-k", "1", "-o", perfData, "--", bun, join(ROOT, "runtime", "main.ts"), "--config", files.configFile], {
  env: { ...process.env, BUN_JSC_useJITDump: "1", BUN_JSC_jitDumpDirectory: jitDir },
  stdout: Bun.file(join(dir, "proxy.log")),
  stderr: Bun.file(join(dir, "perf.log")),
});

const url = `http://127.0.0.1:${files.port}${values.path}`;
const headers = Object.entries(headersFor(filters)).flatMap(([k, v]) => ["-H", `${k}: ${v}`]);
try {
  await ready(`http://127.0.0.1:${files.adminPort}/ready`);
  const pid = proxyPid();
  const wrk = (s: number) => spawnSync(["taskset", "-c", "1", "wrk", "-t1", `-c${values.connections}`, `-d${s}s`, ...headers, url]).stdout.toString();
  wrk(2); // warm-up: the JIT's top tiers
  const cpu0 = cpuSeconds(pid);
  const out = wrk(seconds);
  const cpu = cpuSeconds(pid) - cpu0;
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  process.kill(pid, "SIGTERM");
  await proxy.exited;
  if (requests === 0) throw new Error(`wrk made no requests:\n${out}`);
  const perUs = (cpu * 1e6) / requests;
  console.log(`${url} with ${filters.map((f) => f.name).join(" > ") || "no filters"}: ${Math.round(requests / seconds)} req/s, ${perUs.toFixed(2)} us of proxy CPU per request`);
  report(inject(), perUs);
  console.log(`raw files: ${dir}`);
} finally {
  upstream.kill();
  proxy.kill();
}

async function ready(readyUrl: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await fetch(readyUrl).then((r) => r.ok, () => false)) return;
    await Bun.sleep(100);
  }
  throw new Error(`the proxy was not ready (log: ${dir})`);
}

/** The bun process under perf (perf's child). */
function proxyPid(): number {
  const out = spawnSync(["pgrep", "-f", `${bun} ${join(ROOT, "runtime", "main.ts")} --config ${files.configFile}`]).stdout.toString().trim().split("\n");
  const pid = Number(out.find((l) => l !== "" && Number(l) !== proxy.pid));
  if (!pid) throw new Error("cannot find the proxy's pid");
  return pid;
}

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ (100 on Linux)
}

/**
 * perf inject --jit only takes dumps named jit-<pid>.dump; JSC names them jit-<tid>-<pid>.dump. The
 * recording is patched to a name of the same length that perf accepts (the pid zero-padded).
 */
function inject(): string {
  const dump = readdirSync(jitDir).find((f) => /^jit-\d+-\d+\.dump$/.test(f));
  if (dump === undefined) throw new Error(`no JITDump in ${jitDir}: is this bun built with JITDump?`);
  const pid = /^jit-\d+-(\d+)\.dump$/.exec(dump)![1]!;
  const old = join(jitDir, dump);
  const renamed = join(jitDir, `jit-${pid.padStart(dump.length - "jit-.dump".length, "0")}.dump`);
  copyFileSync(old, renamed);
  const data = readFileSync(perfData);
  const from = Buffer.from(old);
  const at = data.indexOf(from);
  if (at === -1) throw new Error("the recording has no mmap of the JITDump");
  Buffer.from(renamed).copy(data, at);
  const patched = join(dir, "perf.patched.data");
  writeFileSync(patched, data);
  const jitData = join(dir, "perf.jit.data");
  const r = spawnSync(["perf", "inject", "--jit", "-i", patched, "-o", jitData], { cwd: jitDir });
  if (r.exitCode !== 0) throw new Error(`perf inject failed: ${r.stderr.toString()}`);
  return jitData;
}

/** Splits samples by where their leaf is, and charges native leaves to the nearest JS frame. */
function report(jitData: string, perUs: number): void {
  const script = spawnSync(["perf", "script", "-i", jitData, "-F", "ip,sym,dso"], { maxBuffer: 1 << 30 }).stdout.toString();
  const kinds = new Map<string, number>();
  const jsSelf = new Map<string, number>();
  const nativeBy = new Map<string, number>();
  let total = 0;
  const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  const name = (sym: string) => sym.replace(/#\w+$/, "").replace(/\+0x[0-9a-f]+$/, "");
  for (const sample of script.split("\n\n")) {
    const frames = sample
      .split("\n")
      .map((l) => /^\s*[0-9a-f]+ (.*) \((.*)\)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ sym: m[1]!, dso: m[2]! }));
    if (frames.length === 0) continue;
    total++;
    const leaf = frames[0]!;
    if (leaf.dso.includes("kernel")) add(kinds, "kernel");
    else if (leaf.sym.startsWith("JSC-")) {
      add(kinds, "JIT code (JS and Wasm)");
      add(jsSelf, name(leaf.sym));
    } else if (basename(leaf.dso) === "bun.exe") {
      add(kinds, "bun native");
      add(nativeBy, name(frames.find((f) => f.sym.startsWith("JSC-"))?.sym ?? "(no JS on the stack: event loop, I/O, GC)"));
    } else add(kinds, basename(leaf.dso));
  }
  const line = (n: number, what: string) => `  ${((100 * n) / total).toFixed(1).padStart(5)}%  ${((perUs * n) / total).toFixed(2).padStart(6)} us  ${what}`;
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  console.log(`\nwhere the leaf is (${total} samples; us per request):`);
  for (const [k, n] of sorted(kinds)) console.log(line(n, k));
  console.log(`\nJIT code by function (self):`);
  for (const [k, n] of sorted(jsSelf).slice(0, top)) console.log(line(n, k));
  console.log(`\nbun native code, by the nearest JS caller on the stack:`);
  for (const [k, n] of sorted(nativeBy).slice(0, top)) console.log(line(n, k));
  console.log("\n(samples from start-up and warm-up are in the shares; us per request use the measured run's CPU)");
}
