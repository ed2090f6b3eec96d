// JWT checks (RFC 7519 / 7515 compact form): shape, header, key choice, signature, then claims.
// Takes the keys and the time as arguments, so the order of checks reads top to bottom.
import { JsonValue, base64url, parseJson, fromUtf8, utf8 } from "@meshwasm/sdk";
import { Key, algId } from "./keys";

/** A required claim: present (not null), and optionally equal to a JSON value or containing a word. */
export class ClaimRule {
  constructor(public name: string, public equals: JsonValue | null, public contains: string | null) {}
}

export class JwtSettings {
  /** Bit (1 << alg) for every accepted algorithm. */
  algorithms: i32 = (1 << 1) | (1 << 2) | (1 << 3);
  issuers: string[] = [];
  audiences: string[] = [];
  skewSeconds: f64 = 60;
  requireExpiration: bool = true;
  maxTokenBytes: i32 = 8192;
  required: ClaimRule[] = [];
}

/** The outcome of a check. `status` 0 = valid; 401 invalid token; 403 valid but lacks a required claim. */
export class Verdict {
  constructor(
    public status: i32,
    /** Stable code for the JSON body and logs: malformed, expired, unknown_kid... */
    public reason: string,
    /** Human text for error_description: fixed strings only, never token content (no quotes to escape). */
    public message: string,
    public claims: JsonValue | null = null,
  ) {}
}

function invalid(reason: string, message: string): Verdict {
  return new Verdict(401, reason, message);
}

function b64value(c: i32): i32 {
  if (c >= 0x41 && c <= 0x5a) return c - 0x41;
  if (c >= 0x61 && c <= 0x7a) return c - 0x61 + 26;
  if (c >= 0x30 && c <= 0x39) return c - 0x30 + 52;
  if (c == 0x2d) return 62;
  if (c == 0x5f) return 63;
  return -1;
}

/**
 * The dot count of a token made only of base64url characters and dots, or -1 when some other
 * character is there (padding, "+" or "/", spaces, a second token joined with ", ").
 */
function dotsOf(token: string): i32 {
  let dots = 0;
  for (let i = 0; i < token.length; i++) {
    const c = token.charCodeAt(i);
    if (c == 0x2e) dots++;
    else if (b64value(c) < 0) return -1;
  }
  return dots;
}

/**
 * Strict base64url: unpadded and canonical (the unused low bits of the last character are zero),
 * so one signature has one spelling. Characters were checked by dotsOf.
 */
function decodeStrict(s: string): Uint8Array | null {
  const rest = s.length & 3;
  if (rest == 1) return null;
  if (rest != 0) {
    const last = b64value(s.charCodeAt(s.length - 1));
    if (rest == 2 && (last & 15) != 0) return null;
    if (rest == 3 && (last & 3) != 0) return null;
  }
  return base64url.decode(s);
}

function jsonObject(segment: string): JsonValue | null {
  const bytes = decodeStrict(segment);
  if (bytes === null) return null;
  const v = parseJson(fromUtf8(bytes));
  if (v === null || !v.isObject()) return null;
  // A repeated member ({"alg":"none","alg":"HS256"}) is refused: RFC 7515 allows taking the last
  // one, but an upstream that parses the token again may take the first (section 4 and 5.2).
  // One pass with a set: the token is the client's, so a pairwise check would let ~700 short members
  // in an 8 KiB token spend the filter's CPU budget before the signature is even looked at.
  const keys = v.keys;
  if (keys.length > 1) {
    const seen = new Set<string>();
    for (let i = 0; i < keys.length; i++) {
      if (seen.has(keys[i])) return null;
      seen.add(keys[i]);
    }
  }
  return v;
}

/** A NumericDate member: absent (null), a finite number, or wrong (NaN returned via `bad`). */
let badNumber = false;
function numericDate(claims: JsonValue, name: string): f64 {
  badNumber = false;
  const v = claims.get(name);
  if (v === null) return NaN;
  if (!v.isNumber() || !isFinite(v.num)) {
    badNumber = true;
    return NaN;
  }
  return v.num;
}

/** The words of a claim for `contains`: the strings of an array, or the space-separated parts of a string (OAuth scope). */
function containsWord(v: JsonValue, word: string): bool {
  if (v.isArray()) {
    for (let i = 0; i < v.items.length; i++) if (v.items[i].isString() && v.items[i].str == word) return true;
    return false;
  }
  if (v.isString()) {
    const parts = v.str.split(" ");
    for (let i = 0; i < parts.length; i++) if (parts[i] == word) return true;
  }
  return false;
}

