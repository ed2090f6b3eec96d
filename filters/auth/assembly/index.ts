// auth: lets through only requests with a valid JWT or API key, forwards chosen claims upstream,
// and answers 401/403 with an RFC 6750 challenge otherwise. See ../README.md for the config.
import {
  Config, Counter, Header, JsonValue, Outcome, RemoteJwks, Request,
  crypto, log, nowMs, onConfigure, onRequest, quote, utf8,
} from "@meshwasm/sdk";
import { ClaimRule, JwtSettings, Verdict, checkToken } from "./jwt";
import { Key, algId, jwkProblem, parseJwk, parseJwks } from "./keys";
export * from "@meshwasm/sdk/exports";

const DEFAULT_REFRESH_MS: i32 = 300_000;
const DEFAULT_MIN_REFRESH_MS: i32 = 10_000;
const DEFAULT_FETCH_TIMEOUT_MS: i32 = 5_000;

class PathRule {
  constructor(public path: string, public prefix: bool) {}
}

/** Where a token may be: a header (after a case-insensitive prefix such as "Bearer ") or a cookie. */
class TokenSource {
  constructor(public header: string, public prefix: string, public cookie: string) {}
}

class ForwardClaim {
  constructor(public claim: string, public header: string) {}
}

class ApiKey {
  constructor(public name: string, public digest: Uint8Array) {}
}

/** A JWKS URL the host fetches, and the keys of the version this instance last parsed. */
class Remote {
  version: i32 = 0;
  keys: Key[] = [];
  constructor(public src: RemoteJwks) {}
}

class JwtMode {
  settings: JwtSettings = new JwtSettings();
  sources: TokenSource[] = [];
  inline: Key[] = [];
  /** URLs and their (refresh, min refresh, timeout) triples; registered once the whole config is valid. */
  urls: string[] = [];
  timing: i32[] = [];
  remotes: Remote[] = [];
  forward: ForwardClaim[] = [];
  stripToken: bool = false;
}

class ApiKeyMode {
  header: string = "x-api-key";
  queryParam: string = "";
  keys: ApiKey[] = [];
  forwardName: string = "";
  strip: bool = false;
}

class Settings {
  realm: string = "meshwasm";
  exclude: PathRule[] = [];
  jwt: JwtMode | null = null;
  apiKeys: ApiKeyMode | null = null;
  /** Headers this filter sets upstream: removed from every request first, so a client cannot forge them. */
  owned: string[] = [];
}

let settings: Settings | null = null;
/** Inline keys followed by every remote's keys; rebuilt when a remote document changes. */
let keys: Key[] = [];

const allowed = new Counter("auth_allowed_total", "Requests auth let through with valid credentials");
const denied = new Counter("auth_denied_total", "Requests auth answered with 401 or 403");
const refreshes = new Counter("auth_jwks_refresh_requests_total", "JWKS refreshes auth asked the host for (unknown kid, no keys yet)");

// ---- config ----

let problem: string = "";

function fail<T>(message: string): T | null {
  problem = message;
  return null;
}

/** Strings of a "string or array of strings" member. */
function stringOrList(v: JsonValue | null): string[] {
  const out = new Array<string>();
  if (v === null) return out;
  if (v.isString()) out.push(v.str);
  else if (v.isArray()) for (let i = 0; i < v.items.length; i++) if (v.items[i].isString()) out.push(v.items[i].str);
  return out;
}

const TOKEN_PUNCT = "!#$%&'*+-.^_`|~";

function isToken(s: string): bool {
  if (s.length == 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || TOKEN_PUNCT.indexOf(String.fromCharCode(c)) >= 0;
    if (!ok) return false;
  }
  return true;
}

