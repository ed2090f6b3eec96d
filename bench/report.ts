// Writes one run's results three ways: JSON (everything), Markdown (the tables) and SVG (the chart).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { LoadResult } from "./load.ts";
import type { FilterCallResult, HotSwapResult, ReloadResult } from "./micro.ts";
import type { Cell, Profile, Role } from "./scenarios.ts";
import type { Machine } from "./tools.ts";

export interface Sample extends LoadResult {
  round: number;
  /** Proxy CPU (user + system) during the measured run; null for `direct` or without /proc. */
  cpuS: number | null;
  cpuPer1kS: number | null;
  /**
   * CPUs' worth of work done by processes that are not part of the benchmark during the measured
   * run (machine busy time minus proxy, upstream, load generator and orchestrator). Noise indicator.
   */
  foreignCpu: number | null;
  /** This run was noisy and measured again; the quieter of the two is kept. */
  retried?: boolean;
}

export interface CellSummary {
  rps: number | null;
  p50Us: number | null;
  p90Us: number | null;
  p99Us: number | null;
  p999Us: number | null;
  cpuPer1kS: number | null;
  /** Summed over rounds. */
  requests: number;
  non2xx: number;
  socketErrors: number;
  /** Median over rounds of (this row's rps / nginx's rps in the same round and cell). */
  ratioToBaseline: number | null;
}

export interface CellResult {
  samples: Sample[];
  /** Runs that did not produce numbers, with why. */
  errors: string[];
  summary?: CellSummary;
}

export interface MemoryFigures {
  /** RSS right after start, before any load. */
  idleStartKb: number | null;
  /** RSS after the last round, once the load has stopped. */
  idleEndKb: number | null;
  /** Peak RSS over the process's life (VmHWM). */
  peakKb: number | null;
  /** Anonymous part of idleStartKb / idleEndKb (RssAnon): what is not the runtime's mapped executable. */
  idleStartAnonKb?: number | null;
  idleEndAnonKb?: number | null;
}

export interface ScenarioResult {
  id: string;
  label: string;
  role: Role;
  status: "ok" | "skipped" | "failed";
  /** One line: why it was skipped or failed. */
  reason?: string;
  /** The end of the process's log, when it failed. */
  detail?: string;
  memory?: MemoryFigures;
  cells: Record<string, CellResult>;
}

export interface BenchResult {
  schema: 1;
  startedAt: string;
  finishedAt: string;
  mode: "full" | "quick";
  profile: Profile;
  loadgen: string;
  pinning: string;
  machine: Machine;
  baseline: string;
  cells: Array<Pick<Cell, "id" | "label" | "connections"> & { path: string }>;
  scenarios: ScenarioResult[];
  micro: { filterCall: FilterCallResult; reload: ReloadResult; hotSwap: HotSwapResult };
  /** Outside CPU activity over the measured runs; see Sample.foreignCpu. */
  noise?: Noise | null;
  notes: string[];
}

export interface Noise {
  meanCpu: number;
  maxCpu: number;
  /** Runs with more than 0.1 CPU of outside activity. */
  noisyRuns: number;
  runs: number;
  retriedRuns: number;
}

export interface WrittenFiles {
  json: string;
  latestJson: string;
  markdown: string;
  svg: string;
}

/** `<out>/<timestamp>.json`, and `latest.json`, `latest.md`, `latest.svg` beside it. */
export function writeReport(result: BenchResult, outDir: string): WrittenFiles {
  mkdirSync(outDir, { recursive: true });
  const stamp = result.startedAt.replace(/[:]/g, "-").replace(/\.\d+Z$/, "Z");
  const files = {
    json: join(outDir, `${stamp}${result.mode === "quick" ? "-quick" : ""}.json`),
    latestJson: join(outDir, "latest.json"),
    markdown: join(outDir, "latest.md"),
    svg: join(outDir, "latest.svg"),
  };
  const json = `${JSON.stringify(result, null, 2)}\n`;
  writeFileSync(files.json, json);
  writeFileSync(files.latestJson, json);
  writeFileSync(files.markdown, renderMarkdown(result));
  writeFileSync(files.svg, renderSvg(result));
  return files;
}

