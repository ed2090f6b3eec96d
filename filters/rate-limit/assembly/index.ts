// rate-limit: a token bucket per key (a header, the client address, the route or an auth claim);
// answers 429 with Retry-After and RateLimit-* headers when the key's bucket is empty.
//
// Exact within one proxy: the host runs one instance of this filter per route, and every call on one
// JS thread, so taking a token is never interleaved with another request's.
import {
  Config, Counter, Gauge, Header, JsonValue, Outcome, Request, Response,
  log, monotonicMs, onConfigure, onRequest, onResponse, quote, randomBytes,
} from "@meshwasm/sdk";
export * from "@meshwasm/sdk/exports";
import { refill, secondsUntil } from "./bucket";
import { hashString, sipKey } from "./siphash";
import { BucketTable } from "./table";

const KEY_ROUTE: i32 = 0;
const KEY_CLIENT: i32 = 1;
const KEY_HEADER: i32 = 2;

// Keys are stored as hashes: a request's key is SipHash-2-4 of its value under this instance's random
// key, with the low bit set. Even values are reserved, so no header value can pose as these two.
/** No key (the request lacks the header). */
const NO_KEY: u64 = 0;
/** The shared bucket of requests without a key (missingKey: shared). */
const UNKNOWN_KEY: u64 = 2;
/** The only key when keyed by route: each route has its own instance, so one bucket is the route's. */
const ROUTE_KEY: u64 = 4;
/** Full buckets dropped per request at most, so a request's cost stays bounded. */
const EXPIRE_PER_REQUEST = 4;

const UNITS = ["second", "minute", "hour"];
const UNIT_SECONDS: f64[] = [1, 60, 3600];

// The running config. Replaced whole by onConfigure once the new one is valid.
let ratePerMs: f64 = 1;
let burst: f64 = 1;
let burstText = "1";
let keyKind: i32 = KEY_ROUTE;
let keyHeader = "";
let missingShared = true;
let responseHeaders = true;
let keySpec = "";
let table = new BucketTable(1);
let reportedKeys: i32 = -1;

// A secret per instance: nobody can pick header values that collide.
const secret = randomBytes(16);
sipKey(load<u64>(secret.dataStart), load<u64>(secret.dataStart, 8));

const allowed = new Counter("rate_limit_allowed_total", "Requests rate-limit let through");
const limited = new Counter("rate_limit_limited_total", "Requests rate-limit answered with 429");
const unkeyed = new Counter("rate_limit_unkeyed_total", "Requests without the configured key (counted under one shared key, or let through)");
const evicted = new Counter("rate_limit_evicted_total", "Buckets dropped before they were full because maxKeys was reached (raise maxKeys if this grows)");
const keysGauge = new Gauge("rate_limit_keys", "Keys with a bucket in memory (at most maxKeys)");

const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

function isHeaderName(s: string): bool {
  if (s.length == 0) return false;
  for (let i = 0; i < s.length; i++) if (!TOKEN_CHARS.includes(s.charAt(i))) return false;
  return true;
}

/** A positive finite number member, NaN when missing; -1 when present but not a positive number. */
function positive(config: Config, name: string): f64 {
  const v = config.get(name);
  if (v === null) return NaN;
  if (!v.isNumber() || !(v.num > 0) || !isFinite(v.num)) return -1;
  return v.num;
}

// Parsed key settings: onConfigure reads them into these before deciding to accept.
let nextKeyKind: i32 = KEY_ROUTE;
let nextKeyHeader = "";

/** Reads `key`; returns an error message or null. */
function readKey(k: JsonValue | null): string | null {
  nextKeyKind = KEY_ROUTE;
  nextKeyHeader = "";
  if (k === null) return null;
  if (!k.isObject() || k.keys.length != 1) return 'key: expected exactly one of "header", "claim", "clientAddress", "route"';
  const name = k.keys[0];
  const v = k.items[0];
  if (name == "route" || name == "clientAddress") {
    if (!v.isBool() || !v.bool) return "key." + name + ": expected true";
    nextKeyKind = name == "route" ? KEY_ROUTE : KEY_CLIENT;
    return null;
  }
  if (name == "header" || name == "claim") {
    if (!v.isString() || !isHeaderName(v.str)) return "key." + name + ": expected a header name";
    nextKeyKind = KEY_HEADER;
    nextKeyHeader = v.str.toLowerCase();
    return null;
  }
  return 'key: unknown kind "' + name + '" (expected "header", "claim", "clientAddress" or "route")';
}

