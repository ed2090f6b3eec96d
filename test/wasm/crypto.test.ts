// Crypto host functions, driven from a real filter, against known vectors and against WebCrypto.
import { createHash } from "node:crypto";
import { afterAll, beforeAll, expect, test } from "bun:test";
import { FilterHarness } from "../../runtime/wasm/harness.ts";
import { buildFixtures } from "./fixtures.ts";

// WebCrypto signs the vectors; @peculiar/webcrypto stands in where a runtime has no crypto.subtle.
async function subtle(): Promise<SubtleCrypto> {
  if (globalThis.crypto?.subtle) return globalThis.crypto.subtle;
  const { Crypto } = await import("@peculiar/webcrypto");
  return new Crypto().subtle;
}

const b64url = (b: ArrayBuffer | Uint8Array) => Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)).toString("base64url");
const enc = new TextEncoder();
const SIGNED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0";

let h: FilterHarness;
const sigs: Record<string, string> = {};

beforeAll(async () => {
  const { kit } = await buildFixtures();
  const s = await subtle();
  const rsa = await s.generateKey({ name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, true, ["sign", "verify"]);
  const pss = await s.generateKey({ name: "RSA-PSS", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, true, ["sign", "verify"]);
  const ec = await s.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  sigs.RS256 = b64url(await s.sign({ name: "RSASSA-PKCS1-v1_5" }, rsa.privateKey, enc.encode(SIGNED)));
  sigs.PS256 = b64url(await s.sign({ name: "RSA-PSS", saltLength: 32 }, pss.privateKey, enc.encode(SIGNED)));
  sigs.ES256 = b64url(await s.sign({ name: "ECDSA", hash: "SHA-256" }, ec.privateKey, enc.encode(SIGNED)));
  const rsaJwk = await s.exportKey("jwk", rsa.publicKey);
  const pssSpki = new Uint8Array(await s.exportKey("spki", pss.publicKey));
  const ecSpki = new Uint8Array(await s.exportKey("spki", ec.publicKey));
  const pem = `-----BEGIN PUBLIC KEY-----\n${Buffer.from(ecSpki).toString("base64").replace(/(.{64})/g, "$1\n")}\n-----END PUBLIC KEY-----\n`;
  h = await FilterHarness.load(kit, {
    config: {
      mode: "crypto",
      keys: [
        { format: "jwk", data: JSON.stringify({ kty: "RSA", n: rsaJwk.n, e: rsaJwk.e }) },
        { format: "spki", data: b64url(pssSpki) },
        { format: "pem", data: pem },
      ],
    },
  });
}, 60_000);
afterAll(() => h?.close());

function op(headers: Record<string, string>): string | null {
  return h.request({ headers }).header("x-result");
}

test("sha256 matches the FIPS 180-2 vector", () => {
  expect(op({ "x-op": "sha256", "x-data": "abc" })).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  expect(op({ "x-op": "sha256", "x-data": "" })).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
});

test("sha256TextInto hashes a string's UTF-8 bytes, as sha256(utf8(s)) does", () => {
  for (const data of ["abc", "", "bench-3f9c2a7d41e8", "d\u00e9j\u00e0 \u20ac \u{1f600}", "k".repeat(5000)]) {
    const want = createHash("sha256").update(data, "utf8").digest("hex");
    expect(op({ "x-op": "sha256-text", "x-data": data })).toBe(want);
    expect(op({ "x-op": "sha256", "x-data": data })).toBe(want);
  }
});

test("hmac-sha256 matches RFC 4231 test case 2", () => {
  expect(op({ "x-op": "hmac", "x-key": "Jefe", "x-data": "what do ya want for nothing?" })).toBe("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
});

test("base64url round-trips the RFC 4648 vectors without padding", () => {
  expect(op({ "x-op": "b64enc", "x-data": "foobar" })).toBe("Zm9vYmFy");
  expect(op({ "x-op": "b64enc", "x-data": "fo" })).toBe("Zm8");
  expect(op({ "x-op": "b64dec", "x-data": "Zm9vYg" })).toBe("foob");
  expect(op({ "x-op": "b64dec", "x-data": "Zm9vYg==" })).toBe("foob");
  expect(op({ "x-op": "b64dec", "x-data": "not*base64" })).toBe("null");
});

test("verifies RS256 (JWK), PS256 (SPKI) and ES256 (PEM) signatures made by WebCrypto", () => {
  expect(op({ "x-op": "verify", "x-alg": "RS256", "x-key-index": "0", "x-data": SIGNED, "x-sig": sigs.RS256! })).toBe("1");
  expect(op({ "x-op": "verify", "x-alg": "PS256", "x-key-index": "1", "x-data": SIGNED, "x-sig": sigs.PS256! })).toBe("1");
  expect(op({ "x-op": "verify", "x-alg": "ES256", "x-key-index": "2", "x-data": SIGNED, "x-sig": sigs.ES256! })).toBe("1");
});

test("rejects tampered data, wrong signatures and algorithm/key mismatches", () => {
  expect(op({ "x-op": "verify", "x-alg": "RS256", "x-key-index": "0", "x-data": SIGNED + "x", "x-sig": sigs.RS256! })).toBe("0");
  expect(op({ "x-op": "verify", "x-alg": "PS256", "x-key-index": "1", "x-data": SIGNED, "x-sig": sigs.RS256! })).toBe("0");
  expect(op({ "x-op": "verify", "x-alg": "ES256", "x-key-index": "0", "x-data": SIGNED, "x-sig": sigs.ES256! })).toBe("0");
  expect(op({ "x-op": "verify", "x-alg": "ES256", "x-key-index": "2", "x-data": SIGNED, "x-sig": "AAAA" })).toBe("0");
});

test("a key that cannot be parsed is a config error naming it", async () => {
  const errors = await h.reconfigure([{ mode: "crypto", keys: [{ format: "jwk", data: '{"kty":"oct","k":"AAAA"}' }] }]);
  expect(errors).toEqual(["routes[0].filters[0].config: keys[0]: key import: unsupported JWK: kty oct (expected RSA or EC P-256)"]);
});
