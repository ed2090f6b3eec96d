// Metered modules compute what the originals do, pay fuel for their work, and stop when it runs out.
import { beforeAll, describe, expect, test } from "bun:test";
import asc from "assemblyscript/asc";
import { calibrateFuelPerMs, FUEL_EXPORT, MeterError, meterModule, type MeterOptions } from "../../runtime/wasm/meter.ts";
import { body, functype, I32, moduleAround, section, sleb, str, uleb, vec, wasm } from "./fixtures/meter/wasm.ts";

type Exports = Record<string, any>;

function instantiate(bytes: Uint8Array, imports: WebAssembly.Imports = {}): Exports {
  return new WebAssembly.Instance(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>), imports).exports as Exports;
}

function metered(bytes: Uint8Array, opts?: MeterOptions): Uint8Array {
  const out = meterModule(bytes, opts);
  expect(WebAssembly.validate(out)).toBe(true);
  return out;
}

/** Fuel a call uses, with `start` fuel to begin with. */
function fuelUsed(exports: Exports, call: () => unknown, start = 1n << 60n): bigint {
  const fuel = exports[FUEL_EXPORT] as WebAssembly.Global;
  fuel.value = start;
  call();
  return start - (fuel.value as bigint);
}

/** Run `call` with `fuel` and return how it ended and the fuel left. */
function runWith(exports: Exports, fuel: bigint, call: () => unknown): { error: unknown; left: bigint } {
  const global = exports[FUEL_EXPORT] as WebAssembly.Global;
  global.value = fuel;
  let error: unknown;
  try {
    call();
  } catch (err) {
    error = err;
  }
  return { error, left: global.value as bigint };
}

function meterError(bytes: Uint8Array, opts?: MeterOptions): MeterError {
  try {
    meterModule(bytes, opts);
  } catch (err) {
    if (err instanceof MeterError) return err;
    throw err;
  }
  throw new Error("meterModule did not throw");
}

