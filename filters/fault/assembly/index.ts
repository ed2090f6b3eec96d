// fault: injects delays and aborts into a route's requests, by percentage or (when the config allows
// it) by request header, to test how callers cope with a slow or failing service.
import { Config, Counter, Header, JsonValue, Outcome, Request, log, onConfigure, onRequest, random } from "@meshwasm/sdk";
export * from "@meshwasm/sdk/exports";

const MAX_MS: f64 = 3600000;

// The running config, replaced whole once a new one is valid.
let delayPercent: f64 = 0;
let delayMs: i32 = 0;
let abortPercent: f64 = 0;
let abortStatus: i32 = 503;
let abortBody: string | null = null;
let abortContentType = "application/json";
let headerOverrides = false;
let delayHeader = "x-mesh-fault-delay-ms";
let abortHeader = "x-mesh-fault-abort";
let maxDelayMs: i32 = 10000;
let delayedRequestHeader = "";

const delays = new Counter("fault_delays_total", "Requests the fault filter delayed");
const aborts = new Counter("fault_aborts_total", "Requests the fault filter aborted");
const badHeaders = new Counter("fault_header_rejected_total", "Fault request headers ignored because their value was invalid");

const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

function isHeaderName(s: string): bool {
  if (s.length == 0) return false;
  for (let i = 0; i < s.length; i++) if (!TOKEN_CHARS.includes(s.charAt(i))) return false;
  return true;
}

function isPercent(v: f64): bool {
  return v >= 0 && v <= 100;
}

/** A non-negative integer of at most 9 digits, or -1. */
function parseDigits(s: string): i32 {
  if (s.length == 0 || s.length > 9) return -1;
  let n: i32 = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/** The member `name` of `obj` as a header name (lower-cased), `fallback` when absent, "" when invalid. */
function headerName(obj: JsonValue | null, name: string, fallback: string): string {
  if (obj === null) return fallback;
  const v = obj.get(name);
  if (v === null) return fallback;
  return v.isString() && isHeaderName(v.str) ? v.str.toLowerCase() : "";
}

onConfigure((config: Config): string | null => {
  const delay = config.get("delay");
  const abort = config.get("abort");
  if (delay !== null && !delay.isObject()) return "delay: expected an object { percent, ms }";
  if (abort !== null && !abort.isObject()) return "abort: expected an object { percent, status, body }";
  // A section without `percent` applies to every request.
  const dp = delay === null ? 0 : delay.getNumber("percent", 100);
  const dms = delay === null ? 0 : delay.getNumber("ms", -1);
  const ap = abort === null ? 0 : abort.getNumber("percent", 100);
  const status = abort === null ? 503 : abort.getNumber("status", 503);
  if (!isPercent(dp)) return "delay.percent: expected 0..100";
  if (delay !== null && !(dms >= 0 && dms <= MAX_MS && Math.floor(dms) == dms)) return "delay.ms: expected an integer 0..3600000";
  if (!isPercent(ap)) return "abort.percent: expected 0..100";
  if (!(status >= 200 && status <= 599 && Math.floor(status) == status)) return "abort.status: expected an integer 200..599";
  // One request draws one number: [0, abort) aborts, [abort, abort + delay) delays. So each share is
  // exactly what is configured, and no request can be picked for both (a filter answers or delays,
  // not both; chain two fault filters for delayed aborts).
  if (dp + ap > 100) return "delay.percent + abort.percent: expected at most 100 (a request is delayed or aborted, not both; for delayed aborts list two fault filters, the delay first)";
  const headers = config.get("headers");
  if (headers !== null && !headers.isObject()) return "headers: expected an object { delay, abort } of header names";
  const dh = headerName(headers, "delay", "x-mesh-fault-delay-ms");
  const ah = headerName(headers, "abort", "x-mesh-fault-abort");
  if (dh.length == 0) return "headers.delay: expected a header name";
  if (ah.length == 0) return "headers.abort: expected a header name";
  const max = config.getNumber("maxDelayMs", 10000);
  if (!(max >= 0 && max <= MAX_MS && Math.floor(max) == max)) return "maxDelayMs: expected an integer 0..3600000";
  const mark = headerName(config, "delayedRequestHeader", "-");
  if (mark.length == 0) return "delayedRequestHeader: expected a header name";
  let body: string | null = null;
  let contentType = "application/json";
  if (abort !== null) {
    const b = abort.get("body");
    if (b !== null && !b.isString()) return "abort.body: expected a string";
    if (b !== null) {
      body = b.str;
      contentType = "text/plain; charset=utf-8";
    }
    const ct = abort.get("contentType");
    if (ct !== null && !(ct.isString() && ct.str.length > 0)) return "abort.contentType: expected a string";
    if (ct !== null) contentType = ct.str;
  }

  delayPercent = dp;
  delayMs = <i32>dms;
  abortPercent = ap;
  abortStatus = <i32>status;
  abortBody = body;
  abortContentType = contentType;
  headerOverrides = config.getBool("allowHeaderOverrides", false);
  delayHeader = dh;
  abortHeader = ah;
  maxDelayMs = <i32>max;
  delayedRequestHeader = mark == "-" ? "" : mark;
  log.info(
    "fault: delay " + dp.toString() + "% x " + delayMs.toString() + " ms, abort " + ap.toString() + "% with " +
      abortStatus.toString() + (headerOverrides ? ", header overrides on" : ""),
  );
  return null;
});

function abortWith(status: i32): Outcome {
  aborts.inc();
  const body = abortBody !== null ? abortBody! : '{"error":"fault_injected","fault":"abort","status":' + status.toString() + "}";
  return Outcome.respond(status, body, [new Header("content-type", abortContentType), new Header("x-mesh-fault", "abort")]);
}

function delayBy(req: Request, ms: i32): Outcome {
  delays.inc();
  if (delayedRequestHeader.length > 0) req.headers.set(delayedRequestHeader, ms.toString());
  return Outcome.delay(ms);
}

/** A fault the request asks for by header, or null. Invalid values are counted and ignored. */
function requested(req: Request): Outcome | null {
  const a = req.headers.get(abortHeader);
  if (a !== null) {
    const status = parseDigits(a);
    if (status >= 200 && status <= 599) return abortWith(status);
    badHeaders.inc();
  }
  const d = req.headers.get(delayHeader);
  if (d !== null) {
    const ms = parseDigits(d);
    if (ms > 0) return delayBy(req, ms < maxDelayMs ? ms : maxDelayMs);
    if (ms < 0) badHeaders.inc();
  }
  return null;
}

onRequest((req: Request): Outcome => {
  if (headerOverrides) {
    const out = requested(req);
    if (out !== null) return out;
  }
  if (abortPercent == 0 && delayPercent == 0) return Outcome.continue();
  // random() is in [0, 1): a percentage of 100 always hits, 0 never does.
  const draw = random() * 100;
  if (draw < abortPercent) return abortWith(abortStatus);
  if (draw < abortPercent + delayPercent) return delayBy(req, delayMs);
  return Outcome.continue();
});
