// Runs one load test (wrk, or autocannon from npm when wrk is missing) and turns its output into numbers.
import { join } from "node:path";
import { Proc } from "./peers/process.ts";

export interface LoadGenerator {
  tool: "wrk" | "autocannon";
  /** argv prefix: ["/usr/bin/wrk"] or ["node", ".../autocannon.js"]. */
  command: string[];
  version: string;
}

export interface LoadOptions {
  url: string;
  connections: number;
  durationS: number;
  headers?: Record<string, string>;
  /** taskset CPU list for the generator. */
  cpu?: string;
  /** Where the generator's output goes (one file per run, overwritten). */
  logFile: string;
}

/** One run's figures. Latencies in microseconds. */
export interface LoadResult {
  requests: number;
  durationS: number;
  rps: number;
  bytes: number;
  latencyUs: { p50: number; p90: number; p99: number; p999: number; mean: number; max: number };
  /** Responses with a status the generator counts as an error: >= 400 for wrk, not 2xx for autocannon. */
  non2xx: number;
  /** Connect, read and write errors and timeouts. */
  socketErrors: number;
  /** CPU seconds the load generator itself used. */
  loadgenCpuS: number | null;
}

const WRK_SCRIPT = join(import.meta.dir, "wrk-summary.lua");

/** Parse the BENCH_RESULT line that wrk-summary.lua prints. */
export function parseWrk(stdout: string): LoadResult {
  const line = stdout.split("\n").find((l) => l.startsWith("BENCH_RESULT "));
  if (!line) throw new Error(`wrk printed no summary:\n${stdout.trim().slice(-800)}`);
  const r = JSON.parse(line.slice("BENCH_RESULT ".length));
  const durationS = r.durationUs / 1e6;
  return {
    requests: r.requests,
    durationS,
    rps: durationS > 0 ? r.requests / durationS : 0,
    bytes: r.bytes,
    latencyUs: { p50: r.p50, p90: r.p90, p99: r.p99, p999: r.p999, mean: r.mean, max: r.max },
    non2xx: r.status,
    socketErrors: r.connect + r.read + r.write + r.timeout,
    loadgenCpuS: null,
  };
}

/** Parse `autocannon --json` output (latencies in milliseconds). */
export function parseAutocannon(stdout: string): LoadResult {
  const line = stdout.split("\n").reverse().find((l) => l.startsWith("{"));
  if (!line) throw new Error(`autocannon printed no JSON:\n${stdout.trim().slice(-800)}`);
  const r = JSON.parse(line);
  const ms = (x: number) => Math.round(x * 1000);
  const durationS = r.duration;
  const requests = r.requests.total;
  return {
    requests,
    durationS,
    rps: durationS > 0 ? requests / durationS : 0,
    bytes: r.throughput.total,
    latencyUs: {
      p50: ms(r.latency.p50),
      p90: ms(r.latency.p90),
      p99: ms(r.latency.p99),
      p999: ms(r.latency.p99_9),
      mean: ms(r.latency.mean),
      max: ms(r.latency.max),
    },
    non2xx: r.non2xx,
    socketErrors: r.errors,
    loadgenCpuS: null,
  };
}

function argv(gen: LoadGenerator, o: LoadOptions): string[] {
  const headers = Object.entries(o.headers ?? {});
  if (gen.tool === "wrk") {
    // One thread: the generator gets one core in every scenario, so every row has the same client.
    return [
      ...gen.command,
      "-t1",
      `-c${o.connections}`,
      `-d${Math.max(1, Math.round(o.durationS))}s`,
      "--timeout",
      "5s",
      "-s",
      WRK_SCRIPT,
      ...headers.flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
      o.url,
    ];
  }
  return [
    ...gen.command,
    "--json",
    "--no-progress",
    "-c",
    String(o.connections),
    "-d",
    String(o.durationS),
    "-t",
    "5",
    ...headers.flatMap(([k, v]) => ["-H", `${k}=${v}`]),
    o.url,
  ];
}

/** Run the generator to completion and parse what it printed. */
export async function runLoad(gen: LoadGenerator, o: LoadOptions): Promise<LoadResult> {
  const proc = Proc.spawn(gen.tool, argv(gen, o), { cpu: o.cpu, logFile: o.logFile });
  const code = await proc.exited;
  const out = await Bun.file(o.logFile).text();
  if (code !== 0) throw new Error(`${gen.tool} exited with ${code}:\n${out.trim().slice(-800)}`);
  const result = gen.tool === "wrk" ? parseWrk(out) : parseAutocannon(out);
  return { ...result, loadgenCpuS: proc.cpuUsedS() };
}
