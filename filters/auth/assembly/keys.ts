// Verification keys: JWKs parsed once (inline at configure time, remote when the host's document
// changes), and the rules that decide which key may check which algorithm.
import { JsonValue, PublicKey, SigAlg, base64url, crypto, parseJson, quote } from "@meshwasm/sdk";

export const ALG_HS256: i32 = 1;
export const ALG_RS256: i32 = 2;
export const ALG_ES256: i32 = 3;

export const KTY_OCT: i32 = 1;
export const KTY_RSA: i32 = 2;
export const KTY_EC: i32 = 3;

/** RFC 7518 3.2: an HS256 key is at least as long as the hash. */
const MIN_HMAC_KEY_BYTES = 32;
/** RS256 keys under 2048 bits are refused, as jose and the browsers do. */
const MIN_RSA_MODULUS_BYTES = 256;

/** 0 for an algorithm name we do not implement. "none" is never one. */
export function algId(name: string): i32 {
  if (name == "HS256") return ALG_HS256;
  if (name == "RS256") return ALG_RS256;
  if (name == "ES256") return ALG_ES256;
  return 0;
}

export function algName(alg: i32): string {
  if (alg == ALG_HS256) return "HS256";
  if (alg == ALG_RS256) return "RS256";
  if (alg == ALG_ES256) return "ES256";
  return "?";
}

export class Key {
  kid: string | null = null;
  kty: i32 = 0;
  /** Algorithm the JWK pins with its `alg` member; 0 when it does not. */
  alg: i32 = 0;
  secret: Uint8Array | null = null;
  pub: PublicKey | null = null;

  /**
   * Whether this key may check a token signed with `alg`. The key type decides, never the token:
   * HS256 only with `kty: oct`, RS256 only with RSA, ES256 only with EC P-256, and a key that names
   * its `alg` only for that one. So an RSA public key can never be used as an HMAC secret.
   */
  fits(alg: i32): bool {
    if (this.alg != 0 && this.alg != alg) return false;
    if (alg == ALG_HS256) return this.kty == KTY_OCT;
    if (alg == ALG_RS256) return this.kty == KTY_RSA;
    if (alg == ALG_ES256) return this.kty == KTY_EC;
    return false;
  }

  /** True only for a good signature by this key. Call fits() first. */
  verify(alg: i32, input: Uint8Array, sig: Uint8Array): bool {
    if (alg == ALG_HS256) {
      const secret = this.secret;
      if (secret === null || sig.length != 32) return false;
      return crypto.timingSafeEqual(crypto.hmacSha256(secret, input), sig);
    }
    const pub = this.pub;
    if (pub === null) return false;
    if (alg == ALG_RS256) return pub.verify(SigAlg.RS256, input, sig);
    if (alg == ALG_ES256) return pub.verify(SigAlg.ES256, input, sig);
    return false;
  }
}

let jwkError: string = "";

/** Why the last parseJwk returned null; "" when the key was skipped on purpose (not a signing key). */
export function jwkProblem(): string {
  return jwkError;
}

function stringMember(k: JsonValue, name: string): string | null {
  const v = k.get(name);
  return v !== null && v.isString() ? v.str : null;
}

/** Bytes of a base64url member, without leading zero bytes for integers (RSA n). */
function b64Member(k: JsonValue, name: string): Uint8Array | null {
  const s = stringMember(k, name);
  if (s === null || s.length == 0) return null;
  return base64url.decode(s);
}

/**
 * One JWK as a verification key, or null with jwkError saying why ("" = skipped: an encryption key
 * or one whose key_ops exclude verify).
 */
