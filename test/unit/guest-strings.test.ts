// Header names and values as the host reads them out of a filter's memory: checked, lower-cased
// (names), interned. Driven through the host functions on a bare memory, no module needed.
import { describe, expect, test } from "bun:test";
import { createLogger } from "../../runtime/observability/log.ts";
import { Registry } from "../../runtime/observability/metrics.ts";
import { MAP_REQUEST } from "../../runtime/wasm/abi.ts";
import { Guest } from "../../runtime/wasm/guest.ts";
import type { RequestContext } from "../../runtime/proxy/context.ts";
import { ListHeaders } from "../../runtime/proxy/filter-headers.ts";

function setup() {
  const memory = new WebAssembly.Memory({ initial: 1 });
  const g = new Guest({ filterName: "t", log: createLogger({ level: "error", sink: () => {} }), metrics: new Registry(), crypto: {} as never });
  g.attach({ exports: { memory } } as unknown as WebAssembly.Instance, () => {});
  const u16 = new Uint16Array(memory.buffer);
  let at = 256; // code units
  /** Writes `s` as UTF-16 into a fresh place; returns [ptr, len]. */
  const put = (s: string): [number, number] => {
    for (let i = 0; i < s.length; i++) u16[at + i] = s.charCodeAt(i);
    const ptr = at * 2;
    at += s.length + 1;
    return [ptr, s.length];
  };
  const headers: [string, string][] = [];
  g.ctx = { headers: new ListHeaders(headers) } as unknown as RequestContext;
  const mesh = g.imports().mesh as Record<string, (...a: number[]) => number>;
  const set = (name: string, value: string) => mesh.header_set!(MAP_REQUEST, ...put(name), ...put(value));
  const lastError = () => {
    const [ptr] = put(" ".repeat(200));
    const n = mesh.last_error!(ptr, 200);
    return String.fromCharCode(...u16.subarray(ptr / 2, ptr / 2 + n));
  };
  return { g, set, headers, lastError };
}

describe("guest header strings", () => {
  test("names are lower-cased, and a name set again in another case replaces it", () => {
    const { set, headers } = setup();
    expect(set("X-Tenant", "blue")).toBe(0);
    expect(set("x-other", "1")).toBe(0);
    expect(set("x-TENANT", "green")).toBe(0);
    expect(headers).toEqual([["x-tenant", "green"], ["x-other", "1"]]);
  });

  test("a name or value that differs from an interned one only where the hash does not look is still checked", () => {
    const { set, headers, lastError } = setup();
    // Same length and the same four units at each end as a valid, interned one.
    expect(set("x-aaaa-bbbb-zzzz", "v")).toBe(0);
    expect(set("x-aa a-bb b-zzzz", "v")).toBe(-1);
    expect(lastError()).toBe("invalid header name");
    expect(set("x-value", "abcd-1234-wxyz")).toBe(0);
    expect(set("x-value2", "abcd-\r\n34-wxyz")).toBe(-1);
    expect(lastError()).toBe("header values cannot contain CR, LF or NUL");
    // Colliding values, both valid: each comes back as itself.
    expect(set("x-c1", "abcd-5678-wxyz")).toBe(0);
    expect(set("x-c2", "abcd-1234-wxyz")).toBe(0);
    expect(headers).toEqual([
      ["x-aaaa-bbbb-zzzz", "v"],
      ["x-value", "abcd-1234-wxyz"],
      ["x-c1", "abcd-5678-wxyz"],
      ["x-c2", "abcd-1234-wxyz"],
    ]);
  });

  test("values keep every code unit: text above latin1, a lone surrogate, long values", () => {
    const { set, headers } = setup();
    const long = "v".repeat(3000) + "\u20ac";
    expect(set("x-u", "\u03c0 \u20ac")).toBe(0);
    expect(set("x-s", "a\ud800b")).toBe(0);
    expect(set("x-l", long)).toBe(0);
    expect(set("x-1", "z")).toBe(0);
    expect(headers).toEqual([["x-u", "\u03c0 \u20ac"], ["x-s", "a\ud800b"], ["x-l", long], ["x-1", "z"]]);
  });
});