// ---------- formatting ----------

export function fmtRps(x: number | null | undefined): string {
  if (x == null) return "–";
  return Math.round(x).toLocaleString("en-US");
}

export function fmtLatency(us: number | null | undefined): string {
  if (us == null) return "–";
  if (us < 1000) return `${Math.round(us)} µs`;
  if (us < 100_000) return `${(us / 1000).toFixed(2)} ms`;
  return `${Math.round(us / 1000)} ms`;
}

export function fmtRatio(x: number | null | undefined): string {
  return x == null ? "–" : `${x.toFixed(2)}×`;
}

function fmtMb(kb: number | null | undefined): string {
  return kb == null ? "–" : `${(kb / 1024).toFixed(1)} MB`;
}

function fmtCpu(s: number | null | undefined): string {
  return s == null ? "–" : s.toFixed(3);
}

function describeMachine(m: Machine): string {
  const v = m.versions;
  const tools = [
    `Bun ${v.bun}`,
    v.deno && v.deno.replace(/\s*\(.*$/, "").replace(/^deno/, "Deno"),
    v.nginx && v.nginx.replace(/^nginx version:\s*/, ""),
    v.haproxy && v.haproxy.replace(/^HA-?Proxy version\s*(\S+).*$/, "HAProxy $1"),
    v.loadgen && v.loadgen.replace(/^wrk (\S+?)\s.*$/, "wrk $1"),
  ].filter(Boolean);
  return `${m.cpuModel}, ${m.cores} cores${m.virtualized ? " (virtual machine)" : ""}, ${m.memoryGb} GB RAM, ${m.os} ${m.kernel}; ${tools.join(", ")}`;
}

// ---------- Markdown ----------

export function renderMarkdown(r: BenchResult): string {
  const out: string[] = [];
  const ran = r.scenarios.filter((s) => s.status === "ok");
  const p = r.profile;
  out.push("# meshwasm benchmark results", "");
  if (r.mode === "quick") {
    out.push(
      "> **Quick run.** Every figure is a single short sample: it shows the suite works, not how fast anything is.",
      "",
    );
  }
  out.push(
    `${r.mode === "full" ? "Full" : "Quick"} run, ${r.startedAt.slice(0, 16).replace("T", " ")} UTC` +
      (r.machine.commit ? `, commit \`${r.machine.commit}\`${r.machine.dirty ? " (with uncommitted changes)" : ""}` : "") +
      `. ${p.rounds} round${p.rounds === 1 ? "" : "s"}; each run is ${p.warmupS} s warm-up + ${p.durationS} s measured; ` +
      `scenarios interleaved, the median over rounds is shown. Load generator: ${r.loadgen}.`,
    "",
    `- **Machine:** ${describeMachine(r.machine)}`,
    `- **Pinning:** ${r.pinning}`,
    `- **Upstream:** one Bun.serve process for every scenario, bodies served from memory; proxies keep upstream connections alive and log nothing.`,
    `- **× nginx:** this row's req/s over nginx's, in the same round and cell, median over rounds.`,
    ...r.notes.map((n) => `- **Note:** ${n}`),
    "",
  );

  out.push("## Throughput and latency", "");
  for (const cell of r.cells) {
    out.push(`### ${cell.label}`, "");
    out.push("| Scenario | req/s | × nginx | p50 | p90 | p99 | p99.9 | proxy CPU s / 1k req | HTTP errors | socket errors |");
    out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const s of ran) {
      const c = s.cells[cell.id];
      const m = c?.summary;
      if (!m) {
        out.push(`| ${s.label} | failed: ${(c?.errors[0] ?? "no result").split("\n")[0]} | | | | | | | | |`);
        continue;
      }
      out.push(
        `| ${s.role === "ours" ? `**${s.label}**` : s.label} | ${fmtRps(m.rps)} | ${s.id === r.baseline ? "1.00×" : fmtRatio(m.ratioToBaseline)} | ` +
          `${fmtLatency(m.p50Us)} | ${fmtLatency(m.p90Us)} | ${fmtLatency(m.p99Us)} | ${fmtLatency(m.p999Us)} | ` +
          `${fmtCpu(m.cpuPer1kS)} | ${m.non2xx} | ${m.socketErrors} |`,
      );
    }
    const direct = ran.find((s) => s.role === "ceiling")?.cells[cell.id]?.summary?.rps;
    const base = ran.find((s) => s.id === r.baseline)?.cells[cell.id]?.summary?.rps;
    if (direct && base && base >= 0.9 * direct) {
      out.push(
        "",
        `nginx reaches ${Math.round((base / direct) * 100)} % of the direct ceiling here, so this cell is limited by the load generator and upstream, ` +
          "and ratios to nginx flatter every row. Compare proxy CPU per 1k requests instead.",
      );
    }
    out.push("");
  }
  out.push(
    "HTTP errors are responses wrk counts as errors (status ≥ 400; autocannon: any non-2xx), summed over rounds. " +
      "Socket errors are connect, read and write errors and timeouts. Latencies are measured by the load generator, " +
      "which shares a core with the upstream.",
    "",
  );

  const withMemory = ran.filter((s) => s.memory);
  if (withMemory.length > 0) {
    out.push("## Memory", "", "| Proxy | RSS idle after start | RSS idle after the run | peak RSS | of idle RSS after the run, anonymous |", "|---|---:|---:|---:|---:|");
    for (const s of withMemory) {
      const m = s.memory!;
      out.push(`| ${s.label} | ${fmtMb(m.idleStartKb)} | ${fmtMb(m.idleEndKb)} | ${fmtMb(m.peakKb)} | ${fmtMb(m.idleEndAnonKb ?? null)} |`);
    }
    out.push(
      "",
      "RSS is what the bar is judged on. The last column is the part of it that is the process's own heap, stacks and JIT code (RssAnon);",
      "the rest is file-backed, mostly pages of the runtime's executable (bun is a 100 MB binary), shared with other processes running it.",
      "",
    );
  }

  out.push("## Micro-benchmarks", "");
  const fc = r.micro.filterCall;
  out.push(
    `- **Header-only filter call** (bench/micro/filter-call.ts): ` +
      (fc.status === "ok" ? `median ${fmtMicro(fc.medianUs)}, p99 ${fmtMicro(fc.p99Us)}` : `${fc.status}: ${firstLine(fc.reason)}`),
  );
  const rl = r.micro.reload;
  out.push(
    `- **Config reload** (until GET /config shows the new version): ` +
      (rl.status === "ok"
        ? `median ${rl.medianMs?.toFixed(1)} ms, max ${rl.maxMs.toFixed(1)} ms over ${rl.reloads} reloads via ${rl.via}`
        : `${rl.status}: ${firstLine(rl.reason)}`),
  );
  const hs = r.micro.hotSwap;
  // Older result files predate these fields.
  if (hs.status === "ok") hs.swapErrors ??= [];
  out.push(
    `- **Filter hot swap under load** (64 connections): ` +
      (hs.status === "ok"
        ? `${hs.swaps} swaps of ${hs.filter}${hs.via ? ` via ${hs.via}` : ""} during ${fmtRps(hs.load.requests)} requests: ${hs.load.non2xx} HTTP errors, ${hs.load.socketErrors} socket errors` +
          (hs.swapErrors.length > 0 ? `; ${hs.swapErrors.length} swaps refused (first: ${hs.swapErrors[0]})` : "")
        : `${hs.status}: ${firstLine(hs.reason)}`),
    "",
  );

  out.push("## Against the bars in MISSION.md", "", "| Bar | This run |", "|---|---|");
  for (const [bar, verdict] of checkBars(r)) out.push(`| ${bar} | ${verdict} |`);
  out.push("");

  const notRun = r.scenarios.filter((s) => s.status !== "ok");
  const microNotRun = (
    [
      ["filter call", r.micro.filterCall],
      ["config reload", r.micro.reload],
      ["hot swap", r.micro.hotSwap],
    ] as const
  ).filter(([, m]) => m.status !== "ok");
  if (notRun.length + microNotRun.length > 0) {
    out.push("## Not measured in this run", "");
    const item = (name: string, status: string, reason = "", detail?: string) => {
      out.push(`- ${name}: ${status}: ${firstLine(reason)}`);
      if (detail?.trim()) out.push("", "  ```", ...detail.trimEnd().split("\n").slice(-8).map((l) => `  ${l}`), "  ```", "");
    };
    for (const s of notRun) item(`\`${s.id}\``, s.status, s.reason, s.detail);
    for (const [name, m] of microNotRun) if (m.status !== "ok") item(name, m.status, m.reason, m.detail);
    out.push("");
  }
  out.push("Raw figures for every round: the JSON file of the same run. Reproduce with `npm run bench` (about 10 minutes) or `npm run bench -- --quick`.", "");
  return out.join("\n");
}