describe("meterModule on AssemblyScript", () => {
  let original: Uint8Array;
  let hostCalls = 0;
  const imports = () => ({
    env: { abort() {} }, // returning lets the module's own `unreachable` run: a trap like the meter's
    "extism:host/env": {
      input_length: () => {
        hostCalls++;
        return 21n;
      },
    },
  });

  beforeAll(async () => {
    const source = await Bun.file(new URL("./fixtures/meter/assembly/index.ts", import.meta.url)).text();
    const result = await asc.compileString({ "index.ts": source }, { optimizeLevel: 3, enable: ["simd"] });
    if (result.error || !result.binary) throw new Error(`asc failed: ${result.stderr.toString()}`);
    original = result.binary;
  }, 30_000);

  test("computes the same results as the original module", () => {
    const plain = instantiate(original, imports());
    const fueled = instantiate(metered(original), imports());
    (fueled[FUEL_EXPORT] as WebAssembly.Global).value = 1n << 60n;
    for (const [name, args] of [
      ["fib", [20]],
      ["mixed", [1000]],
      ["greet", [40]],
      ["simdSum", [100]],
      ["fromHost", []],
    ] as const) {
      expect(fueled[name](...args)).toEqual(plain[name](...args));
    }
    plain.prepare(65536);
    fueled.prepare(65536);
    expect(fueled.hash()).toBe(plain.hash());
  });

  test("keeps the imports and exports and adds only the fuel global", () => {
    const before = new WebAssembly.Module(original as Uint8Array<ArrayBuffer>);
    const after = new WebAssembly.Module(metered(original) as Uint8Array<ArrayBuffer>);
    expect(WebAssembly.Module.imports(after)).toEqual(WebAssembly.Module.imports(before));
    expect(WebAssembly.Module.exports(after)).toEqual([...WebAssembly.Module.exports(before), { name: FUEL_EXPORT, kind: "global" }]);
  });

  test("calls the host through the preserved extism:host/env import", () => {
    const fueled = instantiate(metered(original), imports());
    hostCalls = 0;
    (fueled[FUEL_EXPORT] as WebAssembly.Global).value = 1000n;
    expect(fueled.fromHost()).toBe(42n);
    expect(hostCalls).toBe(1);
  });

  test("traps an infinite while(true) loop with the fuel below zero", () => {
    const fueled = instantiate(metered(original), imports());
    // A long loop that does end comes first: if the meter is broken this fails instead of hanging.
    const bounded = runWith(fueled, 10_000n, () => fueled.countTo(1 << 30));
    expect(bounded.error).toBeInstanceOf(WebAssembly.RuntimeError);
    const { error, left } = runWith(fueled, 10_000n, () => fueled.spin());
    expect(error).toBeInstanceOf(WebAssembly.RuntimeError);
    expect(left).toBeLessThan(0n);
  });

  test("traps infinite recursion by running out of fuel before the stack overflows", () => {
    const fueled = instantiate(metered(original), imports());
    const small = runWith(fueled, 100_000n, () => fueled.down(0));
    expect(small.error).toBeInstanceOf(WebAssembly.RuntimeError);
    expect(small.left).toBeLessThan(0n);
    // With fuel to spare the same call dies of stack overflow instead, fuel left over.
    const ample = runWith(fueled, 1n << 60n, () => fueled.down(0));
    expect(ample.error).toBeInstanceOf(RangeError);
    expect(ample.left).toBeGreaterThan(0n);
  });

  test("leaves the fuel at or above zero when the filter traps by itself", () => {
    const fueled = instantiate(metered(original), imports());
    const { error, left } = runWith(fueled, 100_000n, () => fueled.fail());
    expect(error).toBeInstanceOf(WebAssembly.RuntimeError);
    expect(left).toBeGreaterThanOrEqual(0n);
  });

  test("uses more fuel for more work", () => {
    const fueled = instantiate(metered(original), imports());
    const fib = [10, 15, 20].map((n) => fuelUsed(fueled, () => fueled.fib(n)));
    expect(fib[0]!).toBeGreaterThan(0n);
    expect(fib[1]!).toBeGreaterThan(fib[0]! * 10n); // fib(n) makes ~1.6^n calls
    expect(fib[2]!).toBeGreaterThan(fib[1]! * 10n);
    fueled.prepare(1024);
    const small = fuelUsed(fueled, () => fueled.hash());
    fueled.prepare(65536);
    const large = fuelUsed(fueled, () => fueled.hash());
    const ratio = Number(large) / Number(small);
    expect(ratio).toBeGreaterThan(60);
    expect(ratio).toBeLessThan(65);
  });

  test("caps memory so memory.grow past maxMemoryPages returns -1", () => {
    const fueled = instantiate(metered(original, { maxMemoryPages: 4 }), imports());
    (fueled[FUEL_EXPORT] as WebAssembly.Global).value = 1n << 60n;
    const pages = (fueled.memory as WebAssembly.Memory).buffer.byteLength / 65536;
    expect(fueled.grow(4 - pages)).toBe(pages);
    expect(fueled.grow(1)).toBe(-1);
    // The uncapped original grows, and the capped module's allocator aborts (a trap, fuel left).
    expect(instantiate(original, imports()).grow(1)).toBeGreaterThan(0);
    const { error, left } = runWith(fueled, 1n << 60n, () => fueled.prepare(1 << 20));
    expect(error).toBeInstanceOf(WebAssembly.RuntimeError);
    expect(left).toBeGreaterThan(0n);
  });

  test("runs the module through its start function on the initial fuel", () => {
    expect(() => instantiate(metered(original, { initialFuel: 0 }), imports())).toThrow(WebAssembly.RuntimeError);
    const fueled = instantiate(metered(original), imports());
    expect((fueled[FUEL_EXPORT] as WebAssembly.Global).value).toBeGreaterThan(0n);
  });
});

