// Token-bucket arithmetic. Pure: every function takes the time (`now`, monotonic ms) as an argument.

/** Tokens in a bucket that held `tokens` at `updated`, refilled at `ratePerMs` up to `burst`, at `now`. */
export function refill(tokens: f64, updated: f64, now: f64, ratePerMs: f64, burst: f64): f64 {
  const elapsed = now - updated;
  // A clock that went backwards (it cannot, being monotonic) must never add tokens.
  if (elapsed <= 0) return tokens < burst ? tokens : burst;
  const t = tokens + elapsed * ratePerMs;
  return t < burst ? t : burst;
}

/** Whole seconds, rounded up, until a bucket at `tokens` holds `want` tokens; 0 when it already does. */
export function secondsUntil(tokens: f64, want: f64, ratePerMs: f64): i64 {
  if (tokens >= want) return 0;
  const s = Math.ceil((want - tokens) / ratePerMs / 1000);
  // Huge values (a rate of one per hour, a bucket of a billion) still fit; never answer 0 for a wait.
  return s < 1 ? 1 : <i64>s;
}