function fmtMicro(us: number | null): string {
  return us == null ? "–" : `${us < 10 ? us.toFixed(2) : us.toFixed(1)} µs`;
}

function firstLine(s: string): string {
  return s.split("\n")[0];
}

/** The performance bars from MISSION.md, each with what this run says about it. */
export function checkBars(r: BenchResult): Array<[string, string]> {
  const byId = new Map(r.scenarios.map((s) => [s.id, s]));
  const ratios = (id: string) => {
    const s = byId.get(id);
    if (!s || s.status !== "ok") return null;
    return r.cells.map((c) => ({ cell: c, ratio: s.cells[c.id]?.summary?.ratioToBaseline ?? null }));
  };
  const ratioVerdict = (id: string, bar: number) => {
    const rs = ratios(id);
    if (!rs) return `not measured (${byId.get(id)?.reason ? firstLine(byId.get(id)!.reason!) : "scenario not run"})`;
    const known = rs.filter((x) => x.ratio != null);
    if (known.length === 0) return "no ratio (nginx not measured)";
    const met = known.filter((x) => x.ratio! >= bar).length;
    const worst = known.reduce((a, b) => (a.ratio! <= b.ratio! ? a : b));
    return `${met === known.length ? "met" : "**not met**"}: bar reached in ${met} of ${known.length} cells; lowest ${fmtRatio(worst.ratio)} (${worst.cell.label})`;
  };
  const fc = r.micro.filterCall;
  const hs = r.micro.hotSwap;
  if (hs.status === "ok") hs.swapErrors ??= [];
  const idle = r.scenarios
    .filter((s) => s.role === "ours" && s.status === "ok" && s.memory?.idleStartKb != null && !s.id.includes("+"))
    .map((s) => {
      const worst = Math.max(s.memory!.idleStartKb ?? 0, s.memory!.idleEndKb ?? 0);
      return `${worst <= 50 * 1024 ? "met" : "**not met**"} for ${s.id}: ${fmtMb(s.memory!.idleStartKb)} after start, ${fmtMb(s.memory!.idleEndKb)} after the run`;
    });
  return [
    ["Passthrough on Bun ≥ 1.00× nginx", ratioVerdict("meshwasm-bun", 1)],
    ["Passthrough on Deno ≥ 1.00× nginx", ratioVerdict("meshwasm-deno", 1)],
    ["Standard filter chain ≥ 0.85× nginx", ratioVerdict("meshwasm-bun+chain", 0.85)],
    [
      "Header-only filter call ≤ 2 µs median",
      fc.status === "ok" && fc.medianUs != null
        ? `${fc.medianUs <= 2 ? "met" : "**not met**"}: ${fmtMicro(fc.medianUs)}`
        : `not measured (${fc.status === "ok" ? "no median in the output" : firstLine(fc.reason)})`,
    ],
    ["Idle memory ≤ 50 MB", idle.length > 0 ? idle.join("; ") : "not measured (proxy not run)"],
    [
      "Hot swap under load: zero failed requests",
      hs.status === "ok"
        ? `${hs.load.non2xx + hs.load.socketErrors === 0 && hs.swapErrors.length === 0 ? "met" : "**not met**"}: ${hs.load.non2xx} HTTP errors, ${hs.load.socketErrors} socket errors in ${hs.swaps} swaps` +
          (hs.swapErrors.length > 0 ? `, ${hs.swapErrors.length} swaps refused` : "")
        : `not measured (${firstLine(hs.reason)})`,
    ],
  ];
}