describe("meterModule on hand-built modules", () => {
  test("charges a loop on every iteration, including a loop that takes block parameters", () => {
    // (func (param i32) (result i32) local.get 0  loop (param i32) (result i32)
    //   i32.const 1  i32.sub  local.tee 0  local.get 0  br_if 0  end)
    const code = [0x20, 0x00, 0x03, 0x00, 0x41, 0x01, 0x6b, 0x22, 0x00, 0x20, 0x00, 0x0d, 0x00, 0x0b, 0x0b];
    const bytes = wasm(
      section(1, vec([functype([I32], [I32])])),
      section(3, vec([[0x00]])),
      section(7, vec([[...str("count"), 0x00, 0x00]])),
      section(10, vec([body([], code)])),
    );
    const fueled = instantiate(metered(bytes));
    const used = [10, 20, 30].map((n) => {
      const spent = fuelUsed(fueled, () => expect(fueled.count(n)).toBe(0));
      return spent;
    });
    expect(used[1]! - used[0]!).toBeGreaterThan(0n);
    expect(used[2]! - used[1]!).toBe(used[1]! - used[0]!);
  });

  test("stops deep tail recursion, which never overflows the stack", () => {
    // (func $down (export "down") (param $n i32) (if (i32.eqz $n) (return)) (return_call $down (i32.sub $n 1)))
    const code = [0x20, 0x00, 0x45, 0x04, 0x40, 0x0f, 0x0b, 0x20, 0x00, 0x41, 0x01, 0x6b, 0x12, 0x00, 0x0b];
    const bytes = wasm(section(1, vec([functype([I32], [])])), section(3, vec([[0x00]])), section(7, vec([[...str("down"), 0x00, 0x00]])), section(10, vec([body([], code)])));
    const fueled = instantiate(metered(bytes));
    expect(fuelUsed(fueled, () => fueled.down(1000))).toBeGreaterThan(1000n);
    // 2^31 tail calls would take seconds unmetered; they need not be infinite to show the meter stops them.
    const { error, left } = runWith(fueled, 1_000_000n, () => fueled.down(0x7fffffff));
    expect(error).toBeInstanceOf(WebAssembly.RuntimeError);
    expect(left).toBeLessThan(0n);
  });

  test("charges memory.fill one fuel per byte", () => {
    // (func (param i32) i32.const 0  i32.const 7  local.get 0  memory.fill)
    const bytes = wasm(
      section(1, vec([functype([I32], [])])),
      section(3, vec([[0x00]])),
      section(5, vec([[0x00, 0x02]])),
      section(7, vec([[...str("fill"), 0x00, 0x00], [...str("memory"), 0x02, 0x00]])),
      section(10, vec([body([], [0x41, 0x00, 0x41, 0x07, 0x20, 0x00, 0xfc, 0x0b, 0x00, 0x0b])])),
    );
    const fueled = instantiate(metered(bytes));
    const base = fuelUsed(fueled, () => fueled.fill(0));
    expect(fuelUsed(fueled, () => fueled.fill(100_000))).toBe(base + 100_000n);
    expect(new Uint8Array((fueled.memory as WebAssembly.Memory).buffer)[99_999]).toBe(7);
    const { error, left } = runWith(fueled, 50_000n, () => fueled.fill(100_000));
    expect(error).toBeInstanceOf(WebAssembly.RuntimeError);
    expect(left).toBeLessThan(0n);
    expect(new Uint8Array((fueled.memory as WebAssembly.Memory).buffer)[100_000 + 7]).toBe(0); // nothing filled past the old run
  });

  test("meters the start function with the initial fuel", () => {
    // global $g (mut i32); start: loop { g += 1; br_if (g < 1000) }
    const start = [0x03, 0x40, 0x23, 0x00, 0x41, 0x01, 0x6a, 0x24, 0x00, 0x23, 0x00, 0x41, ...sleb(1000), 0x48, 0x0d, 0x00, 0x0b, 0x0b];
    const bytes = wasm(
      section(1, vec([functype([], [])])),
      section(3, vec([[0x00]])),
      section(6, vec([[I32, 0x01, 0x41, 0x00, 0x0b]])),
      section(7, vec([[...str("g"), 0x03, 0x00]])),
      section(8, uleb(0)),
      section(10, vec([body([], start)])),
    );
    expect((instantiate(metered(bytes)).g as WebAssembly.Global).value).toBe(1000);
    expect(() => instantiate(metered(bytes, { initialFuel: 100 }))).toThrow(WebAssembly.RuntimeError);
  });

  test("adds the global and export sections a module lacks, in the right place", () => {
    const empty = wasm();
    const exports = instantiate(metered(empty));
    expect((exports[FUEL_EXPORT] as WebAssembly.Global).value).toBeGreaterThan(0n);
    // types, functions, code and data: the new sections go between functions and code.
    const bytes = wasm(
      section(1, vec([functype([], [])])),
      section(3, vec([[0x00]])),
      section(5, vec([[0x00, 0x01]])),
      section(10, vec([body([], [0x03, 0x40, 0x0b, 0x0b])])),
      section(11, vec([[0x00, 0x41, 0x00, 0x0b, ...vec([[1]])]])),
    );
    expect(WebAssembly.Module.exports(new WebAssembly.Module(metered(bytes) as Uint8Array<ArrayBuffer>))).toEqual([{ name: FUEL_EXPORT, kind: "global" }]);
  });

  test("keeps custom sections where they were", () => {
    const note = (text: string) => section(0, [...str("meshwasm.note"), ...new TextEncoder().encode(text)]);
    const bytes = wasm(note("first"), section(1, vec([functype([], [])])), section(3, vec([[0x00]])), section(10, vec([body([], [0x0b])])), note("last"));
    const notes = WebAssembly.Module.customSections(new WebAssembly.Module(metered(bytes) as Uint8Array<ArrayBuffer>), "meshwasm.note");
    expect(notes.map((b) => new TextDecoder().decode(b))).toEqual(["first", "last"]);
  });

  test("caps an imported memory, which must then come with a maximum within the cap", () => {
    // (import "env" "memory" (memory 1)) (func (export "grow") (param i32) (result i32) local.get 0 memory.grow)
    const bytes = wasm(
      section(1, vec([functype([I32], [I32])])),
      section(2, vec([[...str("env"), ...str("memory"), 0x02, 0x00, 0x01]])),
      section(3, vec([[0x00]])),
      section(7, vec([[...str("grow"), 0x00, 0x00]])),
      section(10, vec([body([], [0x20, 0x00, 0x40, 0x00, 0x0b])])),
    );
    const capped = metered(bytes, { maxMemoryPages: 3 });
    expect(() => instantiate(capped, { env: { memory: new WebAssembly.Memory({ initial: 1 }) } })).toThrow(WebAssembly.LinkError);
    const exports = instantiate(capped, { env: { memory: new WebAssembly.Memory({ initial: 1, maximum: 3 }) } });
    (exports[FUEL_EXPORT] as WebAssembly.Global).value = 1000n;
    expect(exports.grow(2)).toBe(1);
    expect(exports.grow(1)).toBe(-1);
  });

  test("lowers a defined memory's maximum and rejects one that starts above the cap", () => {
    const withMemory = (limits: number[]) =>
      wasm(
        section(1, vec([functype([I32], [I32])])),
        section(3, vec([[0x00]])),
        section(5, vec([limits])),
        section(7, vec([[...str("grow"), 0x00, 0x00]])),
        section(10, vec([body([], [0x20, 0x00, 0x40, 0x00, 0x0b])])),
      );
    const exports = instantiate(metered(withMemory([0x01, 0x01, 0x64]), { maxMemoryPages: 3 })); // min 1 max 100
    (exports[FUEL_EXPORT] as WebAssembly.Global).value = 1000n;
    expect(exports.grow(2)).toBe(1);
    expect(exports.grow(1)).toBe(-1);
    expect(meterError(withMemory([0x00, 0x05]), { maxMemoryPages: 3 }).message).toContain("memory 0 starts at 5 pages, above maxMemoryPages 3");
  });

  test("refuses a module that already exports __mesh_fuel", () => {
    const bytes = wasm(section(6, vec([[0x7e, 0x01, 0x42, 0x00, 0x0b]])), section(7, vec([[...str(FUEL_EXPORT), 0x03, 0x00]])));
    expect(meterError(bytes).message).toContain(`already exports "${FUEL_EXPORT}"`);
  });

  test("rejects bad options with a TypeError that names the option", () => {
    for (const maxMemoryPages of [-1, 1.5, 65537, "3" as unknown as number]) {
      expect(() => meterModule(wasm(), { maxMemoryPages })).toThrow(/opts\.maxMemoryPages/);
      expect(() => meterModule(wasm(), { maxMemoryPages })).toThrow(TypeError);
    }
    expect(() => meterModule(wasm(), { initialFuel: -1 })).toThrow(/opts\.initialFuel/);
    expect(() => meterModule(wasm(), { initialFuel: 1n << 63n })).toThrow(TypeError);
  });
});

