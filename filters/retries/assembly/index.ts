// retries: sends a failed request again, with backoff, a retry budget and a per-try timeout.
// The decisions are in policy.ts; this file reads the config and connects them to the proxy.
import { Config, Counter, JsonValue, Outcome, Request, Response, monotonicMs, onConfigure, onRequest, onResponse, random, wantBody } from "@meshwasm/sdk";
import { Budget, Policy, RETRY_ON_NAMES, Verdict, decide } from "./policy";
export * from "@meshwasm/sdk/exports";

/** The proxy stops after this many attempts whatever a filter asks. */
const PROXY_MAX_ATTEMPTS: i64 = 10;

let policy = new Policy();
let budget = new Budget(policy.budgetPercent, policy.budgetMinPerSecond, policy.budgetWindowMs);

const retries = new Counter("retries_total", "Retries the retries filter asked the proxy for");
const budgetExhausted = new Counter("retry_budget_exhausted_total", "Failed attempts not retried because the retry budget was spent");

onConfigure((config: Config): string | null => {
  const next = new Policy();
  const err = readPolicy(config, next);
  if (err !== null) return err;
  policy = next;
  // Keep the counts across a reload unless the window itself changed.
  if (next.budgetWindowMs != budget.windowMs) budget = new Budget(next.budgetPercent, next.budgetMinPerSecond, next.budgetWindowMs);
  budget.percent = next.budgetPercent;
  budget.minPerSecond = next.budgetMinPerSecond;
  wantBody(next.maxBodyBytes);
  return null;
});

onRequest((req: Request): Outcome => {
  budget.recordRequest(monotonicMs());
  if (policy.attemptHeader.length > 0) req.headers.set(policy.attemptHeader, "1");
  if (policy.perTryTimeoutMs > 0) req.setPerTryTimeout(policy.perTryTimeoutMs);
  return Outcome.continue();
});

onResponse((res: Response): Outcome => {
  const status = res.status;
  // Fast path for the common case: the proxy's synthetic responses are always 502, 503 or 504, so
  // anything below 500 is a real answer and only a listed status code can make it retriable.
  if (status < 500 && policy.statusCodes.length == 0) return Outcome.continue();
  const upstreamError = status >= 502 && status <= 504 ? res.upstreamError : null;
  const req = res.request;
  const attempt = req.attempt;
  const d = decide(policy, budget, req.method, status, upstreamError, attempt, req.replayable, monotonicMs(), random());
  if (d.verdict == Verdict.BudgetExhausted) budgetExhausted.inc();
  if (d.verdict != Verdict.Retry) return Outcome.continue();
  retries.inc();
  if (policy.attemptHeader.length > 0) req.headers.set(policy.attemptHeader, (attempt + 1).toString());
  return Outcome.retry(d.delayMs);
});

// ---- config ----

