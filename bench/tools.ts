// Finds (and, as root on Debian/Ubuntu, installs) the outside programs the benchmark drives, and
// describes the machine it runs on.
import { existsSync, readFileSync } from "node:fs";
import { cpus, release, totalmem, type as osType } from "node:os";
import { join } from "node:path";
import type { LoadGenerator } from "./load.ts";

const ROOT = join(import.meta.dir, "..");
const SBIN = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

export interface Tools {
  wrk?: string;
  nginx?: string;
  haproxy?: string;
  taskset?: string;
  deno?: string;
  /** Everything worth telling the reader: what was missing, installed, or could not be. */
  notes: string[];
}

/** Like `which`, but also looks in sbin directories, where Debian puts nginx and haproxy. */
export function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":").filter(Boolean), ...SBIN];
  for (const dir of dirs) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

function run(cmd: string[], timeoutMs = 10_000): { ok: boolean; out: string } {
  try {
    const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
    return { ok: r.exitCode === 0, out: `${r.stdout.toString()}${r.stderr.toString()}` };
  } catch (e) {
    return { ok: false, out: String(e) };
  }
}

/** Debian package names to try for each tool, first that installs wins. */
const PACKAGES: Record<"wrk" | "nginx" | "haproxy", string[]> = {
  wrk: ["wrk"],
  nginx: ["nginx-light", "nginx-core", "nginx"],
  haproxy: ["haproxy"],
};

function aptInstall(pkg: string): { ok: boolean; out: string } {
  const env = ["env", "DEBIAN_FRONTEND=noninteractive"];
  // Wait for another apt (unattended upgrades, a parallel install) instead of failing on its lock.
  return run([...env, "apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "--no-install-recommends", pkg], 600_000);
}

/**
 * Find wrk, nginx, HAProxy, taskset and Deno. Missing wrk/nginx/haproxy are apt-get installed when
 * `install` is set, we are root and apt-get exists; otherwise the notes say what to install.
 */
export function ensureTools(install: boolean, log: (msg: string) => void): Tools {
  const tools: Tools = { notes: [] };
  const want = ["wrk", "nginx", "haproxy"] as const;
  let missing = want.filter((t) => !findBinary(t));
  const isRoot = process.getuid?.() === 0;
  const apt = findBinary("apt-get");
  if (missing.length > 0 && install && isRoot && apt) {
    let updated = false;
    for (const tool of missing) {
      log(`installing ${tool} with apt-get...`);
      let ok = false;
      for (const pkg of PACKAGES[tool]) {
        let r = aptInstall(pkg);
        if (!r.ok && !updated) {
          // A fresh container has no package lists yet.
          run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o", "DPkg::Lock::Timeout=300", "update"], 600_000);
          updated = true;
          r = aptInstall(pkg);
        }
        if (r.ok && findBinary(tool)) {
          tools.notes.push(`installed ${tool} (Debian package ${pkg}) with apt-get`);
          ok = true;
          break;
        }
      }
      if (!ok) tools.notes.push(`could not install ${tool} with apt-get (tried ${PACKAGES[tool].join(", ")})`);
    }
    missing = want.filter((t) => !findBinary(t));
  }
  for (const t of want) tools[t] = findBinary(t);
  if (missing.length > 0) {
    const how = !install
      ? "--no-install was given"
      : !isRoot
        ? "not running as root"
        : !apt
          ? "no apt-get on this machine"
          : "apt-get failed";
    tools.notes.push(
      `missing ${missing.join(", ")} (${how}); install with: sudo apt-get install -y ${missing.map((t) => PACKAGES[t][0]).join(" ")}`,
    );
  }
  tools.taskset = findBinary("taskset");
  const localDeno = join(ROOT, "node_modules", ".bin", "deno");
  tools.deno = existsSync(localDeno) ? localDeno : findBinary("deno");
  return tools;
}

/** wrk if present (and not refused), else autocannon from node_modules, else nothing. */
export function pickLoadGenerator(tools: Tools, prefer: "wrk" | "autocannon" | undefined): LoadGenerator | undefined {
  if (tools.wrk && prefer !== "autocannon") {
    // "wrk debian/4.1.0-3+b2 [epoll] Copyright ..." -> "wrk 4.1.0-3+b2"
    const v = /wrk\s+(?:\S+\/)?(\S+)/.exec(run([tools.wrk, "-v"]).out)?.[1];
    return { tool: "wrk", command: [tools.wrk], version: v ? `wrk ${v}` : "wrk" };
  }
  const script = join(ROOT, "node_modules", "autocannon", "autocannon.js");
  if (!existsSync(script)) return undefined;
  const version = JSON.parse(readFileSync(join(ROOT, "node_modules", "autocannon", "package.json"), "utf8")).version;
  // Node runs autocannon best; Bun runs it too, for machines with Bun only.
  const node = findBinary("node");
  return { tool: "autocannon", command: [node ?? process.execPath, script], version: `autocannon ${version} on ${node ? "node" : "bun"}` };
}

function firstLine(s: string): string {
  return s.trim().split("\n")[0] ?? "";
}

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGb: number;
  os: string;
  kernel: string;
  virtualized: boolean | null;
  versions: Record<string, string | null>;
  commit: string | null;
  dirty: boolean | null;
}

export function describeMachine(tools: Tools, loadgen: LoadGenerator | undefined): Machine {
  let cpuModel = cpus()[0]?.model ?? "unknown";
  let virtualized: boolean | null = null;
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? cpuModel;
    virtualized = /^flags\s*:.*\bhypervisor\b/m.test(info);
  } catch {
    // not Linux
  }
  const version = (bin: string | undefined, args: string[]) => (bin ? firstLine(run([bin, ...args]).out) || null : null);
  // Read-only git queries; a missing git or a tarball checkout just leaves these null.
  const commit = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]);
  const status = run(["git", "--no-optional-locks", "-C", ROOT, "status", "--porcelain"]);
  return {
    cpuModel,
    cores: cpus().length,
    memoryGb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: osType(),
    kernel: release(),
    virtualized,
    versions: {
      bun: Bun.version,
      deno: version(tools.deno, ["--version"]),
      nginx: version(tools.nginx, ["-v"]),
      haproxy: version(tools.haproxy, ["-v"]),
      loadgen: loadgen?.version ?? null,
    },
    commit: commit.ok ? commit.out.trim() : null,
    dirty: status.ok ? status.out.trim().length > 0 : null,
  };
}