// ---------- SVG ----------

const COLORS: Record<Role, string> = {
  ceiling: "#c7cbd1",
  peer: "#6b7280",
  reference: "#a78bfa",
  ours: "#2563eb",
};

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** Throughput per scenario, one panel per cell, each bar labelled with req/s and its ratio to nginx. */
export function renderSvg(r: BenchResult): string {
  const ran = r.scenarios.filter((s) => s.status === "ok");
  const W = 960;
  const labelW = 250;
  const barX = labelW + 10;
  const barW = 440;
  const rowH = 22;
  const font = `font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"`;
  const parts: string[] = [];
  let y = 0;

  parts.push(`<text x="20" y="${(y += 32)}" font-size="18" font-weight="600" fill="#111827">meshwasm throughput, requests per second (higher is better)</text>`);
  const sub =
    `${r.mode === "quick" ? "QUICK RUN (single short samples, not comparable) · " : ""}` +
    `${r.startedAt.slice(0, 10)} · ${r.machine.cpuModel}, ${r.machine.cores} cores · median of ${r.profile.rounds} round${r.profile.rounds === 1 ? "" : "s"} · ${r.loadgen.split(" (")[0]}`;
  parts.push(`<text x="20" y="${(y += 20)}" font-size="12" fill="#4b5563">${esc(sub)}</text>`);
  if (r.noise && r.noise.noisyRuns > r.noise.runs / 4) {
    const warn = `Noisy machine: other processes used ${r.noise.meanCpu.toFixed(2)} CPU on average during ${r.noise.noisyRuns} of ${r.noise.runs} runs; figures are unreliable (see latest.md).`;
    parts.push(`<text x="20" y="${(y += 18)}" font-size="12" font-weight="600" fill="#b91c1c">${esc(warn)}</text>`);
  }
  // Legend.
  y += 20;
  let lx = 20;
  for (const [role, name] of [["ours", "meshwasm"], ["peer", "nginx / HAProxy"], ["reference", "reference"], ["ceiling", "no proxy (ceiling)"]] as const) {
    parts.push(`<rect x="${lx}" y="${y - 10}" width="12" height="12" fill="${COLORS[role]}"/>`);
    parts.push(`<text x="${lx + 17}" y="${y}" font-size="12" fill="#374151">${name}</text>`);
    lx += 45 + name.length * 7.5;
  }
  parts.push(`<line x1="${lx}" y1="${y - 4}" x2="${lx + 18}" y2="${y - 4}" stroke="#dc2626" stroke-width="1.5" stroke-dasharray="4 3"/>`);
  parts.push(`<text x="${lx + 23}" y="${y}" font-size="12" fill="#374151">nginx</text>`);
  y += 12;

  for (const cell of r.cells) {
    const rows = ran.map((s) => ({ s, m: s.cells[cell.id]?.summary }));
    const max = Math.max(1, ...rows.map((x) => x.m?.rps ?? 0));
    const nginx = rows.find((x) => x.s.id === r.baseline)?.m?.rps;
    y += 26;
    parts.push(`<text x="20" y="${y}" font-size="14" font-weight="600" fill="#111827">${esc(cell.label)}</text>`);
    parts.push(`<text x="${barX + barW + 78}" y="${y}" font-size="11" text-anchor="end" fill="#6b7280">req/s</text>`);
    y += 8;
    if (nginx) {
      // Drawn first, so the bars and their labels sit on top of it.
      const x = barX + (nginx / max) * barW;
      parts.push(`<line x1="${x.toFixed(1)}" y1="${y}" x2="${x.toFixed(1)}" y2="${y + rows.length * rowH}" stroke="#dc2626" stroke-width="1.5" stroke-dasharray="4 3"/>`);
    }
    for (const { s, m } of rows) {
      const cy = y + rowH / 2;
      parts.push(
        `<text x="${labelW}" y="${cy + 4}" font-size="12" text-anchor="end" fill="#111827"${s.role === "ours" ? ' font-weight="600"' : ""}>${esc(s.id)}</text>`,
      );
      if (m?.rps != null) {
        const w = Math.max(1, (m.rps / max) * barW);
        parts.push(`<rect x="${barX}" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" rx="2" fill="${COLORS[s.role]}"><title>${esc(`${s.label}: ${fmtRps(m.rps)} req/s`)}</title></rect>`);
        // Figures in fixed columns right of the bars: aligned, and never under the nginx line.
        const ratio = s.id === r.baseline ? "baseline" : m.ratioToBaseline != null ? `${fmtRatio(m.ratioToBaseline)} nginx` : "";
        const errs = m.non2xx + m.socketErrors > 0 ? ` · ${m.non2xx + m.socketErrors} errors` : "";
        parts.push(`<text x="${barX + barW + 78}" y="${cy + 4}" font-size="12" text-anchor="end" fill="#111827">${fmtRps(m.rps)}</text>`);
        parts.push(
          `<text x="${barX + barW + 90}" y="${cy + 4}" font-size="12" fill="${errs ? "#b91c1c" : "#374151"}"${s.role === "ours" ? ' font-weight="600"' : ""}>${esc(ratio)}${esc(errs)}</text>`,
        );
      } else {
        parts.push(`<text x="${barX + 4}" y="${cy + 4}" font-size="12" fill="#9ca3af" font-style="italic">no result</text>`);
      }
      y += rowH;
    }
  }

  const notRun = r.scenarios.filter((s) => s.status !== "ok");
  if (notRun.length > 0) {
    y += 10;
    // Wrapped by hand: SVG text does not wrap.
    const lines: string[] = [];
    let line = "Not measured (see latest.md):";
    for (const id of notRun.map((s) => s.id)) {
      if ((line.length + id.length + 2) * 6.6 > W - 40) {
        lines.push(line);
        line = "";
      }
      line += `${line ? " " : ""}${id}${id === notRun[notRun.length - 1].id ? "" : ","}`;
    }
    lines.push(line);
    for (const l of lines) parts.push(`<text x="20" y="${(y += 18)}" font-size="12" fill="#6b7280">${esc(l)}</text>`);
  }
  y += 20;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" ${font} role="img" aria-label="meshwasm benchmark throughput">\n` +
    `<rect width="${W}" height="${y}" fill="#ffffff"/>\n` +
    `${parts.join("\n")}\n</svg>\n`
  );
}

// `bun bench/report.ts RESULT.json [OUT_DIR]`: re-render latest.md and latest.svg from a saved run.
if (import.meta.main) {
  const [file, outDir] = process.argv.slice(2);
  if (!file) {
    console.error("usage: bun bench/report.ts RESULT.json [OUT_DIR]");
    process.exit(2);
  }
  const result = (await Bun.file(file).json()) as BenchResult;
  const dir = outDir ?? join(file, "..");
  writeFileSync(join(dir, "latest.md"), renderMarkdown(result));
  writeFileSync(join(dir, "latest.svg"), renderSvg(result));
  console.log(`wrote ${join(dir, "latest.md")} and ${join(dir, "latest.svg")}`);
}
