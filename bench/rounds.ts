// The measuring loop: interleaved rounds over every cell and scenario, CPU accounting around each
// run, waiting out (and flagging) other processes, and the per-cell medians and ratios afterwards.
import { join } from "node:path";
import { type LoadGenerator, type LoadOptions, runLoad } from "./load.ts";
import { headersFor } from "./peers/meshwasm.ts";
import { machineBusySeconds, type Proc, selfCpuSeconds } from "./peers/process.ts";
import type { Peer } from "./peers/types.ts";
import type { CellResult, Noise, Sample, ScenarioResult } from "./report.ts";
import { BASELINE_ID, CELLS, type Profile, type Scenario } from "./scenarios.ts";
import { median, rotate } from "./stats.ts";

/** Other processes using more than this many CPUs during a measured run make it "noisy". */
export const NOISY_CPU = 0.1;
/** A run this noisy is measured again, while the profile's retry budget lasts. */
const RETRY_CPU = 0.25;

export interface RoundsContext {
  gen: LoadGenerator;
  profile: Profile;
  /** Scenarios with a running peer, in SCENARIOS order. */
  active: Array<{ scenario: Scenario; peer: Peer; result: ScenarioResult }>;
  upstream: Proc;
  /** taskset CPU list for the load generator. */
  clientCpu?: string;
  tmp: string;
  log: (msg: string) => void;
  /** True once Ctrl-C arrived: a failed load run is then no result, just the end. */
  stopping: () => boolean;
}

/** Seconds one run takes, roughly, for estimates. */
export function secondsPerRun(p: Profile): number {
  return p.warmupS + p.durationS + 0.2;
}

/**
 * Round r, cell c: every scenario once, starting at a rotating position so none is always first
 * after a cell change. Samples go into each scenario's result; a peer that died is marked failed.
 */
export async function runRounds(ctx: RoundsContext): Promise<void> {
  const { profile, gen, log } = ctx;
  const totalRuns = profile.rounds * CELLS.length * ctx.active.length;
  let retriesLeft = Math.ceil(totalRuns * profile.retryBudget);
  // Waiting for quiet is worth a little time, not unbounded time on a machine that is never quiet.
  let quietBudgetMs = totalRuns * secondsPerRun(profile) * 1000 * 0.15;
  const quiet = async () => {
    const t0 = Date.now();
    await waitForQuiet(Math.min(profile.quietWaitMs, quietBudgetMs));
    quietBudgetMs -= Date.now() - t0;
  };

  let runNo = 0;
  for (let round = 1; round <= profile.rounds; round++) {
    for (const [ci, cell] of CELLS.entries()) {
      for (const { scenario: s, peer, result: r } of rotate(ctx.active, round + ci)) {
        runNo++;
        const cr: CellResult = (r.cells[cell.id] ??= { samples: [], errors: [] });
        if (r.status !== "ok") continue;
        if (peer.proc && !peer.proc.running) {
          r.status = "failed";
          r.reason = `exited during the run (round ${round}, before ${cell.id})`;
          r.detail = peer.proc.tail();
          log(`${s.id}: ${r.reason}\n${r.detail}`);
          continue;
        }
        const load = {
          url: `${peer.url}${cell.size.path}`,
          connections: cell.connections,
          headers: headersFor(s.filters),
          cpu: ctx.clientCpu,
          logFile: join(ctx.tmp, "loadgen.log"),
        };
        const tag = `[${runNo}/${totalRuns}] round ${round} ${cell.id.padEnd(10)} ${s.id.padEnd(20)}`;
        try {
          await quiet();
          if (profile.warmupS > 0) await runLoad(gen, { ...load, durationS: profile.warmupS });
          let sample = await measure(gen, { ...load, durationS: profile.durationS }, peer.proc, ctx.upstream, round);
          if ((sample.foreignCpu ?? 0) > RETRY_CPU && retriesLeft > 0) {
            // Someone else took a core mid-run: try once more when they are gone, keep the quieter run.
            retriesLeft--;
            log(`${tag} other processes used ${sample.foreignCpu!.toFixed(2)} CPU, measuring again`);
            await quiet();
            const again = await measure(gen, { ...load, durationS: profile.durationS }, peer.proc, ctx.upstream, round);
            sample = { ...((again.foreignCpu ?? 0) < (sample.foreignCpu ?? 0) ? again : sample), retried: true };
          }
          cr.samples.push(sample);
          const errs = sample.non2xx + sample.socketErrors;
          log(
            `${tag} ${Math.round(sample.rps).toLocaleString("en-US").padStart(8)} req/s  p99 ${(sample.latencyUs.p99 / 1000).toFixed(2)} ms` +
              (errs > 0 ? `  ${sample.non2xx} HTTP errors, ${sample.socketErrors} socket errors` : "") +
              ((sample.foreignCpu ?? 0) > NOISY_CPU ? `  (noisy: other processes used ${sample.foreignCpu!.toFixed(2)} CPU)` : ""),
          );
        } catch (e) {
          if (ctx.stopping()) return;
          cr.errors.push(`round ${round}: ${e instanceof Error ? e.message : String(e)}`);
          log(`${tag} load run failed: ${String(e).split("\n")[0]}`);
        }
      }
    }
  }
}

