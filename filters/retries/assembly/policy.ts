// retries: the pure retry policy. Which attempts are retried, how long to wait, and the retry budget.
// No host calls here: the clock and the random number come in as arguments, so tests can reason
// about every branch through the harness with synthetic responses.

/** Bits of `retryOn`. */
export const ON_5XX: i32 = 1;
export const ON_GATEWAY_ERROR: i32 = 2;
export const ON_CONNECT_FAILURE: i32 = 4;
export const ON_RESET: i32 = 8;
export const ON_STATUS_CODES: i32 = 16;

/** The `retryOn` names, in bit order. */
export const RETRY_ON_NAMES: string[] = ["5xx", "gateway-error", "connect-failure", "reset", "retriable-status-codes"];

/** The filter's config after validation. Defaults are the ones documented in README.md. */
export class Policy {
  retryOn: i32 = ON_GATEWAY_ERROR;
  statusCodes: i32[] = [];
  /** Attempts in total, the first included. */
  maxAttempts: i32 = 2;
  /** 0: only the route timeout bounds an attempt. */
  perTryTimeoutMs: i32 = 0;
  baseMs: f64 = 25;
  maxMs: f64 = 250;
  retryNonIdempotent: bool = false;
  maxBodyBytes: i32 = 65536;
  /** "" sends no attempt header. */
  attemptHeader: string = "x-mesh-attempt";
  budgetPercent: f64 = 20;
  budgetMinPerSecond: f64 = 10;
  budgetWindowMs: f64 = 10000;
}

/** What decide() concluded, and why: the reasons other than Retry are what the filter counts or ignores. */
export enum Verdict {
  Retry,
  /** The response is a success, or a failure retryOn does not name. */
  NotRetriable,
  /** This was attempt maxAttempts. */
  AttemptsExhausted,
  /** POST, PATCH, CONNECT... and retryNonIdempotent is false. */
  NonIdempotent,
  /** The body was not buffered (too large, or of unknown length): the proxy cannot send it again. */
  NotReplayable,
  /** The retry budget is spent. */
  BudgetExhausted,
}

export class Decision {
  constructor(public verdict: Verdict, public delayMs: i32) {}
}

/** Whether a response (real, or the proxy's synthetic one for `upstreamError`) is a failure `retryOn` names. */
export function isRetriable(p: Policy, status: i32, upstreamError: string | null): bool {
  const on = p.retryOn;
  if ((on & ON_5XX) != 0 && status >= 500 && status <= 599) return true;
  if ((on & ON_GATEWAY_ERROR) != 0 && (status == 502 || status == 503 || status == 504)) return true;
  if (upstreamError !== null) {
    if ((on & ON_CONNECT_FAILURE) != 0 && (upstreamError == "upstream_refused" || upstreamError == "upstream_connect_timeout")) return true;
    if ((on & ON_RESET) != 0 && upstreamError == "upstream_reset") return true;
    return false; // status codes name what an upstream answered, not the proxy's stand-in
  }
  if ((on & ON_STATUS_CODES) != 0) {
    const codes = p.statusCodes;
    for (let i = 0; i < codes.length; i++) if (codes[i] == status) return true;
  }
  return false;
}

/** Methods that can be sent twice with the effect of once (RFC 9110 9.2.2). */
export function isIdempotent(method: string): bool {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" || method == "DELETE" || method == "TRACE";
}

/** Upper bound of the delay before retry number `retry` (1 = the first retry): min(maxMs, baseMs * 2^(retry-1)). */
export function backoffCeiling(p: Policy, retry: i32): f64 {
  const exp = Math.pow(2, <f64>(retry < 1 ? 0 : retry - 1));
  return Math.min(p.maxMs, p.baseMs * exp);
}

/** Full jitter: uniform in [0, backoffCeiling) for `rand` uniform in [0, 1). */
export function backoffDelay(p: Policy, retry: i32, rand: f64): i32 {
  return <i32>Math.floor(rand * backoffCeiling(p, retry));
}

const BUCKETS: i32 = 10;

/**
 * A retry budget over a sliding window (ten buckets of windowMs / 10): a retry is allowed while the
 * retries in the window, this one included, stay within max(percent % of the requests in the window,
 * minPerSecond x the window in seconds). So when every attempt fails, retries add at most `percent` %
 * to the load instead of multiplying it, as in Linkerd's and Envoy's budgets.
 */
export class Budget {
  private requests: StaticArray<f64> = new StaticArray<f64>(BUCKETS);
  private retries: StaticArray<f64> = new StaticArray<f64>(BUCKETS);
  /** Index (now / bucketMs) of the newest bucket; -1 before the first event. */
  private newest: i64 = -1;
  private bucketMs: f64;

  constructor(public percent: f64, public minPerSecond: f64, readonly windowMs: f64) {
    this.bucketMs = windowMs / <f64>BUCKETS;
  }

  /** Counts a request (a first attempt). */
  recordRequest(now: f64): void {
    const slot = this.advance(now);
    this.requests[slot] += 1;
  }

  /** Retries the budget allows in the current window. */
  allowance(now: f64): f64 {
    this.advance(now);
    return Math.max((this.percent / 100) * sum(this.requests), this.minPerSecond * (this.windowMs / 1000));
  }

  /** Retries counted in the current window. */
  spent(now: f64): f64 {
    this.advance(now);
    return sum(this.retries);
  }

  /** Takes one retry from the budget; false (and nothing taken) when that would exceed it. */
  tryRetry(now: f64): bool {
    if (this.spent(now) + 1 > this.allowance(now)) return false;
    this.retries[this.advance(now)] += 1;
    return true;
  }

  /** Moves the window to `now`, emptying buckets that fell out of it; returns the current bucket. */
  private advance(now: f64): i32 {
    const idx = <i64>Math.floor(now / this.bucketMs);
    if (this.newest < 0 || idx - this.newest >= <i64>BUCKETS) {
      for (let i = 0; i < BUCKETS; i++) {
        this.requests[i] = 0;
        this.retries[i] = 0;
      }
      this.newest = idx;
    } else {
      while (this.newest < idx) {
        this.newest++;
        const s = <i32>(this.newest % <i64>BUCKETS);
        this.requests[s] = 0;
        this.retries[s] = 0;
      }
    }
    return <i32>(this.newest % <i64>BUCKETS);
  }
}

function sum(a: StaticArray<f64>): f64 {
  let s: f64 = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s;
}

/**
 * The decision after attempt `attempt` answered `status` (or, with `upstreamError`, did not answer).
 * Checks run cheapest and most certain first; the budget is asked last, so it is only spent on
 * retries that would otherwise happen, and a Retry verdict has already taken its share.
 */
export function decide(
  p: Policy,
  budget: Budget,
  method: string,
  status: i32,
  upstreamError: string | null,
  attempt: i32,
  replayable: bool,
  now: f64,
  rand: f64,
): Decision {
  if (!isRetriable(p, status, upstreamError)) return new Decision(Verdict.NotRetriable, 0);
  if (attempt >= p.maxAttempts) return new Decision(Verdict.AttemptsExhausted, 0);
  if (!p.retryNonIdempotent && !isIdempotent(method)) return new Decision(Verdict.NonIdempotent, 0);
  if (!replayable) return new Decision(Verdict.NotReplayable, 0);
  if (!budget.tryRetry(now)) return new Decision(Verdict.BudgetExhausted, 0);
  return new Decision(Verdict.Retry, backoffDelay(p, attempt, rand));
}
