// Small pure helpers for turning repeated samples into the figures the report shows.

/** Median of the finite numbers in `xs`, or null when there are none. */
export function median(xs: Array<number | null | undefined>): number | null {
  const v = xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** `xs` rotated left by `n`: round r starts with a different scenario, so none always runs first. */
export function rotate<T>(xs: T[], n: number): T[] {
  if (xs.length === 0) return xs;
  const k = ((n % xs.length) + xs.length) % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/** Percentile (0-100) by nearest rank of already-collected samples; null when empty. */
export function percentile(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))];
}