describe("meterModule reading the instruction set", () => {
  // `unreachable` makes the operand stack polymorphic, so `unreachable OP unreachable end` validates
  // for any OP whose immediates are valid. Every row below is [name, encoding of OP and immediates];
  // each is 1 instruction, so the function always costs the same: a misread immediate would read the
  // following 0x00 as an extra `unreachable`, or swallow it, and change the count.
  const memarg = [0x00, 0x80, 0x01]; // align 0, offset 128 in a two-byte LEB
  const rows: [string, number[]][] = [
    ["unreachable", [0x00]],
    ["nop", [0x01]],
    ["br", [0x0c, 0x00]],
    ["br_if", [0x0d, 0x00]],
    ["br_table", [0x0e, 0x02, 0x00, 0x00, 0x00]],
    ["return", [0x0f]],
    ["call", [0x10, 0x00]],
    ["call_indirect", [0x11, 0x00, 0x00]],
    ["return_call", [0x12, 0x00]],
    ["return_call_indirect", [0x13, 0x00, 0x00]],
    ["drop", [0x1a]],
    ["select", [0x1b]],
    ["select t", [0x1c, 0x01, I32]],
    ["local.get", [0x20, 0x00]],
    ["local.set", [0x21, 0x00]],
    ["local.tee", [0x22, 0x00]],
    ["global.get", [0x23, 0x00]],
    ["global.set", [0x24, 0x00]],
    ["table.get", [0x25, 0x00]],
    ["table.set", [0x26, 0x00]],
    ["memory.size", [0x3f, 0x00]],
    ["memory.grow", [0x40, 0x00]],
    ["i32.const", [0x41, 0x80, 0x7f]],
    ["i64.const", [0x42, ...sleb(-(1n << 63n))]],
    ["f32.const", [0x43, 0x0b, 0x0b, 0x0b, 0x0b]],
    ["f64.const", [0x44, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b, 0x0b]],
    ["ref.null func", [0xd0, 0x70]],
    ["ref.null extern", [0xd0, 0x6f]],
    ["ref.is_null", [0xd1]],
    ["ref.func", [0xd2, 0x00]],
    ["i32.load from memory 0 by index (multi-memory)", [0x28, 0x40, 0x00, 0x80, 0x01]],
    ["v128.load from memory 0 by index (multi-memory)", [0xfd, 0x00, 0x40, 0x00, 0x80, 0x01]],
  ];
  for (let op = 0x28; op <= 0x3e; op++) rows.push([`load/store 0x${op.toString(16)}`, [op, ...memarg]]);
  for (let op = 0x45; op <= 0xc4; op++) rows.push([`numeric 0x${op.toString(16)}`, [op]]);
  for (let sub = 0; sub <= 7; sub++) rows.push([`trunc_sat ${sub}`, [0xfc, sub]]);
  rows.push(["data.drop", [0xfc, 0x09, 0x00]], ["elem.drop", [0xfc, 0x0d, 0x00]], ["table.size", [0xfc, 0x10, 0x00]]);
  const simdHoles = new Set([0x9a, 0xa2, 0xa5, 0xa6, 0xaf, 0xb0, 0xb2, 0xb3, 0xb4, 0xbb, 0xc2, 0xc5, 0xc6, 0xcf, 0xd0, 0xd2, 0xd3, 0xd4, 0xe2, 0xee]);
  for (let sub = 0; sub <= 0x113; sub++) {
    if (simdHoles.has(sub)) continue;
    let imm: number[] = [];
    if (sub <= 0x0b || sub === 0x5c || sub === 0x5d) imm = memarg;
    else if (sub === 0x0c || sub === 0x0d) imm = new Array(16).fill(0x0b);
    else if (sub >= 0x15 && sub <= 0x22) imm = [0x00];
    else if (sub >= 0x54 && sub <= 0x5b) imm = [...memarg, 0x00];
    rows.push([`simd 0x${sub.toString(16)}`, [0xfd, ...uleb(sub), ...imm]]);
  }
  // Operations that take a length also pay for it at run time; the check itself costs 12 instructions.
  const withLength: [string, number[]][] = [
    ["memory.init", [0xfc, 0x08, 0x00, 0x00]],
    ["memory.copy", [0xfc, 0x0a, 0x00, 0x00]],
    ["memory.fill", [0xfc, 0x0b, 0x00]],
    ["table.init", [0xfc, 0x0c, 0x00, 0x00]],
    ["table.copy", [0xfc, 0x0e, 0x00, 0x00]],
    ["table.grow", [0xfc, 0x0f, 0x00]],
    ["table.fill", [0xfc, 0x11, 0x00]],
  ];
  // Blocks, each with its own count of instructions outside loops.
  const structured: [string, number[], number][] = [
    ["block", [0x02, 0x40, 0x0b], 5],
    ["block (result i32)", [0x02, I32, 0x00, 0x0b], 6],
    ["block (type 0)", [0x02, 0x00, 0x0b], 5],
    ["if", [0x04, 0x40, 0x0b], 5],
    ["if else", [0x04, 0x40, 0x05, 0x0b], 6],
    ["loop", [0x03, 0x40, 0x0b], 4], // the loop's own `end` is charged inside the loop
  ];

  /**
   * The fuel `unreachable <op> unreachable end` uses before it traps, per op; undefined where the engine
   * lacks the op. The ops the engine has are metered and run as one module, which is much faster.
   */
  function entryCosts(ops: number[][]): (bigint | undefined)[] {
    const codes = ops.map((op) => [0x00, ...op, 0x00, 0x0b]);
    const supported = codes.filter((code) => {
      const single = moduleAround(code);
      expect(WebAssembly.validate(meterModule(single))).toBe(WebAssembly.validate(single));
      return WebAssembly.validate(single);
    });
    const exports = instantiate(metered(moduleAround(...supported)));
    const costs = supported.map((_, i) => {
      const { error, left } = runWith(exports, 1000n, () => exports[`f${i}`]());
      expect(error).toBeInstanceOf(WebAssembly.RuntimeError);
      return 1000n - left;
    });
    return codes.map((code) => (supported.includes(code) ? costs.shift() : undefined));
  }

  test("reads every opcode of the supported proposals and counts each as one instruction", () => {
    const [base] = entryCosts([[0x01]]);
    const costs = entryCosts(rows.map(([, op]) => op));
    expect(rows.map(([name], i) => [name, costs[i] ?? "missing from the engine"])).toEqual(rows.map(([name]) => [name, base!]));
    const lengthCosts = entryCosts(withLength.map(([, op]) => op));
    expect(withLength.map(([name], i) => [name, lengthCosts[i]])).toEqual(withLength.map(([name]) => [name, base! + 12n]));
    const blockCosts = entryCosts(structured.map(([, op]) => op));
    expect(structured.map(([name], i) => [name, blockCosts[i]])).toEqual(structured.map(([name, , count]) => [name, base! + BigInt(count - 4)]));
  });

  test("names an unknown opcode and its offset, for every byte and prefix the meter does not know", () => {
    const known = new Set([0x02, 0x03, 0x04, 0x05, 0x0b, 0xfc, 0xfd, ...rows.map(([, op]) => op[0]!)]);
    const refused = new Set([0x06, 0x07, 0x08, 0x09, 0x0a, 0x14, 0x15, 0x18, 0x19, 0x1f, 0xd3, 0xd4, 0xd5, 0xd6, 0xfb, 0xfe]);
    const cases: [number[], string][] = [];
    for (let op = 0; op < 256; op++) {
      if (known.has(op)) continue;
      cases.push([[op], refused.has(op) ? `unsupported opcode 0x${op.toString(16).padStart(2, "0")}` : `unknown opcode 0x${op.toString(16).padStart(2, "0")}`]);
    }
    for (const sub of simdHoles) cases.push([[0xfd, ...uleb(sub)], `unknown SIMD opcode 0xfd ${sub}`]);
    cases.push([[0xfd, ...uleb(0x114)], "unknown SIMD opcode 0xfd 276"], [[0xfc, 18], "unknown opcode 0xfc 18"]);
    for (const [op, message] of cases) {
      const bytes = moduleAround([0x00, ...op, 0x00, 0x00, 0x00, 0x0b]);
      const err = meterError(bytes);
      expect(err.message).toContain(message);
      expect(err.message).toContain("function 0");
      // The offset points at the opcode: right after the body's `unreachable`.
      expect(bytes.slice(err.offset - 1, err.offset + op.length)).toEqual(Uint8Array.from([0x00, ...op]));
      if (!refused.has(op[0]!)) expect({ op, valid: WebAssembly.validate(bytes) }).toEqual({ op, valid: false });
    }
  });

  test("names the proposal of an opcode it refuses", () => {
    expect(meterError(moduleAround([0xfe, 0x00, 0x00, 0x00, 0x0b])).message).toContain("threads (0xfe prefix)");
    expect(meterError(moduleAround([0x06, 0x40, 0x0b, 0x0b])).message).toContain("exception handling (try)");
    expect(meterError(moduleAround([0xfb, 0x00, 0x0b])).message).toContain("GC (0xfb prefix)");
  });
});

