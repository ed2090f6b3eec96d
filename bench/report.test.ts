import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BenchResult, checkBars, renderMarkdown, renderSvg, type Sample, writeReport } from "./report.ts";
import { PROFILES } from "./scenarios.ts";

function sample(rps: number): Sample {
  return {
    requests: rps,
    durationS: 1,
    rps,
    bytes: 0,
    latencyUs: { p50: 100, p90: 200, p99: 300, p999: 1200, mean: 120, max: 2000 },
    non2xx: 0,
    socketErrors: 0,
    loadgenCpuS: 0.5,
    round: 1,
    cpuS: 0.5,
    cpuPer1kS: 0.5 / (rps / 1000),
    foreignCpu: 0,
  };
}

function fixture(): BenchResult {
  const cell = { id: "100B-c64", label: "100 B responses, 64 connections", connections: 64, path: "/small" };
  const row = (id: string, role: "ceiling" | "peer" | "ours", rps: number, ratio: number | null) => ({
    id,
    label: `${id} <label>`,
    role,
    status: "ok" as const,
    memory: role === "ceiling" ? undefined : { idleStartKb: 30_000, idleEndKb: 40_000, peakKb: 60_000, idleEndAnonKb: 12_800 },
    cells: {
      [cell.id]: {
        samples: [sample(rps)],
        errors: [],
        summary: { rps, p50Us: 100, p90Us: 200, p99Us: 300, p999Us: 1200, cpuPer1kS: 0.01, requests: rps, non2xx: 0, socketErrors: 0, ratioToBaseline: ratio },
      },
    },
  });
  return {
    schema: 1,
    startedAt: "2026-01-02T03:04:05.678Z",
    finishedAt: "2026-01-02T03:14:05.678Z",
    mode: "full",
    profile: PROFILES.full,
    loadgen: "wrk 4.1.0 (1 thread)",
    pinning: "none",
    machine: {
      cpuModel: "Test CPU",
      cores: 2,
      memoryGb: 4,
      os: "Linux",
      kernel: "6.0",
      virtualized: false,
      versions: { bun: "1.4.5", deno: null, nginx: "nginx version: nginx/1.22.1", haproxy: null, loadgen: "wrk 4.1.0" },
      commit: "abc1234",
      dirty: false,
    },
    baseline: "nginx",
    cells: [cell],
    scenarios: [
      row("direct", "ceiling", 60_000, 2),
      row("nginx", "peer", 30_000, 1),
      row("meshwasm-bun", "ours", 24_000, 0.8),
      { id: "meshwasm-bun+chain", label: "chain", role: "ours", status: "skipped", reason: "filter auth not built", cells: {} },
    ],
    micro: {
      filterCall: { status: "ok", medianUs: 1.5, p99Us: 3, output: "" },
      reload: { status: "skipped", reason: "admin GET /config answered 404" },
      hotSwap: { status: "skipped", reason: "no filter built yet" },
    },
    notes: [],
  };
}

describe("report", () => {
  test("the Markdown has one table per cell, ratios to nginx and the skipped rows with reasons", () => {
    const md = renderMarkdown(fixture());
    expect(md).toContain("### 100 B responses, 64 connections");
    expect(md).toContain("| **meshwasm-bun <label>** | 24,000 | 0.80× |");
    expect(md).toContain("`meshwasm-bun+chain`: skipped: filter auth not built");
    expect(md).toContain("config reload: skipped: admin GET /config answered 404");
    // RSS columns, then the anonymous part of the idle RSS after the run.
    expect(md).toContain("| 29.3 MB | 39.1 MB | 58.6 MB | 12.5 MB |");
  });

  test("the bars table says which bars are met", () => {
    const bars = Object.fromEntries(checkBars(fixture()));
    expect(bars["Passthrough on Bun ≥ 1.00× nginx"]).toStartWith("**not met**: bar reached in 0 of 1 cells");
    expect(bars["Header-only filter call ≤ 2 µs median"]).toStartWith("met");
    expect(bars["Standard filter chain ≥ 0.85× nginx"]).toStartWith("not measured");
  });

  test("the SVG is well-formed and escapes labels", () => {
    const svg = renderSvg(fixture());
    expect(svg).toStartWith("<svg ");
    expect(svg.trimEnd()).toEndWith("</svg>");
    expect(svg).toContain("0.80× nginx");
    expect(svg).not.toContain("<label>");
  });

  test("writeReport writes the timestamped JSON and the three latest files", () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-report-"));
    try {
      writeReport(fixture(), dir);
      expect(readdirSync(dir).sort()).toEqual(["2026-01-02T03-04-05Z.json", "latest.json", "latest.md", "latest.svg"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
