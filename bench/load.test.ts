import { describe, expect, test } from "bun:test";
import { parseAutocannon, parseWrk } from "./load.ts";

describe("parseWrk", () => {
  test("reads the summary line that wrk-summary.lua prints among wrk's own output", () => {
    const out = [
      "Running 1s test @ http://127.0.0.1:4000/small",
      "  1 threads and 64 connections",
      'BENCH_RESULT {"requests":80894,"durationUs":2000874,"bytes":17553998,"connect":0,"read":2,"write":0,"status":5,"timeout":1,"p50":1600,"p75":1700,"p90":1913,"p99":2800,"p999":4395,"mean":1559.34,"max":5172}',
    ].join("\n");
    const r = parseWrk(out);
    expect(r.requests).toBe(80894);
    expect(r.rps).toBeCloseTo(80894 / 2.000874, 3);
    expect(r.latencyUs).toEqual({ p50: 1600, p90: 1913, p99: 2800, p999: 4395, mean: 1559.34, max: 5172 });
    expect(r.non2xx).toBe(5);
    expect(r.socketErrors).toBe(3);
  });

  test("says what wrk printed when there is no summary", () => {
    expect(() => parseWrk("unable to connect to 127.0.0.1:1 Connection refused")).toThrow(/Connection refused/);
  });
});

describe("parseAutocannon", () => {
  test("converts autocannon's millisecond latencies to microseconds", () => {
    const json = {
      duration: 2.01,
      requests: { total: 1000 },
      throughput: { total: 100_000 },
      latency: { p50: 1, p90: 2, p99: 3.5, p99_9: 7, mean: 1.2, max: 9 },
      non2xx: 4,
      errors: 1,
    };
    const r = parseAutocannon(`some warning\n${JSON.stringify(json)}\n`);
    expect(r.latencyUs.p99).toBe(3500);
    expect(r.latencyUs.p999).toBe(7000);
    expect(r.rps).toBeCloseTo(1000 / 2.01, 6);
    expect(r.non2xx).toBe(4);
    expect(r.socketErrors).toBe(1);
  });
});