function readPolicy(config: Config, p: Policy): string | null {
  const on = config.get("retryOn");
  if (on !== null) {
    if (!on.isArray()) return "retryOn: expected an array of " + RETRY_ON_NAMES.join(", ");
    let bits: i32 = 0;
    for (let i = 0; i < on.items.length; i++) {
      const item = on.items[i];
      const at = item.isString() ? RETRY_ON_NAMES.indexOf(item.str) : -1;
      if (at < 0) return "retryOn[" + i.toString() + "]: expected one of " + RETRY_ON_NAMES.join(", ");
      bits |= 1 << at;
    }
    p.retryOn = bits;
  }
  const codes = config.get("statusCodes");
  if (codes !== null) {
    if (!codes.isArray()) return "statusCodes: expected an array of HTTP status codes";
    for (let i = 0; i < codes.items.length; i++) {
      const c = codes.items[i];
      if (!isInt(c, 100, 599)) return "statusCodes[" + i.toString() + "]: expected an integer from 100 to 599";
      p.statusCodes.push(<i32>c.num);
    }
  }
  const wantsCodes = (p.retryOn & (1 << RETRY_ON_NAMES.indexOf("retriable-status-codes"))) != 0;
  if (wantsCodes && p.statusCodes.length == 0) return "statusCodes: required (non-empty) when retryOn has retriable-status-codes";
  if (!wantsCodes && p.statusCodes.length > 0) return "statusCodes: only used with retryOn retriable-status-codes";

  let err = readInt(config, "maxAttempts", 1, PROXY_MAX_ATTEMPTS);
  if (err !== null) return err;
  p.maxAttempts = <i32>config.getInt("maxAttempts", p.maxAttempts);
  err = readInt(config, "perTryTimeoutMs", 0, i32.MAX_VALUE);
  if (err !== null) return err;
  p.perTryTimeoutMs = <i32>config.getInt("perTryTimeoutMs", p.perTryTimeoutMs);
  err = readInt(config, "maxBodyBytes", 0, i32.MAX_VALUE);
  if (err !== null) return err;
  p.maxBodyBytes = <i32>config.getInt("maxBodyBytes", p.maxBodyBytes);

  const nonIdem = config.get("retryNonIdempotent");
  if (nonIdem !== null && !nonIdem.isBool()) return "retryNonIdempotent: expected true or false";
  p.retryNonIdempotent = config.getBool("retryNonIdempotent", false);

  const header = config.get("attemptHeader");
  if (header !== null) {
    if (!header.isString() || !isToken(header.str)) return 'attemptHeader: expected a header name, or "" for none';
    p.attemptHeader = header.str.toLowerCase();
  }

  const backoff = config.get("backoff");
  if (backoff !== null) {
    if (!backoff.isObject()) return "backoff: expected { baseMs, maxMs }";
    err = readInt(backoff, "baseMs", 0, 3_600_000, "backoff.");
    if (err !== null) return err;
    err = readInt(backoff, "maxMs", 0, 3_600_000, "backoff.");
    if (err !== null) return err;
    p.baseMs = <f64>backoff.getInt("baseMs", <i64>p.baseMs);
    p.maxMs = <f64>backoff.getInt("maxMs", backoff.has("baseMs") && !backoff.has("maxMs") ? <i64>p.baseMs * 10 : <i64>p.maxMs);
    if (p.maxMs < p.baseMs) return "backoff.maxMs: expected at least backoff.baseMs (" + (<i64>p.baseMs).toString() + ")";
  }

  const b = config.get("budget");
  if (b !== null) {
    if (!b.isObject()) return "budget: expected { percent, minRetriesPerSecond, windowMs }";
    const percent = b.get("percent");
    if (percent !== null && !(percent.isNumber() && percent.num >= 0 && percent.num <= 1000)) return "budget.percent: expected a number from 0 to 1000";
    const min = b.get("minRetriesPerSecond");
    if (min !== null && !(min.isNumber() && min.num >= 0)) return "budget.minRetriesPerSecond: expected a number >= 0";
    err = readInt(b, "windowMs", 100, 3_600_000, "budget.");
    if (err !== null) return err;
    p.budgetPercent = b.getNumber("percent", p.budgetPercent);
    p.budgetMinPerSecond = b.getNumber("minRetriesPerSecond", p.budgetMinPerSecond);
    p.budgetWindowMs = <f64>b.getInt("windowMs", <i64>p.budgetWindowMs);
  }
  return null;
}

function isInt(v: JsonValue, min: i64, max: i64): bool {
  return v.isNumber() && v.num == Math.floor(v.num) && v.num >= <f64>min && v.num <= <f64>max;
}

function readInt(obj: JsonValue, key: string, min: i64, max: i64, prefix: string = ""): string | null {
  const v = obj.get(key);
  if (v === null || isInt(v, min, max)) return null;
  return prefix + key + ": expected an integer from " + min.toString() + " to " + max.toString();
}

/** An HTTP field name (RFC 9110 token), or "". */
function isToken(s: string): bool {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const alnum = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
    if (!alnum && "!#$%&'*+-.^_`|~".indexOf(String.fromCharCode(c)) < 0) return false;
  }
  return true;
}