function readJwt(j: JsonValue): JwtMode | null {
  const m = new JwtMode();
  const s = m.settings;

  const from = j.get("from");
  if (from === null) m.sources.push(new TokenSource("authorization", "Bearer ", ""));
  else {
    for (let i = 0; i < from.items.length; i++) {
      const f = from.items[i];
      const at = "jwt.from[" + i.toString() + "]";
      if (f.has("cookie")) {
        const name = f.getString("cookie");
        if (!isToken(name)) return fail<JwtMode>(at + ".cookie: expected a cookie name");
        m.sources.push(new TokenSource("", "", name));
      } else {
        const header = f.getString("header").toLowerCase();
        if (!isToken(header)) return fail<JwtMode>(at + ".header: expected a header name");
        m.sources.push(new TokenSource(header, f.getString("prefix", header == "authorization" ? "Bearer " : ""), ""));
      }
    }
  }

  const algs = j.get("algorithms");
  if (algs !== null) {
    s.algorithms = 0;
    for (let i = 0; i < algs.items.length; i++) {
      const id = algs.items[i].isString() ? algId(algs.items[i].str) : 0;
      if (id == 0) return fail<JwtMode>("jwt.algorithms[" + i.toString() + "]: expected HS256, RS256 or ES256");
      s.algorithms |= 1 << id;
    }
  }

  const jwks = j.get("jwks");
  if (jwks !== null) {
    const list = jwks.getArray("keys");
    for (let i = 0; i < list.length; i++) {
      const key = parseJwk(list[i]);
      if (key !== null) m.inline.push(key);
      else if (jwkProblem().length > 0) return fail<JwtMode>("jwt.jwks.keys[" + i.toString() + "]: " + jwkProblem());
    }
  }
  const remote = j.getArray("remoteJwks");
  for (let i = 0; i < remote.length; i++) {
    const url = remote[i].getString("url");
    if (!url.startsWith("https://") && !url.startsWith("http://")) return fail<JwtMode>("jwt.remoteJwks[" + i.toString() + "].url: expected an http or https URL");
    m.urls.push(url);
    m.timing.push(<i32>remote[i].getInt("refreshIntervalMs", DEFAULT_REFRESH_MS));
    m.timing.push(<i32>remote[i].getInt("minRefreshIntervalMs", DEFAULT_MIN_REFRESH_MS));
    m.timing.push(<i32>remote[i].getInt("timeoutMs", DEFAULT_FETCH_TIMEOUT_MS));
  }
  if (jwks === null && remote.length == 0) return fail<JwtMode>("jwt: expected jwks (inline keys) or remoteJwks (URLs)");

  s.issuers = stringOrList(j.get("issuers"));
  s.audiences = stringOrList(j.get("audiences"));
  s.skewSeconds = <f64>j.getInt("clockSkewSeconds", 60);
  s.requireExpiration = j.getBool("requireExpiration", true);
  s.maxTokenBytes = <i32>j.getInt("maxTokenBytes", 8192);

  const required = j.getArray("requiredClaims");
  for (let i = 0; i < required.length; i++) {
    const r = required[i];
    if (r.isString()) s.required.push(new ClaimRule(r.str, null, null));
    else {
      const c = r.get("contains");
      s.required.push(new ClaimRule(r.getString("name"), r.get("equals"), c !== null && c.isString() ? c.str : null));
    }
  }

  const forward = j.get("forwardClaims");
  if (forward !== null) {
    for (let i = 0; i < forward.keys.length; i++) {
      const header = forward.items[i].str.toLowerCase();
      if (!isToken(header)) return fail<JwtMode>("jwt.forwardClaims." + forward.keys[i] + ": expected a header name");
      m.forward.push(new ForwardClaim(forward.keys[i], header));
    }
  }
  m.stripToken = j.getBool("stripToken", false);
  return m;
}