describe("meterModule on malformed input", () => {
  const types = section(1, vec([functype([], [])]));
  const funcs = section(3, vec([[0x00]]));
  const cases: [string, Uint8Array, RegExp][] = [
    ["not wasm", Uint8Array.of(0x7f, 0x45, 0x4c, 0x46, 1, 1, 1, 0), /missing the \\0asm magic number \(at byte offset 0x0\)/],
    ["too short", Uint8Array.of(0x00, 0x61, 0x73), /missing the \\0asm magic number/],
    ["a component", Uint8Array.of(0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00), /a component, not a core module/],
    ["section past the end", wasm([0x01, 0x05, 0x01]), /type section claims 5 bytes but only 1 remain \(at byte offset 0x8\)/],
    ["unknown section", wasm([0x0e, 0x00]), /unknown section id 14/],
    ["sections out of order", wasm(funcs, types), /type section is duplicated or out of order/],
    ["overlong LEB128", wasm([0x01, 0xff, 0xff, 0xff, 0xff, 0x7f]), /section size is not a valid u32 LEB128/],
    ["truncated LEB128", wasm([0x01, 0x80]), /unexpected end of input reading section size/],
    ["bodies and declarations disagree", wasm(types, funcs, section(10, vec([]))), /code section has 0 function bodies but the function section declares 1/],
    ["body without its end", wasm(types, funcs, section(10, vec([body([], [0x01])]))), /function 0 ends inside a block \(missing end\)/],
    ["bytes after the end", wasm(types, funcs, section(10, vec([body([], [0x0b, 0x01])]))), /function 0 has bytes after its final end/],
    ["constant too long", wasm(types, funcs, section(10, vec([body([], [0x42, ...new Array(10).fill(0x80), 0x00, 0x1a, 0x0b])]))), /i64 constant is longer than 10 LEB128 bytes/],
    ["body past the section", wasm(types, funcs, [0x0a, 0x03, 0x01, 0x09, 0x00]), /body of function 0 runs past the code section/],
    ["unknown local type", wasm(types, funcs, section(10, vec([body([[1, 0x40]], [0x0b])]))), /unsupported value type 0x40 in the locals of function 0/],
    ["memory64", wasm(section(5, vec([[0x04, 0x01]]))), /memory64 is not supported/],
  ];
  for (const [name, bytes, message] of cases) {
    test(`throws a MeterError naming the problem: ${name}`, () => {
      expect(() => meterModule(bytes)).toThrow(MeterError);
      expect(() => meterModule(bytes)).toThrow(message);
    });
  }

  test("rejects what is not a Uint8Array with a TypeError", () => {
    expect(() => meterModule([0, 0x61, 0x73, 0x6d] as unknown as Uint8Array)).toThrow(TypeError);
  });
});

