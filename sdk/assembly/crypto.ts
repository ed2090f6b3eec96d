// Hashes, MACs and signature checks done by the host at native speed, and base64url done here.
import { mesh_hmac_sha256, mesh_key_import, mesh_sha256, mesh_verify } from "./abi";
import { lastHostError, reserve } from "./scratch";

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(s));
}

/** A string from UTF-8 bytes. */
export function fromUtf8(b: Uint8Array): string {
  return String.UTF8.decodeUnsafe(b.dataStart, b.byteLength);
}

export namespace crypto {
  export function sha256(data: Uint8Array): Uint8Array {
    const out = new Uint8Array(32);
    mesh_sha256(data.dataStart, data.byteLength, out.dataStart);
    return out;
  }

  /**
   * SHA-256 of a string's UTF-8 bytes, written into `out` (at least 32 bytes). Allocates nothing: for
   * a value hashed on every request, such as an API key (`sha256(utf8(s))` makes two buffers each time).
   */
  export function sha256TextInto(s: string, out: Uint8Array): void {
    assert(out.length >= 32, "sha256TextInto: out must hold 32 bytes");
    const len = String.UTF8.byteLength(s);
    const p = reserve(len);
    String.UTF8.encodeUnsafe(changetype<usize>(s), s.length, p);
    mesh_sha256(p, len, out.dataStart);
  }

  export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
    const out = new Uint8Array(32);
    mesh_hmac_sha256(key.dataStart, key.byteLength, data.dataStart, data.byteLength, out.dataStart);
    return out;
  }

  /** Compares in time that depends only on the lengths (for MACs and API keys). */
  export function timingSafeEqual(a: Uint8Array, b: Uint8Array): bool {
    if (a.length != b.length) return false;
    let diff: u32 = 0;
    for (let i = 0; i < a.length; i++) diff |= <u32>(unchecked(a[i]) ^ unchecked(b[i]));
    return diff == 0;
  }

  /** Hex of bytes, lower case. */
  export function toHex(b: Uint8Array): string {
    const digits = "0123456789abcdef";
    let out = "";
    for (let i = 0; i < b.length; i++) {
      out += digits.charAt(b[i] >> 4) + digits.charAt(b[i] & 15);
    }
    return out;
  }
}

/** How a public key is written. */
export enum KeyFormat {
  /** DER SubjectPublicKeyInfo. */
  Spki = 0,
  /** PEM ("-----BEGIN PUBLIC KEY-----"), RSA or EC. */
  Pem = 1,
  /** A JWK as JSON text (kty RSA with n/e, or kty EC crv P-256 with x/y), e.g. one key of a JWKS. */
  Jwk = 2,
}

/** Signature algorithms, named as in JWS. */
export enum SigAlg {
  /** RSASSA-PKCS1-v1_5 with SHA-256. */
  RS256 = 1,
  /** RSASSA-PSS with SHA-256, MGF1-SHA-256, salt length 32. */
  PS256 = 2,
  /** ECDSA P-256 with SHA-256; the signature is r||s (64 bytes), as in JWS. */
  ES256 = 3,
}

let keyError: string = "";

/** A public key imported once (at configure time) and kept by the host for fast verification. */
export class PublicKey {
  private constructor(private handle: i32) {}

  /** Null when the key cannot be parsed; PublicKey.lastError() says why. */
  static import(format: KeyFormat, data: Uint8Array): PublicKey | null {
    const h = mesh_key_import(format, data.dataStart, data.byteLength);
    if (h < 0) {
      keyError = lastHostError();
      return null;
    }
    return new PublicKey(h);
  }

  static fromPem(pem: string): PublicKey | null {
    return PublicKey.import(KeyFormat.Pem, utf8(pem));
  }

  static fromJwk(jwkJson: string): PublicKey | null {
    return PublicKey.import(KeyFormat.Jwk, utf8(jwkJson));
  }

  static lastError(): string {
    return keyError;
  }

  /** True only for a valid signature by this key; false for a bad one or a key/algorithm mismatch. */
  verify(alg: SigAlg, data: Uint8Array, signature: Uint8Array): bool {
    return mesh_verify(alg, this.handle, data.dataStart, data.byteLength, signature.dataStart, signature.byteLength) == 1;
  }
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Decoding table: 255 = not in the alphabet. Also accepts "+" and "/" so plain base64 decodes too.
const DECODE = new StaticArray<u8>(128);
for (let i = 0; i < 128; i++) DECODE[i] = 255;
for (let i = 0; i < 64; i++) DECODE[ALPHABET.charCodeAt(i)] = <u8>i;
DECODE[0x2b] = 62;
DECODE[0x2f] = 63;

/** base64url (RFC 4648 section 5) without padding, as JWTs use it. Runs in the filter: no host call. */
export namespace base64url {
  export function encode(data: Uint8Array): string {
    let out = "";
    let i = 0;
    const n = data.length;
    for (; i + 2 < n; i += 3) {
      const v = (<u32>data[i] << 16) | (<u32>data[i + 1] << 8) | data[i + 2];
      out += ALPHABET.charAt(v >> 18) + ALPHABET.charAt((v >> 12) & 63) + ALPHABET.charAt((v >> 6) & 63) + ALPHABET.charAt(v & 63);
    }
    if (n - i == 1) {
      const v = <u32>data[i] << 16;
      out += ALPHABET.charAt(v >> 18) + ALPHABET.charAt((v >> 12) & 63);
    } else if (n - i == 2) {
      const v = (<u32>data[i] << 16) | (<u32>data[i + 1] << 8);
      out += ALPHABET.charAt(v >> 18) + ALPHABET.charAt((v >> 12) & 63) + ALPHABET.charAt((v >> 6) & 63);
    }
    return out;
  }

  /** Null when `s` has characters outside the alphabet or an impossible length. Trailing "=" is ignored. */
  export function decode(s: string): Uint8Array | null {
    let len = s.length;
    while (len > 0 && s.charCodeAt(len - 1) == 0x3d) len--;
    if (len % 4 == 1) return null;
    const out = new Uint8Array((len * 3) >> 2);
    let acc: u32 = 0;
    let bits = 0;
    let o = 0;
    for (let i = 0; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c >= 128) return null;
      const d = DECODE[c];
      if (d == 255) return null;
      acc = (acc << 6) | d;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out[o++] = <u8>(acc >> bits);
      }
    }
    return out;
  }

  export function decodeString(s: string): string | null {
    const b = decode(s);
    return b === null ? null : fromUtf8(b);
  }
}