function readApiKeys(a: JsonValue): ApiKeyMode | null {
  const m = new ApiKeyMode();
  m.header = a.getString("header", "x-api-key").toLowerCase();
  m.queryParam = a.getString("queryParam", "");
  m.forwardName = a.getString("forwardNameHeader", "").toLowerCase();
  m.strip = a.getBool("strip", false);
  const names = new Array<string>();
  const values = new Array<string>();
  const list = a.get("keys");
  if (list === null) return fail<ApiKeyMode>("apiKeys.keys: required");
  if (list.isObject()) {
    for (let i = 0; i < list.keys.length; i++) {
      names.push(list.keys[i]);
      values.push(list.items[i].str);
    }
  } else {
    for (let i = 0; i < list.items.length; i++) {
      names.push(list.items[i].getString("name"));
      values.push(list.items[i].getString("key"));
    }
  }
  if (names.length == 0) return fail<ApiKeyMode>("apiKeys.keys: expected at least one key");
  for (let i = 0; i < names.length; i++) {
    if (values[i].length < 16) return fail<ApiKeyMode>("apiKeys.keys." + names[i] + ": expected a key of at least 16 characters");
    for (let k = 0; k < i; k++) {
      if (names[k] == names[i]) return fail<ApiKeyMode>("apiKeys.keys: duplicate name " + quote(names[i]));
      if (values[k] == values[i]) return fail<ApiKeyMode>("apiKeys.keys: " + quote(names[k]) + " and " + quote(names[i]) + " have the same key");
    }
    // Kept as digests: comparing two 32-byte digests takes the same time whatever the keys' lengths.
    m.keys.push(new ApiKey(names[i], crypto.sha256(utf8(values[i]))));
  }
  return m;
}

function readSettings(config: Config): Settings | null {
  const s = new Settings();
  s.realm = config.getString("realm", "meshwasm");
  for (let i = 0; i < s.realm.length; i++) {
    const c = s.realm.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c == 0x22 || c == 0x5c) return fail<Settings>('realm: expected printable ASCII without " or \\');
  }
  const exclude = config.getArray("excludePaths");
  for (let i = 0; i < exclude.length; i++) {
    const e = exclude[i];
    let rule: PathRule;
    if (e.isString()) rule = new PathRule(e.str, false);
    else if (e.has("prefix")) rule = new PathRule(e.getString("prefix"), true);
    else rule = new PathRule(e.getString("exact"), false);
    if (!rule.path.startsWith("/")) return fail<Settings>("excludePaths[" + i.toString() + ']: expected a path starting with "/"');
    s.exclude.push(rule);
  }
  const jwt = config.get("jwt");
  if (jwt !== null) {
    const m = readJwt(jwt);
    if (m === null) return null;
    s.jwt = m;
    for (let i = 0; i < m.forward.length; i++) s.owned.push(m.forward[i].header);
  }
  const api = config.get("apiKeys");
  if (api !== null) {
    const m = readApiKeys(api);
    if (m === null) return null;
    s.apiKeys = m;
    if (m.forwardName.length > 0) s.owned.push(m.forwardName);
  }
  if (s.jwt === null && s.apiKeys === null) return fail<Settings>("expected jwt, apiKeys or both");

  // A header we set upstream must not be one credentials are read from: the forgery guard would
  // remove the credentials before they are read.
  for (let i = 0; i < s.owned.length; i++) {
    const h = s.owned[i];
    if (h == "cookie" || h == "host") return fail<Settings>("forwarded header " + h + ": not allowed");
    const j = s.jwt;
    if (j !== null) for (let k = 0; k < j.sources.length; k++) if (j.sources[k].header == h) return fail<Settings>("forwarded header " + h + ": the token is read from it");
    const a = s.apiKeys;
    if (a !== null && a.header == h) return fail<Settings>("forwarded header " + h + ": the API key is read from it");
    for (let k = 0; k < i; k++) if (s.owned[k] == h) return fail<Settings>("forwarded header " + h + ": set for two things");
  }
  return s;
}

function findRemote(list: Remote[], id: i32): Remote | null {
  for (let i = 0; i < list.length; i++) if (list[i].src.id == id) return list[i];
  return null;
}