/** One measured run with the CPU accounting around it. */
async function measure(gen: LoadGenerator, load: LoadOptions, proxy: Proc | undefined, upstream: Proc, round: number): Promise<Sample> {
  const before = snapshot(proxy, upstream);
  const res = await runLoad(gen, load);
  const after = snapshot(proxy, upstream);
  const cpuS = delta(before.proxy, after.proxy);
  const ours = (cpuS ?? 0) + (delta(before.upstream, after.upstream) ?? 0) + (res.loadgenCpuS ?? 0) + (after.self - before.self);
  const busy = delta(before.busy, after.busy);
  return {
    ...res,
    round,
    cpuS,
    cpuPer1kS: cpuS != null && res.requests > 0 ? (cpuS / res.requests) * 1000 : null,
    foreignCpu: busy != null ? Math.max(0, busy - ours) / res.durationS : null,
  };
}

/** CPU counters read just before and just after a measured run. */
function snapshot(proxy: Proc | undefined, upstream: Proc) {
  return { proxy: proxy?.cpuUsedS() ?? null, upstream: upstream.cpuUsedS(), busy: machineBusySeconds(), self: selfCpuSeconds() };
}

function delta(a: number | null, b: number | null): number | null {
  return a != null && b != null ? b - a : null;
}

/**
 * Between runs all our processes are idle, so machine busy time is someone else's (or a proxy still
 * collecting garbage from the last run). Wait until that drops under NOISY_CPU, or `maxMs` passes.
 */
async function waitForQuiet(maxMs: number): Promise<void> {
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    const b0 = machineBusySeconds();
    const s0 = selfCpuSeconds();
    await Bun.sleep(200);
    const b1 = machineBusySeconds();
    if (b0 == null || b1 == null) return;
    if ((b1 - b0 - (selfCpuSeconds() - s0)) / 0.2 < NOISY_CPU) return;
  }
}

/** How much CPU other processes on the machine took during the measured runs. */
export function measureNoise(results: ScenarioResult[]): Noise | null {
  const samples = results.flatMap((r) => Object.values(r.cells).flatMap((c) => c.samples));
  const known = samples.map((s) => s.foreignCpu).filter((x): x is number => x != null);
  if (known.length === 0) return null;
  return {
    meanCpu: known.reduce((a, b) => a + b, 0) / known.length,
    maxCpu: Math.max(...known),
    noisyRuns: known.filter((x) => x > NOISY_CPU).length,
    runs: known.length,
    retriedRuns: samples.filter((s) => s.retried).length,
  };
}

/** The same, in a sentence for the report's header. */
export function noiseNote(n: Noise): string {
  return (
    `Other processes on the machine used ${n.meanCpu.toFixed(2)} CPU on average during measured runs (max ${n.maxCpu.toFixed(2)}); ` +
    `${n.noisyRuns} of ${n.runs} runs had more than ${NOISY_CPU} CPU of outside activity` +
    (n.retriedRuns > 0 ? ` (${n.retriedRuns} runs were measured a second time)` : "") +
    (n.noisyRuns > 0 ? ": treat this run's figures with suspicion and re-run on a quiet machine." : ".")
  );
}

/** Per cell: the median of each figure over rounds, summed errors, and the median per-round ratio to nginx. */
export function summarise(results: ScenarioResult[]): void {
  const baseline = results.find((r) => r.id === BASELINE_ID);
  for (const r of results) {
    for (const [cellId, c] of Object.entries(r.cells)) {
      if (c.samples.length === 0) continue;
      const base = baseline?.cells[cellId]?.samples ?? [];
      const ratios = c.samples.map((s) => {
        const b = base.find((x) => x.round === s.round);
        return b && b.rps > 0 ? s.rps / b.rps : null;
      });
      c.summary = {
        rps: median(c.samples.map((s) => s.rps)),
        p50Us: median(c.samples.map((s) => s.latencyUs.p50)),
        p90Us: median(c.samples.map((s) => s.latencyUs.p90)),
        p99Us: median(c.samples.map((s) => s.latencyUs.p99)),
        p999Us: median(c.samples.map((s) => s.latencyUs.p999)),
        cpuPer1kS: median(c.samples.map((s) => s.cpuPer1kS)),
        requests: c.samples.reduce((a, s) => a + s.requests, 0),
        non2xx: c.samples.reduce((a, s) => a + s.non2xx, 0),
        socketErrors: c.samples.reduce((a, s) => a + s.socketErrors, 0),
        ratioToBaseline: median(ratios),
      };
    }
  }
}
