// CPU budgets for filters: turning cpuBudgetMs into fuel for the meter (meter.ts), calibrated once.
//
// meter.ts rewrites each module so it pays fuel from an exported i64 global, `__mesh_fuel`, at every
// function entry and loop head, and traps when the global goes below zero; it also lowers the
// memory's maximum so memory.grow past memoryLimitMb fails. Fuel counts instructions, not time, so
// the host measures once, at startup, how much fuel this machine burns per millisecond:
// calibrateFuelPerMs() times three metered kernels (a memory loop, recursive calls, bulk copies)
// after the JIT has compiled them and keeps the slowest rate. Before every call the host sets the
// global to `fuelPerMs * cpuBudgetMs`. A runaway loop of any of those shapes therefore stops within
// about its budget on any machine; ordinary filter code, whose instructions are cheaper, gets a
// little less CPU time than the budget says, never more. Time inside host functions burns no fuel;
// guest.ts bounds it with a wall-clock check every few host calls.
//
// That rate is for optimised code. A runaway loop in a function's first call runs in the engine's
// baseline tier (V8's Liftoff cannot replace a running frame, so the whole call stays there), which
// burns fuel up to ten times slower: measured here, a 5 ms budget took ~60 ms on Deno. So the host
// also times a cold first call of a fresh module and takes the lower of the two rates: the budget is
// then an upper bound in every tier, and warm code simply gets more headroom than it needs (a
// header filter uses a few thousand fuel; 5 ms is millions).
import { FUEL_EXPORT, calibrateFuelPerMs, meterModule } from "./meter.ts";

export interface Metering {
  /** Fuel units that take at most about one millisecond on this machine, in any JIT tier. */
  readonly fuelPerMs: number;
  /** The optimised-code rate (meter.ts) and the cold first-call rate it was the lower of. */
  readonly warmFuelPerMs: number;
  readonly coldFuelPerMs: number;
  /** The module to compile: metered, with its memory capped at `maxMemoryPages`. */
  meter(bytes: Uint8Array, maxMemoryPages: number): Uint8Array;
  /** Fuel for a budget, as the BigInt the global takes. */
  fuelFor(budgetMs: number): bigint;
}

export const FUEL_GLOBAL = FUEL_EXPORT;

// (func $mix (param i32) (result i32) local.get 0 i32.const K i32.mul i32.const 7 i32.add)
// (func (export "work") (param $n i32) (result i32) (local $i i32) (local $acc i32)
//   (loop (local.set $acc (call $mix (i32.add (local.get $acc) (i32.load (i32.and (i32.shl (local.get $i) (i32.const 2)) (i32.const 4092))))))
//         (i32.store (i32.and (i32.shl (local.get $i) (i32.const 2)) (i32.const 4092)) (local.get $acc))
//         (br_if 0 (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (local.get $n))))
//   (local.get $acc))
// K (< 64) varies per round: engines cache compiled code by module bytes, and each round must be cold.
function coldKernel(k: number): Uint8Array {
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, // type (i32) -> i32
    0x03, 0x03, 0x02, 0x00, 0x00, // two functions
    0x05, 0x03, 0x01, 0x00, 0x01, // memory 1 page
    0x07, 0x08, 0x01, 0x04, 0x77, 0x6f, 0x72, 0x6b, 0x00, 0x01, // export "work"
    0x0a, 0x43, 0x02,
    0x0a, 0x00, 0x20, 0x00, 0x41, k & 0x3f, 0x6c, 0x41, 0x07, 0x6a, 0x0b,
    0x36, 0x01, 0x02, 0x7f,
    0x03, 0x40,
    0x20, 0x02, 0x20, 0x01, 0x41, 0x02, 0x74, 0x41, 0xfc, 0x1f, 0x71, 0x28, 0x02, 0x00, 0x6a, 0x10, 0x00, 0x21, 0x02,
    0x20, 0x01, 0x41, 0x02, 0x74, 0x41, 0xfc, 0x1f, 0x71, 0x20, 0x02, 0x36, 0x02, 0x00,
    0x20, 0x01, 0x41, 0x01, 0x6a, 0x22, 0x01, 0x20, 0x00, 0x49, 0x0d, 0x00,
    0x0b,
    0x20, 0x02, 0x0b,
  ]);
}

/** Fuel per ms of a fresh module's first call, median of a few rounds with a distinct module each. */
function coldFuelPerMs(): number {
  const full = 1n << 62n;
  const rates: number[] = [];
  let n = 100_000;
  for (let round = 0; rates.length < 5 && round < 40; round++) {
    const instance = new WebAssembly.Instance(new WebAssembly.Module(meterModule(coldKernel(1 + round)) as BufferSource), {});
    const fuel = instance.exports[FUEL_EXPORT] as WebAssembly.Global;
    fuel.value = full;
    const t = performance.now();
    (instance.exports.work as (n: number) => number)(n);
    const ms = performance.now() - t;
    if (ms < 1) {
      n *= 2;
      continue;
    }
    rates.push(Number(full - (fuel.value as bigint)) / ms);
  }
  if (rates.length === 0) return Infinity;
  rates.sort((a, b) => a - b);
  return rates[rates.length >> 1]!;
}

/**
 * The lowest rate the budget assumes. The slowest real code measured here runs about 5M fuel/ms once
 * compiled, but a calibration taken while the CPU is contended (a busy test run, a loaded host) can
 * come out far lower (0.2M/ms was seen), and a too-low rate starves legitimate filters: a JWT check
 * then "exceeds" a 5 ms budget. With this floor a runaway in compiled code still stops in well under
 * its budget; only a cold first call in a slow tier may overrun it.
 */
const MIN_FUEL_PER_MS = 2_000_000;

let metering: Metering | null = null;

/** The process's metering, calibrated on first use (~60 ms). */
export function getMetering(): Metering {
  if (metering) return metering;
  const warmFuelPerMs = calibrateFuelPerMs();
  const coldRate = coldFuelPerMs();
  const fuelPerMs = Math.max(MIN_FUEL_PER_MS, Math.min(warmFuelPerMs, coldRate));
  metering = {
    fuelPerMs,
    warmFuelPerMs,
    coldFuelPerMs: coldRate,
    meter: (bytes, maxMemoryPages) => meterModule(bytes, { maxMemoryPages }),
    fuelFor: (budgetMs) => BigInt(Math.max(1, Math.floor(budgetMs * fuelPerMs))),
  };
  return metering;
}