function rebuildKeys(s: Settings): void {
  const next = new Array<Key>();
  const j = s.jwt;
  if (j !== null) {
    for (let i = 0; i < j.inline.length; i++) next.push(j.inline[i]);
    for (let r = 0; r < j.remotes.length; r++) for (let i = 0; i < j.remotes[r].keys.length; i++) next.push(j.remotes[r].keys[i]);
  }
  keys = next;
}

onConfigure((config: Config): string | null => {
  const next = readSettings(config);
  if (next === null) return problem;
  const old = settings;
  let oldRemotes = new Array<Remote>();
  if (old !== null) {
    const oj = old.jwt;
    if (oj !== null) oldRemotes = oj.remotes;
  }
  // Register the URLs last, when everything else is valid. The host answers the same handle for a
  // URL this instance already has, so a reload keeps the cached keys.
  const j = next.jwt;
  if (j !== null) {
    for (let i = 0; i < j.urls.length; i++) {
      const src = RemoteJwks.register(j.urls[i], j.timing[i * 3], j.timing[i * 3 + 1], j.timing[i * 3 + 2]);
      if (src === null) {
        for (let k = 0; k < j.remotes.length; k++) if (findRemote(oldRemotes, j.remotes[k].src.id) === null) j.remotes[k].src.close();
        return "jwt.remoteJwks[" + i.toString() + "].url: " + RemoteJwks.lastError();
      }
      if (findRemote(j.remotes, src.id) !== null) continue; // listed twice
      const kept = findRemote(oldRemotes, src.id);
      j.remotes.push(kept !== null ? kept : new Remote(src));
    }
  }
  for (let k = 0; k < oldRemotes.length; k++) {
    if (j === null || findRemote(j.remotes, oldRemotes[k].src.id) === null) oldRemotes[k].src.close();
  }
  settings = next;
  rebuildKeys(next);
  let summary = "auth: ";
  if (j !== null) summary += j.inline.length.toString() + " inline keys, " + j.remotes.length.toString() + " JWKS URLs";
  const a = next.apiKeys;
  if (a !== null) summary += (j !== null ? ", " : "") + a.keys.length.toString() + " API keys";
  log.info(summary);
  return null;
});

// ---- requests ----

/** Picks up new documents from the host (one version call per URL) and re-parses them. */
function currentKeys(s: Settings, j: JwtMode): Key[] {
  let changed = false;
  for (let i = 0; i < j.remotes.length; i++) {
    const r = j.remotes[i];
    const v = r.src.version;
    if (v == r.version) continue;
    r.version = v;
    const doc = r.src.document();
    if (doc === null) continue;
    const problems = new Array<string>();
    const parsed = parseJwks(doc, problems);
    if (parsed === null) continue;
    for (let p = 0; p < problems.length; p++) log.warn("auth: JWKS " + r.src.url + " " + problems[p]);
    r.keys = parsed;
    changed = true;
  }
  if (changed) rebuildKeys(s);
  return keys;
}

function askForKeys(j: JwtMode): void {
  for (let i = 0; i < j.remotes.length; i++) if (j.remotes[i].src.requestRefresh()) refreshes.inc();
}

function excluded(s: Settings, path: string): bool {
  for (let i = 0; i < s.exclude.length; i++) {
    const r = s.exclude[i];
    if (r.prefix ? path.startsWith(r.path) : path == r.path) return true;
  }
  return false;
}

/**
 * Every Cookie field of the request as one list, or null when there is none. Several Cookie fields
 * are one list joined with "; " (RFC 9113 section 8.2.3; they are common after an HTTP/2 hop).
 */
function cookieHeader(req: Request): string | null {
  const first = req.headers.get("cookie");
  if (first === null) return null;
  const all = req.headers.list();
  let joined = "";
  let n = 0;
  for (let i = 0; i < all.length; i++) {
    if (all[i].name != "cookie") continue;
    joined = n == 0 ? all[i].value : joined + "; " + all[i].value;
    n++;
  }
  return joined;
}

