import { describe, expect, test } from "bun:test";
import { parseFilterCall, withCustomSection } from "./micro.ts";

describe("parseFilterCall", () => {
  test("prefers a JSON line with medianUs and p99Us", () => {
    expect(parseFilterCall('warming up\n{"medianUs":0.84,"p99Us":1.9}\n')).toEqual({ medianUs: 0.84, p99Us: 1.9 });
  });

  test("reads text output and converts units to microseconds", () => {
    expect(parseFilterCall("header-only filter call: median 840 ns, p99 1.9 µs, p99.9 4 µs")).toEqual({ medianUs: 0.84, p99Us: 1.9 });
  });

  test("reads the format filter-call.ts prints", () => {
    const out = "filters/add-header request phase, bun 1.4.5, 2000 batches of 1000 calls\nmedian 0.912 us/call   p99 1.450 us/call   (loop overhead 0.004 us)";
    expect(parseFilterCall(out)).toEqual({ medianUs: 0.912, p99Us: 1.45 });
  });

  test("gives nulls when the output has no figures", () => {
    expect(parseFilterCall("nothing to see")).toEqual({ medianUs: null, p99Us: null });
  });
});

describe("withCustomSection", () => {
  const empty = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);

  test("makes a different file that is still a valid module", () => {
    const a = withCustomSection(empty, "bench-swap", "1");
    const b = withCustomSection(empty, "bench-swap", "2");
    expect(WebAssembly.validate(a)).toBe(true);
    expect(WebAssembly.validate(b)).toBe(true);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
  });

  test("encodes section sizes above 127 bytes as multi-byte LEB128", () => {
    expect(WebAssembly.validate(withCustomSection(empty, "x", "y".repeat(300)))).toBe(true);
  });
});
