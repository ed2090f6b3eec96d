// Synchronous crypto for filter host functions: SHA-256, HMAC-SHA256 and RS256/PS256/ES256 verification.
//
// Host functions run inside a synchronous Wasm call, and WebCrypto only answers with promises, so the
// hot path cannot await it. Bun and Deno both implement node:crypto's synchronous createHash,
// createHmac, createPublicKey and verify on native code (BoringSSL/OpenSSL in Bun, aws-lc/ring in
// Deno), so that is what the host uses. Public keys are parsed once (key_import, normally at
// configure time) and kept as KeyObjects, so a JWT check costs one native verify.
// A runtime without node:crypto gets a provider whose every call fails with a clear message; the
// module still loads, and a filter that needs crypto fails by its failure policy. The test suite
// checks these results against WebCrypto (native or @peculiar/webcrypto) on the same vectors.
import { KEY_JWK, KEY_PEM, KEY_SPKI, SIG_ES256, SIG_PS256, SIG_RS256 } from "./abi.ts";

export interface PublicKeyHandle {
  readonly kind: "rsa" | "ec-p256";
  readonly key: unknown;
}

export interface SyncCrypto {
  readonly available: boolean;
  sha256(data: Uint8Array): Uint8Array;
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  /** Throws an Error whose message says what is wrong with the key. */
  importKey(format: number, data: Uint8Array): PublicKeyHandle;
  /** False for a bad signature or an algorithm that does not fit the key. */
  verify(alg: number, key: PublicKeyHandle, data: Uint8Array, signature: Uint8Array): boolean;
}

type NodeCrypto = typeof import("node:crypto");

const decoder = new TextDecoder();

/** Bun's one-shot SHA-256: 0.13 us against 0.49 us for createHash (32 bytes; an API-key check hashes per request). */
const bunSha256 = (globalThis as { Bun?: { SHA256?: { hash(data: Uint8Array): Uint8Array } } }).Bun?.SHA256;

function fromNode(c: NodeCrypto): SyncCrypto {
  return {
    available: true,
    sha256: bunSha256 !== undefined ? (data) => bunSha256.hash(data) : (data) => c.createHash("sha256").update(data).digest(),
    hmacSha256: (key, data) => c.createHmac("sha256", key).update(data).digest(),
    importKey(format, data) {
      let key: import("node:crypto").KeyObject;
      if (format === KEY_SPKI) key = c.createPublicKey({ key: Buffer.from(data), format: "der", type: "spki" });
      else if (format === KEY_PEM) key = c.createPublicKey(decoder.decode(data));
      else if (format === KEY_JWK) {
        let jwk: Record<string, unknown>;
        try {
          jwk = JSON.parse(decoder.decode(data));
        } catch {
          throw new Error("JWK is not valid JSON");
        }
        if (jwk.kty !== "RSA" && !(jwk.kty === "EC" && jwk.crv === "P-256")) {
          throw new Error(`unsupported JWK: kty ${String(jwk.kty)}${jwk.crv ? ` crv ${String(jwk.crv)}` : ""} (expected RSA or EC P-256)`);
        }
        // Only the public members: a JWKS may carry "d" by mistake, and a private key is not wanted here.
        const pub = jwk.kty === "RSA" ? { kty: "RSA", n: jwk.n, e: jwk.e } : { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y };
        key = c.createPublicKey({ key: pub, format: "jwk" } as Parameters<NodeCrypto["createPublicKey"]>[0]);
      } else throw new Error(`unknown key format ${format}`);
      if (key.type !== "public") throw new Error("not a public key");
      const type = key.asymmetricKeyType;
      if (type === "rsa") return { kind: "rsa", key };
      if (type === "ec") {
        const curve = key.asymmetricKeyDetails?.namedCurve;
        if (curve !== undefined && curve !== "prime256v1" && curve !== "P-256") throw new Error(`unsupported EC curve ${curve} (expected P-256)`);
        return { kind: "ec-p256", key };
      }
      throw new Error(`unsupported key type ${String(type)} (expected RSA or EC P-256)`);
    },
    verify(alg, handle, data, signature) {
      const key = handle.key as import("node:crypto").KeyObject;
      try {
        switch (alg) {
          case SIG_RS256:
            return handle.kind === "rsa" && c.verify("sha256", data, { key, padding: c.constants.RSA_PKCS1_PADDING }, signature);
          case SIG_PS256:
            return (
              handle.kind === "rsa" &&
              c.verify("sha256", data, { key, padding: c.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature)
            );
          case SIG_ES256:
            return handle.kind === "ec-p256" && signature.length === 64 && c.verify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, signature);
          default:
            return false;
        }
      } catch {
        // Malformed signatures make some implementations throw rather than answer false.
        return false;
      }
    },
  };
}

function unavailable(why: string): SyncCrypto {
  const fail = (): never => {
    throw new Error(`synchronous crypto is not available on this runtime (${why})`);
  };
  return { available: false, sha256: fail, hmacSha256: fail, importKey: fail, verify: fail };
}

let provider: Promise<SyncCrypto> | null = null;

/** The process's crypto provider, loaded once. */
export function loadSyncCrypto(): Promise<SyncCrypto> {
  provider ??= import("node:crypto").then(
    (c) => (typeof c.createHash === "function" && typeof c.verify === "function" ? fromNode(c) : unavailable("node:crypto lacks createHash/verify")),
    (err) => unavailable(String((err as Error)?.message ?? err)),
  );
  return provider;
}