/** The value of cookie `name` in a Cookie list, or null. A value in DQUOTEs (RFC 6265 4.1.1) loses them. */
function cookieValue(header: string, name: string): string | null {
  const parts = header.split(";");
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i].trim();
    const eq = p.indexOf("=");
    if (eq > 0 && p.substring(0, eq) == name) {
      const v = p.substring(eq + 1);
      return v.length >= 2 && v.charCodeAt(0) == 0x22 && v.charCodeAt(v.length - 1) == 0x22 ? v.substring(1, v.length - 1) : v;
    }
  }
  return null;
}

function withoutCookie(header: string, name: string): string {
  const parts = header.split(";");
  const keep = new Array<string>();
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i].trim();
    if (p.length == 0) continue;
    const eq = p.indexOf("=");
    if (eq > 0 && p.substring(0, eq) == name) continue;
    keep.push(p);
  }
  return keep.join("; ");
}

let tokenFrom: i32 = -1;

/** The token of the first source that has one, or null; tokenFrom says which source. */
function findToken(req: Request, j: JwtMode): string | null {
  for (let i = 0; i < j.sources.length; i++) {
    const src = j.sources[i];
    if (src.cookie.length > 0) {
      const cookies = cookieHeader(req);
      if (cookies === null) continue;
      const v = cookieValue(cookies, src.cookie);
      if (v === null) continue;
      tokenFrom = i;
      return v;
    }
    const v = req.headers.get(src.header);
    if (v === null) continue;
    const p = src.prefix.length;
    // The scheme is case-insensitive (RFC 9110 11.1): "bearer x" is a bearer token too.
    if (p > 0 && (v.length < p || v.substring(0, p).toLowerCase() != src.prefix.toLowerCase())) continue;
    tokenFrom = i;
    return v.substring(p).trim();
  }
  return null;
}

function removeToken(req: Request, j: JwtMode): void {
  const src = j.sources[tokenFrom];
  if (src.cookie.length == 0) {
    req.headers.remove(src.header);
    return;
  }
  const cookies = cookieHeader(req);
  if (cookies === null) return;
  // The other cookies stay, in one Cookie field (set replaces every Cookie field).
  const rest = withoutCookie(cookies, src.cookie);
  if (rest.length == 0) req.headers.remove("cookie");
  else req.headers.set("cookie", rest);
}

/** A claim as a header value: strings as they are, other JSON compact; null unless printable ASCII. */
function headerValue(v: JsonValue): string | null {
  const text = v.isString() ? v.str : v.toString();
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 && c != 0x09) || c > 0x7e) return null;
  }
  return text;
}

function challenge(scheme: string, realm: string, error: string, description: string): string {
  let v = scheme + ' realm="' + realm + '"';
  if (error.length > 0) v += ', error="' + error + '", error_description="' + description + '"';
  return v;
}

function answer(status: i32, challenges: string[], error: string, reason: string, message: string): Outcome {
  // No log line per refusal: under a flood of bad tokens it would only crowd out the useful ones.
  denied.inc();
  const headers: Header[] = [new Header("content-type", "application/json"), new Header("cache-control", "no-store")];
  for (let i = 0; i < challenges.length; i++) headers.push(new Header("www-authenticate", challenges[i]));
  const body = '{"error":' + quote(error) + ',"reason":' + quote(reason) + ',"message":' + quote(message) + "}";
  return Outcome.respond(status, body, headers);
}

/** No credentials at all: a bare challenge per scheme, no error code (RFC 6750 3.1). */
function missing(s: Settings): Outcome {
  const challenges = new Array<string>();
  if (s.jwt !== null) challenges.push(challenge("Bearer", s.realm, "", ""));
  if (s.apiKeys !== null) challenges.push(challenge("ApiKey", s.realm, "", ""));
  return answer(401, challenges, "missing_credentials", "missing_credentials", "the request carries no credentials");
}

