// Clocks and randomness from the host.
import { mesh_monotonic_ms, mesh_now_ms, mesh_random_fill } from "./abi";

/** Wall-clock time, milliseconds since the Unix epoch. */
export function nowMs(): f64 {
  return mesh_now_ms();
}

/**
 * A monotonic clock in milliseconds (fractional); use it for durations and token buckets. The host
 * reads it once per event-loop callback (as Envoy's dispatcher time): within one phase it
 * need not move, so it measures time between phases and requests, not the filter's own work.
 */
export function monotonicMs(): f64 {
  return mesh_monotonic_ms();
}

/** Cryptographically random bytes. */
export function randomBytes(n: i32): Uint8Array {
  const out = new Uint8Array(n);
  if (n > 0) mesh_random_fill(out.dataStart, n);
  return out;
}

/** A uniformly random float in [0, 1). Fast: a generator in the filter, seeded by the host. */
export function random(): f64 {
  return Math.random();
}