export function parseJwk(k: JsonValue): Key | null {
  jwkError = "";
  if (!k.isObject()) {
    jwkError = "expected an object";
    return null;
  }
  const use = k.get("use");
  if (use !== null && (!use.isString() || use.str != "sig")) return null;
  const ops = k.get("key_ops");
  if (ops !== null) {
    let verify = false;
    if (ops.isArray()) for (let i = 0; i < ops.items.length; i++) if (ops.items[i].isString() && ops.items[i].str == "verify") verify = true;
    if (!verify) return null;
  }
  const key = new Key();
  const kid = k.get("kid");
  if (kid !== null) {
    if (!kid.isString()) {
      jwkError = "kid: expected a string";
      return null;
    }
    key.kid = kid.str;
  }
  const alg = k.get("alg");
  if (alg !== null) {
    if (!alg.isString() || algId(alg.str) == 0) {
      jwkError = "alg: expected HS256, RS256 or ES256";
      return null;
    }
    key.alg = algId(alg.str);
  }
  const kty = stringMember(k, "kty");
  if (kty == "oct") {
    key.kty = KTY_OCT;
    const secret = b64Member(k, "k");
    if (secret === null) {
      jwkError = "k: expected the base64url secret";
      return null;
    }
    if (secret.length < MIN_HMAC_KEY_BYTES) {
      jwkError = "k: an HS256 secret must be at least 32 bytes";
      return null;
    }
    key.secret = secret;
  } else if (kty == "RSA") {
    key.kty = KTY_RSA;
    const n = b64Member(k, "n");
    if (n === null || stringMember(k, "e") === null) {
      jwkError = "n, e: expected the base64url modulus and exponent";
      return null;
    }
    let bytes = n.length;
    for (let i = 0; i < n.length && n[i] == 0; i++) bytes--;
    if (bytes < MIN_RSA_MODULUS_BYTES) {
      jwkError = "n: RSA keys must have at least 2048 bits";
      return null;
    }
    const pub = PublicKey.fromJwk('{"kty":"RSA","n":' + quote(stringMember(k, "n")!) + ',"e":' + quote(stringMember(k, "e")!) + "}");
    if (pub === null) {
      jwkError = PublicKey.lastError();
      return null;
    }
    key.pub = pub;
  } else if (kty == "EC") {
    key.kty = KTY_EC;
    if (stringMember(k, "crv") != "P-256") {
      jwkError = "crv: only P-256 is supported";
      return null;
    }
    const x = stringMember(k, "x");
    const y = stringMember(k, "y");
    if (x === null || y === null) {
      jwkError = "x, y: expected the base64url coordinates";
      return null;
    }
    const pub = PublicKey.fromJwk('{"kty":"EC","crv":"P-256","x":' + quote(x) + ',"y":' + quote(y) + "}");
    if (pub === null) {
      jwkError = PublicKey.lastError();
      return null;
    }
    key.pub = pub;
  } else {
    jwkError = "kty: expected oct, RSA or EC";
    return null;
  }
  if (key.alg != 0 && !key.fits(key.alg)) {
    jwkError = "alg " + algName(key.alg) + " does not fit kty " + kty!;
    return null;
  }
  return key;
}

/**
 * Keys read from one remote document. Parsing runs inside a request's CPU budget, and real key sets
 * hold a handful of keys, so a document with more is cut here rather than failing the filter.
 */
export const MAX_REMOTE_KEYS = 32;

/** The usable keys of a JWKS document; what was left out goes to `problems`. Null when it is not a JWKS. */
export function parseJwks(text: string, problems: string[]): Key[] | null {
  const doc = parseJson(text);
  if (doc === null || !doc.isObject()) return null;
  const list = doc.get("keys");
  if (list === null || !list.isArray()) return null;
  const out = new Array<Key>();
  if (list.items.length > MAX_REMOTE_KEYS) problems.push("has " + list.items.length.toString() + " keys: only the first " + MAX_REMOTE_KEYS.toString() + " are used");
  for (let i = 0; i < list.items.length && i < MAX_REMOTE_KEYS; i++) {
    const key = parseJwk(list.items[i]);
    if (key !== null) out.push(key);
    else if (jwkError.length > 0) problems.push("keys[" + i.toString() + "] skipped: " + jwkError);
  }
  return out;
}