function rejectToken(s: Settings, v: Verdict): Outcome {
  const error = v.status == 403 ? "insufficient_scope" : "invalid_token";
  return answer(v.status, [challenge("Bearer", s.realm, error, v.message)], error, v.reason, v.message);
}

function checkJwt(req: Request, s: Settings, j: JwtMode, token: string): Outcome {
  const v = checkToken(token, j.settings, currentKeys(s, j), nowMs() / 1000);
  if (v.reason == "unknown_kid" || v.reason == "no_keys") askForKeys(j);
  if (v.status != 0) return rejectToken(s, v);
  const claims = v.claims!;
  for (let i = 0; i < j.forward.length; i++) {
    const f = j.forward[i];
    const c = claims.get(f.claim);
    if (c === null || c.isNull()) continue;
    const value = headerValue(c);
    if (value !== null) req.headers.set(f.header, value);
  }
  if (j.stripToken) removeToken(req, j);
  allowed.inc();
  return Outcome.continue();
}

function findApiKey(req: Request, a: ApiKeyMode): string | null {
  const v = req.headers.get(a.header);
  if (v !== null) return v;
  if (a.queryParam.length == 0) return null;
  return req.queryParam(a.queryParam);
}

/** The query without any `name` parameter. */
function withoutParam(query: string, name: string): string {
  const parts = query.split("&");
  const keep = new Array<string>();
  for (let i = 0; i < parts.length; i++) {
    const eq = parts[i].indexOf("=");
    if ((eq < 0 ? parts[i] : parts[i].substring(0, eq)) == name) continue;
    keep.push(parts[i]);
  }
  return keep.join("&");
}

/** The presented key's digest, reused by every request (hashing allocates nothing). */
const digest = new Uint8Array(32);

function checkApiKey(req: Request, s: Settings, a: ApiKeyMode, presented: string): Outcome {
  // Constant time: one digest, then every configured digest compared in full and the match picked
  // without a branch, so neither where the first differing byte is nor which key matched shows.
  const d = digest;
  crypto.sha256TextInto(presented, d);
  let found: i32 = -1;
  for (let i = 0; i < a.keys.length; i++) {
    const k = a.keys[i].digest;
    let diff: u32 = 0;
    for (let b = 0; b < 32; b++) diff |= <u32>(unchecked(d[b]) ^ unchecked(k[b]));
    found = select<i32>(i, found, diff == 0);
  }
  if (found < 0) return answer(401, [challenge("ApiKey", s.realm, "", "")], "invalid_api_key", "invalid_api_key", "the API key is not valid");
  if (a.forwardName.length > 0) req.headers.set(a.forwardName, a.keys[found].name);
  if (a.strip) {
    req.headers.remove(a.header);
    if (a.queryParam.length > 0 && req.queryParam(a.queryParam) !== null) req.setQuery(withoutParam(req.query, a.queryParam));
  }
  allowed.inc();
  return Outcome.continue();
}

onRequest((req: Request): Outcome => {
  const s = settings;
  if (s === null) return Outcome.respond(500, "auth: not configured");
  // Headers we own upstream never come from the client: on every path, whatever the credentials.
  for (let i = 0; i < s.owned.length; i++) req.headers.remove(s.owned[i]);
  if (s.exclude.length > 0 && excluded(s, req.path)) return Outcome.continue();
  // A token, when the request has one, decides; otherwise an API key; otherwise 401.
  const j = s.jwt;
  if (j !== null) {
    const token = findToken(req, j);
    if (token !== null) return checkJwt(req, s, j, token);
  }
  const a = s.apiKeys;
  if (a !== null) {
    const key = findApiKey(req, a);
    if (key !== null) return checkApiKey(req, s, a, key);
  }
  return missing(s);
});