/** How a token chose its key; the caller asks the key host for a refresh on unknown_kid and no_keys. */
export function checkToken(token: string, s: JwtSettings, keys: Key[], nowSeconds: f64): Verdict {
  // 1. Size and shape, before anything is decoded.
  if (token.length > s.maxTokenBytes) return invalid("token_too_large", "the token is larger than the accepted size");
  const dots = dotsOf(token);
  if (dots < 0) return invalid("malformed", "the token has characters outside base64url");
  if (dots == 4) return invalid("malformed", "encrypted tokens (JWE) are not accepted");
  if (dots != 2) return invalid("malformed", "a token has three dot-separated parts");
  const d1 = token.indexOf(".");
  const d2 = token.indexOf(".", d1 + 1);
  if (d1 == 0 || d2 == d1 + 1) return invalid("malformed", "the token has an empty header or payload");
  if (d2 == token.length - 1) return invalid("malformed", "the token has no signature");

  // 2. Header: a JSON object with an algorithm we accept, no extensions we do not know. It is read
  //    before the signature can be checked, so it may be at most half the token (4096 chars by
  //    default: room for an x5c certificate, not for a made-up one that spends the CPU budget).
  if (d1 > s.maxTokenBytes >> 1) return invalid("malformed", "the token header is larger than a JOSE header needs to be");
  const header = jsonObject(token.substring(0, d1));
  if (header === null) return invalid("malformed", "the token header is not a base64url JSON object");
  const algValue = header.get("alg");
  if (algValue === null || !algValue.isString()) return invalid("malformed", "the token header has no alg");
  const algText = algValue.str;
  if (algText.toLowerCase() == "none") return invalid("alg_not_allowed", "unsigned tokens (alg none) are not accepted");
  const alg = algId(algText);
  if (alg == 0 || (s.algorithms & (1 << alg)) == 0) return invalid("alg_not_allowed", "the token algorithm is not accepted");
  if (header.has("crit")) return invalid("malformed", "the token has critical header parameters this filter does not understand");
  const kidValue = header.get("kid");
  if (kidValue !== null && !kidValue.isString()) return invalid("malformed", "the token kid is not a string");

  // 3. Signature decode. The payload is read only once the signature holds (step 5): until then
  //    it is anybody's bytes, and parsing a hostile one is the costliest thing this filter does.
  const sig = decodeStrict(token.substring(d2 + 1));
  if (sig === null) return invalid("malformed", "the token signature is not base64url");

  // 4. The key: by kid; without a kid only when there is exactly one key. The key's type decides
  //    which algorithm it may check, never the token (no RSA key as an HMAC secret).
  if (keys.length == 0) return invalid("no_keys", "no signing keys are available yet");
  const input = utf8(token.substring(0, d2));
  let named = false;
  let fitting = false;
  let verified = false;
  if (kidValue !== null) {
    const kid = kidValue.str;
    for (let i = 0; i < keys.length && !verified; i++) {
      const k = keys[i];
      const kkid = k.kid;
      if (kkid === null || kkid != kid) continue;
      named = true;
      if (!k.fits(alg)) continue;
      fitting = true;
      verified = k.verify(alg, input, sig);
    }
    if (!named) return invalid("unknown_kid", "no key has the token kid");
  } else {
    if (keys.length != 1) return invalid("missing_kid", "the token has no kid and there are several keys");
    named = true;
    if (keys[0].fits(alg)) {
      fitting = true;
      verified = keys[0].verify(alg, input, sig);
    }
  }
  if (!fitting) return invalid("alg_mismatch", "the key does not fit the token algorithm");
  if (!verified) return invalid("bad_signature", "the token signature is invalid");

  // 5. Claims of a token whose signature is good.
  const claims = jsonObject(token.substring(d1 + 1, d2));
  if (claims === null) return invalid("malformed", "the token payload is not a base64url JSON object");
  const exp = numericDate(claims, "exp");
  if (badNumber) return invalid("malformed", "exp is not a number");
  const nbf = numericDate(claims, "nbf");
  if (badNumber) return invalid("malformed", "nbf is not a number");
  numericDate(claims, "iat");
  if (badNumber) return invalid("malformed", "iat is not a number");
  if (isNaN(exp) && s.requireExpiration) return invalid("missing_exp", "the token has no exp");
  if (!isNaN(exp) && nowSeconds >= exp + s.skewSeconds) return invalid("expired", "the token has expired");
  if (!isNaN(nbf) && nowSeconds + s.skewSeconds < nbf) return invalid("not_yet_valid", "the token is not valid yet");
  if (s.issuers.length > 0) {
    const iss = claims.get("iss");
    if (iss === null || !iss.isString() || !s.issuers.includes(iss.str)) return invalid("wrong_issuer", "the token issuer is not accepted");
  }
  if (s.audiences.length > 0) {
    const aud = claims.get("aud");
    let ok = false;
    if (aud !== null && aud.isString()) ok = s.audiences.includes(aud.str);
    else if (aud !== null && aud.isArray()) {
      for (let i = 0; i < aud.items.length; i++) {
        const a = aud.items[i];
        if (!a.isString()) return invalid("malformed", "aud is not a string or an array of strings");
        if (s.audiences.includes(a.str)) ok = true;
      }
    } else if (aud !== null) return invalid("malformed", "aud is not a string or an array of strings");
    if (!ok) return invalid("wrong_audience", "the token audience is not accepted");
  }
  for (let i = 0; i < s.required.length; i++) {
    const rule = s.required[i];
    const v = claims.get(rule.name);
    if (v === null || v.isNull()) return new Verdict(403, "missing_claim", "the token lacks a required claim");
    const equals = rule.equals;
    if (equals !== null && !v.equals(equals)) return new Verdict(403, "claim_mismatch", "a required claim has another value");
    const word = rule.contains;
    if (word !== null && !containsWord(v, word)) return new Verdict(403, "claim_mismatch", "a required claim lacks a required value");
  }
  return new Verdict(0, "ok", "", claims);
}