describe("calibrateFuelPerMs", () => {
  test("measures a rate that stops a runaway loop within a few times its CPU budget", () => {
    const started = performance.now();
    const fuelPerMs = calibrateFuelPerMs();
    expect(performance.now() - started).toBeLessThan(100); // ~40 ms; slack for a busy machine
    expect(fuelPerMs).toBeGreaterThan(10_000);
    // (func (export "spin") (param $n i32) loop (br_if 0 (local.tee $n (i32.sub $n 1))) end): 2^31 iterations
    // stand in for forever, so that a broken meter fails this test rather than hanging it.
    const code = [0x03, 0x40, 0x20, 0x00, 0x41, 0x01, 0x6b, 0x22, 0x00, 0x0d, 0x00, 0x0b, 0x0b];
    const exports = instantiate(
      metered(wasm(section(1, vec([functype([I32], [])])), section(3, vec([[0x00]])), section(7, vec([[...str("spin"), 0x00, 0x00]])), section(10, vec([body([], code)])))),
    );
    // The best of a few runs: the first may run in the interpreter, and the machine may be busy.
    const budgetMs = 5;
    let ms = Infinity;
    for (let run = 0; run < 5; run++) {
      const t0 = performance.now();
      const { error, left } = runWith(exports, BigInt(Math.floor(budgetMs * fuelPerMs)), () => exports.spin(0x7fffffff));
      ms = Math.min(ms, performance.now() - t0);
      expect(error).toBeInstanceOf(WebAssembly.RuntimeError);
      expect(left).toBeLessThan(0n);
    }
    expect(ms).toBeLessThan(budgetMs * 4);
  });
});
