// Starts, pins, samples and stops every process the benchmark runs, so nothing outlives the run.
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import type { Subprocess } from "bun";

const live = new Set<Proc>();
let tasksetPath: string | undefined;

/** Pin children with `taskset -c <cpu>` from now on (undefined turns pinning off). */
export function usePinning(taskset: string | undefined): void {
  tasksetPath = taskset;
}

export interface SpawnOptions {
  /** CPU list for taskset ("0", "1-3"); ignored when pinning is off. */
  cpu?: string;
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** stdout and stderr both go here; read back with `tail()` when something fails. */
  logFile: string;
}

/** One child process. Its pid is the real program's: taskset execs, it does not fork. */
export class Proc {
  readonly pid: number;
  readonly exited: Promise<number>;
  private readonly child: Subprocess;

  private constructor(readonly name: string, child: Subprocess, readonly logFile: string) {
    this.child = child;
    this.pid = child.pid;
    this.exited = child.exited.then((code) => {
      live.delete(this);
      return code;
    });
  }

  static spawn(name: string, cmd: string[], opts: SpawnOptions): Proc {
    const argv = tasksetPath && opts.cpu !== undefined ? [tasksetPath, "-c", opts.cpu, ...cmd] : cmd;
    // One descriptor for both streams: two opens of the same file would overwrite each other.
    const log = openSync(opts.logFile, "w");
    let child: Subprocess;
    try {
      child = Bun.spawn(argv, {
        cwd: opts.cwd,
        // Plain logs: they end up in error messages and the report.
        env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0", ...opts.env },
        stdin: "ignore",
        stdout: log,
        stderr: log,
      });
    } finally {
      closeSync(log);
    }
    const proc = new Proc(name, child, opts.logFile);
    live.add(proc);
    return proc;
  }

  /** CPU seconds used so far; for an exited process, its total from the kernel's rusage. */
  cpuUsedS(): number | null {
    if (!this.running) {
      const usage = this.child.resourceUsage();
      return usage ? Number(usage.cpuTime.total) / 1e6 : null;
    }
    return cpuSeconds(this.pid);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child.kill(sig);
  }

  /** The last lines of the process's output, for error messages. */
  tail(lines = 12): string {
    try {
      // Deno and Bun colour their errors; strip the escapes.
      const text = readFileSync(this.logFile, "utf8").replace(/\x1b\[[0-9;]*m/g, "");
      return text.trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }

  /** SIGTERM, then SIGKILL if it has not gone within `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.running) return;
    this.child.kill("SIGTERM");
    const gone = await Promise.race([this.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
    if (!gone) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

/** Stop every process still running, newest first. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].reverse().map((p) => p.stop()));
}

/** Last resort from a synchronous `exit` handler: no waiting possible, so SIGKILL. */
export function killAllNow(): void {
  for (const p of live) p.signal("SIGKILL");
}

const CLK_TCK = (() => {
  try {
    const r = Bun.spawnSync(["getconf", "CLK_TCK"]);
    const n = Number(r.stdout.toString().trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU seconds the process (all its threads) has used, or null without /proc. */
export function cpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may hold spaces and parentheses; the fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return null;
  }
}

/**
 * CPU seconds the whole machine has spent busy (user, nice, system, irq, softirq) since boot, or
 * null without /proc. Compared with what our own processes used, it shows who else was running.
 */
export function machineBusySeconds(): number | null {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0];
    const [user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).slice(1).map(Number);
    return (user + nice + system + irq + softirq) / CLK_TCK;
  } catch {
    return null;
  }
}

/** CPU seconds this process has used. */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

export interface Memory {
  /** Resident set now, KiB. */
  rssKb: number;
  /** Peak resident set over the process's life (VmHWM), KiB. */
  peakKb: number;
  /**
   * Of rssKb, the anonymous pages (RssAnon): heap, stacks, JIT code. The rest is mostly the runtime's
   * own executable mapped from disk (bun is a 100 MB binary), shared and reclaimable. Null if unknown.
   */
  anonKb: number | null;
}

export function memory(pid: number): Memory | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const field = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(status)?.[1]);
    const rssKb = field("VmRSS");
    const peakKb = field("VmHWM");
    const anonKb = field("RssAnon");
    return Number.isFinite(rssKb) && Number.isFinite(peakKb) ? { rssKb, peakKb, anonKb: Number.isFinite(anonKb) ? anonKb : null } : null;
  } catch {
    return null;
  }
}

export const hasProcFs = existsSync("/proc/self/stat");

/** Pin this process (all threads) to `cpu`, so the orchestrator never competes with the proxy. */
export function pinSelf(cpu: string): boolean {
  if (!tasksetPath) return false;
  return Bun.spawnSync([tasksetPath, "-a", "-p", "-c", cpu, String(process.pid)], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
}

/** A TCP port nobody is listening on right now (bind to 0, read it, close). */
export function freePort(): number {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return port;
}

/** Poll `check` until it returns true or `timeoutMs` passes; `proc` dying early ends the wait. */
export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, proc?: Proc): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc && !proc.running) return false;
    try {
      if (await check()) return true;
    } catch {
      // not up yet
    }
    await Bun.sleep(50);
  }
  return false;
}

/** True when GET `url` answers with `status` (200 by default) within a second. */
export async function answers(url: string, init: RequestInit = {}, status = 200): Promise<boolean> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(1000) });
  await res.arrayBuffer();
  return res.status === status;
}