onConfigure((config: Config): string | null => {
  // Rate: exactly one of `rate` (tokens per second) or `requestsPerUnit` + `unit`.
  const rate = positive(config, "rate");
  const perUnit = positive(config, "requestsPerUnit");
  if (rate == -1) return "rate: expected a number above 0 (tokens per second)";
  if (perUnit == -1) return "requestsPerUnit: expected a number above 0";
  if (!isNaN(rate) && !isNaN(perUnit)) return 'rate, requestsPerUnit: give one of them, not both';
  if (isNaN(rate) && isNaN(perUnit)) return 'rate: required (tokens per second), or requestsPerUnit with unit';
  let perSecond = rate;
  let defaultBurst: f64 = 0;
  if (!isNaN(perUnit)) {
    const unit = config.getString("unit", "");
    const u = UNITS.indexOf(unit);
    if (u < 0) return 'unit: expected "second", "minute" or "hour" with requestsPerUnit';
    perSecond = perUnit / UNIT_SECONDS[u];
    defaultBurst = Math.ceil(perUnit);
  } else {
    if (config.has("unit")) return "unit: only with requestsPerUnit (rate is per second)";
    defaultBurst = Math.max(1, Math.ceil(rate));
  }
  const b = config.getNumber("burst", defaultBurst);
  if (!(b >= 1) || Math.floor(b) != b) return "burst: expected an integer of at least 1";
  const keyError = readKey(config.get("key"));
  if (keyError !== null) return keyError;
  const missing = config.getString("missingKey", "shared");
  if (missing != "shared" && missing != "allow") return 'missingKey: expected "shared" or "allow"';
  const maxKeys = config.getInt("maxKeys", 10000);
  if (maxKeys < 1 || maxKeys > 1000000) return "maxKeys: expected 1..1000000";

  // Valid: assign. Buckets survive a change of rate or burst (they refill towards the new burst);
  // a new key or a new cap starts from an empty table.
  ratePerMs = perSecond / 1000;
  burst = b;
  burstText = (<i64>b).toString();
  missingShared = missing == "shared";
  responseHeaders = config.getBool("responseHeaders", true);
  // Keyed by route there is one key: no table of maxKeys is needed.
  const capacity = nextKeyKind == KEY_ROUTE ? 1 : <i32>maxKeys;
  const spec = nextKeyKind.toString() + ":" + nextKeyHeader;
  if (spec != keySpec || table.capacity != capacity) {
    table = new BucketTable(capacity);
    // Reported by the next request, not here: a warm spare runs this too, and shares the gauge.
    reportedKeys = -1;
  }
  keySpec = spec;
  keyKind = nextKeyKind;
  keyHeader = nextKeyHeader;
  onResponse(responseHeaders ? addHeaders : null);
  log.info(
    "rate-limit: " + perSecond.toString() + "/s, burst " + burstText + ", key " +
      (keyKind == KEY_ROUTE ? "route" : keyKind == KEY_CLIENT ? "clientAddress" : "header " + keyHeader) +
      ", maxKeys " + maxKeys.toString(),
  );
  return null;
});

/** The request's key (hashed), or NO_KEY. */
function keyOf(req: Request): u64 {
  if (keyKind == KEY_ROUTE) return ROUTE_KEY;
  const value = keyKind == KEY_CLIENT ? req.clientAddress : req.headers.get(keyHeader);
  if (value === null || value.length == 0) return NO_KEY;
  return hashString(value) | 1;
}

function reportKeys(): void {
  const n = table.size;
  if (n != reportedKeys) {
    reportedKeys = n;
    keysGauge.set(<f64>n);
  }
}

/**
 * Drops least recently used buckets that have refilled to full: a full bucket is what a new key
 * gets, so forgetting it changes no answer. Stops at the first one that is not full yet.
 */
function expireFull(now: f64): void {
  for (let i = 0; i < EXPIRE_PER_REQUEST; i++) {
    const slot = table.oldest;
    if (slot < 0) return;
    if (refill(unchecked(table.tokens[slot]), unchecked(table.updated[slot]), now, ratePerMs, burst) < burst) return;
    table.remove(slot);
  }
}

onRequest((req: Request): Outcome => {
  const now = monotonicMs();
  expireFull(now);
  let key = keyOf(req);
  if (key == NO_KEY) {
    unkeyed.inc();
    if (!missingShared) {
      reportKeys();
      return Outcome.continue();
    }
    key = UNKNOWN_KEY;
  }
  let slot = table.find(key);
  let tokens: f64;
  if (slot < 0) {
    if (table.full) {
      table.remove(table.oldest);
      evicted.inc();
    }
    tokens = burst;
    slot = table.insert(key, tokens, now);
  } else {
    tokens = refill(unchecked(table.tokens[slot]), unchecked(table.updated[slot]), now, ratePerMs, burst);
    unchecked((table.updated[slot] = now));
    table.touch(slot);
  }
  reportKeys();
  if (tokens >= 1) {
    unchecked((table.tokens[slot] = tokens - 1));
    allowed.inc();
    return Outcome.continue();
  }
  unchecked((table.tokens[slot] = tokens));
  limited.inc();
  return tooManyRequests(req, tokens);
});

function tooManyRequests(req: Request, tokens: f64): Outcome {
  const retryAfter = secondsUntil(tokens, 1, ratePerMs).toString();
  const body =
    '{"error":"rate_limited","message":"rate limit exceeded; retry in ' + retryAfter + ' s","route":' +
    quote(req.routeName) + ',"requestId":' + quote(req.id) + "}";
  return Outcome.respond(429, body, [
    new Header("content-type", "application/json"),
    new Header("retry-after", retryAfter),
    new Header("ratelimit-limit", burstText),
    new Header("ratelimit-remaining", "0"),
    new Header("ratelimit-reset", secondsUntil(tokens, burst, ratePerMs).toString()),
  ]);
}

/**
 * Response phase (when `responseHeaders` is on): tells the client where its bucket stands now. An
 * upstream that sends its own RateLimit-Remaining keeps its headers.
 */
function addHeaders(res: Response): Outcome {
  const h = res.headers;
  if (h.has("ratelimit-remaining")) return Outcome.continue();
  let key = keyOf(res.request);
  if (key == NO_KEY) {
    if (!missingShared) return Outcome.continue();
    key = UNKNOWN_KEY;
  }
  const slot = table.find(key);
  // Evicted meanwhile: the key's next request gets a full bucket.
  const tokens = slot < 0 ? burst : refill(unchecked(table.tokens[slot]), unchecked(table.updated[slot]), monotonicMs(), ratePerMs, burst);
  h.set("ratelimit-limit", burstText);
  h.set("ratelimit-remaining", (<i64>Math.floor(tokens)).toString());
  h.set("ratelimit-reset", secondsUntil(tokens, burst, ratePerMs).toString());
  return Outcome.continue();
}
