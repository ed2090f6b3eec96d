// The auth filter in a running proxy: JWTs against keys the host fetches from a JWKS server on
// loopback (rotated without a reload), API keys, and tokens made by the openssl CLI.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as jose from "jose";
import { buildStandardFilters, echoUpstream, startInProcess, tempDir, type InProcessProxy } from "./harness.ts";

type Seen = { method: string; target: string; headers: [string, string][] };
const API_KEYS = { ci: "ci-5f0e7b1c2d3a4958", ops: "ops-8e2a91c4b7d6f013" };
const OPENSSL = Bun.which("openssl");

/** A JWKS endpoint on loopback; the test swaps its document to rotate keys. */
function jwksServer() {
  const state = { doc: { keys: [] as jose.JWK[] }, hits: 0 };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch() {
      state.hits++;
      return Response.json(state.doc);
    },
  });
  return { state, url: `http://127.0.0.1:${server.port}/.well-known/jwks.json`, stop: () => server.stop(true) };
}

const b64 = (b: Uint8Array | string) => Buffer.from(b).toString("base64url");

/** r||s (64 bytes, as JWS wants) from an ECDSA signature in DER, as openssl writes it. */
function derToJose(der: Uint8Array): Uint8Array {
  const out = new Uint8Array(64);
  let at = 2 + (der[1]! & 0x80 ? der[1]! & 0x7f : 0); // SEQUENCE header
  for (const half of [0, 32]) {
    const len = der[at + 1]!; // INTEGER
    const int = der.subarray(at + 2, at + 2 + len);
    const trimmed = int.subarray(Math.max(0, int.length - 32));
    out.set(trimmed, half + 32 - trimmed.length);
    at += 2 + len;
  }
  return out;
}

/** RS256 and ES256 keys made and used by the openssl CLI: their public JWKs and a signing function. */
function opensslKeys() {
  const dir = tempDir("mesh-openssl-");
  const run = (args: string[], input?: string) => {
    const r = spawnSync(OPENSSL!, args, { input, maxBuffer: 1 << 20 });
    if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
    return new Uint8Array(r.stdout);
  };
  const rsaKey = join(dir, "rsa.pem");
  const ecKey = join(dir, "ec.pem");
  run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsaKey]);
  run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ecKey]);
  const publicJwk = (key: string, kid: string) => ({
    ...(createPublicKey(new TextDecoder().decode(run(["pkey", "-in", key, "-pubout"]))).export({ format: "jwk" }) as jose.JWK),
    kid,
  });
  const sign = (alg: "RS256" | "ES256", claims: object) => {
    const input = `${b64(JSON.stringify({ alg, typ: "JWT", kid: alg === "RS256" ? "ossl-rsa" : "ossl-ec" }))}.${b64(JSON.stringify(claims))}`;
    const sig = run(["dgst", "-sha256", "-sign", alg === "RS256" ? rsaKey : ecKey], input);
    return `${input}.${b64(alg === "ES256" ? derToJose(sig) : sig)}`;
  };
  return { jwks: { keys: [publicJwk(rsaKey, "ossl-rsa"), publicJwk(ecKey, "ossl-ec")] }, sign, rsaPem: readFileSync(rsaKey, "utf8") };
}

describe("auth filter through the proxy", () => {
  const up = echoUpstream();
  const jwks = jwksServer();
  let p: InProcessProxy;
  let signer: CryptoKeyPair;
  let ossl: ReturnType<typeof opensslKeys> | null = null;
  const now = () => Math.floor(Date.now() / 1000);

  const claims = (extra: object = {}) => ({ iss: "https://idp.test", aud: ["orders"], sub: "alice", scope: "orders:read orders:write", exp: now() + 300, ...extra });
  const mint = (extra: object = {}, key = signer.privateKey, kid = "k1") =>
    new jose.SignJWT(claims(extra)).setProtectedHeader({ alg: "RS256", kid }).sign(key);
  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${p.url}${path}`, { headers });
  const seen = async (res: Response) => (await res.json()) as Seen;
  const header = (s: Seen, name: string) => s.headers.find(([n]) => n === name)?.[1] ?? null;

  beforeAll(async () => {
    await buildStandardFilters("auth");
    signer = await jose.generateKeyPair("RS256", { extractable: true });
    jwks.state.doc = { keys: [{ ...(await jose.exportJWK(signer.publicKey)), kid: "k1", alg: "RS256", use: "sig" }] };
    if (OPENSSL) ossl = opensslKeys();
    const filter = (config: object) => `[{ name: auth, config: ${JSON.stringify(config)} }]`;
    p = await startInProcess(`
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
filterDir: filters/dist
routes:
  - name: api
    match: { path: { prefix: /api/ } }
    cluster: up
    filters: ${filter({
      realm: "orders",
      excludePaths: ["/api/health"],
      jwt: {
        remoteJwks: [{ url: jwks.url, refreshIntervalMs: 60_000, minRefreshIntervalMs: 200 }],
        issuers: "https://idp.test",
        audiences: ["orders"],
        requiredClaims: [{ name: "scope", contains: "orders:read" }],
        forwardClaims: { sub: "x-user-id", email: "x-user-email" },
        stripToken: true,
      },
    })}
  - name: keys
    match: { path: { prefix: /keys/ } }
    cluster: up
    filters: ${filter({ apiKeys: { keys: API_KEYS, forwardNameHeader: "x-api-client", strip: true } })}
  - name: openssl
    match: { path: { prefix: /openssl/ } }
    cluster: up
    filters: ${filter({ jwt: { jwks: ossl?.jwks ?? { keys: [{ kty: "oct", k: b64(new Uint8Array(32)) }] } } })}
clusters:
  - { name: up, endpoints: ["127.0.0.1:${up.port}"] }
`);
    // The host fetches the JWKS in the background: wait for the first document.
    const token = await mint();
    for (let i = 0; i < 250 && (await get("/api/ping", { authorization: `Bearer ${token}` })).status !== 200; i++) await Bun.sleep(20);
  }, 60_000);
  afterAll(async () => {
    await p?.stop();
    up.stop();
    jwks.stop();
    Bun.gc(true); // the stopped proxy's last filter instances, and with them their JWKS refreshes
  });

  test("passes a valid token upstream with its claims as headers, the client's copies removed, the token stripped", async () => {
    const res = await get("/api/orders?id=7", {
      authorization: `Bearer ${await mint({ email: "alice@example.com" })}`,
      "x-user-id": "root",
      "x-user-email": "root@evil.test",
    });
    expect(res.status).toBe(200);
    const s = await seen(res);
    expect(s.target).toBe("/api/orders?id=7");
    expect(s.headers.filter(([n]) => n === "x-user-id")).toEqual([["x-user-id", "alice"]]);
    expect(header(s, "x-user-email")).toBe("alice@example.com");
    expect(header(s, "authorization")).toBeNull();
  });

  test("removes a spoofed claim header even when the token lacks that claim", async () => {
    const res = await get("/api/orders", { authorization: `Bearer ${await mint()}`, "x-user-email": "root@evil.test" });
    expect(res.status).toBe(200);
    expect(header(await seen(res), "x-user-email")).toBeNull();
  });

  test("answers 401 with an RFC 6750 challenge: bare when the token is missing, invalid_token when it is bad", async () => {
    const missing = await get("/api/orders");
    expect(missing.status).toBe(401);
    expect(missing.headers.get("www-authenticate")).toBe('Bearer realm="orders"');
    expect(await missing.json()).toMatchObject({ error: "missing_credentials" });

    const forged = await mint({}, (await jose.generateKeyPair("RS256")).privateKey);
    const bad = await get("/api/orders", { authorization: `Bearer ${forged}` });
    expect(bad.status).toBe(401);
    expect(bad.headers.get("www-authenticate")).toBe('Bearer realm="orders", error="invalid_token", error_description="the token signature is invalid"');
    expect(bad.headers.get("content-type")).toBe("application/json");
    expect(await bad.json()).toEqual({ error: "invalid_token", reason: "bad_signature", message: "the token signature is invalid" });

    const expired = await get("/api/orders", { authorization: `Bearer ${await mint({ exp: now() - 3600 })}` });
    expect(expired.status).toBe(401);
    expect((await expired.json()).reason).toBe("expired");
    const wrongAud = await get("/api/orders", { authorization: `Bearer ${await mint({ aud: "billing" })}` });
    expect((await wrongAud.json()).reason).toBe("wrong_audience");
  });

  test("answers 403 insufficient_scope for a valid token without the required scope", async () => {
    const res = await get("/api/orders", { authorization: `Bearer ${await mint({ scope: "orders:write" })}` });
    expect(res.status).toBe(403);
    expect(res.headers.get("www-authenticate")).toBe(
      'Bearer realm="orders", error="insufficient_scope", error_description="a required claim lacks a required value"',
    );
    expect(await res.json()).toMatchObject({ error: "insufficient_scope", reason: "claim_mismatch" });
  });

  test("lets an excluded path through without a token", async () => {
    expect((await get("/api/health")).status).toBe(200);
  });

  test("accepts a token signed by a rotated key (new kid) without a reload; the old kid is then unknown", async () => {
    const next = await jose.generateKeyPair("ES256", { extractable: true });
    jwks.state.doc = { keys: [{ ...(await jose.exportJWK(next.publicKey)), kid: "k2", alg: "ES256" }] };
    const rotated = await new jose.SignJWT(claims()).setProtectedHeader({ alg: "ES256", kid: "k2" }).sign(next.privateKey);
    await Bun.sleep(250); // past the refresh cooldown

    // The first request naming k2 makes the host refresh in the background and is refused ...
    const first = await get("/api/orders", { authorization: `Bearer ${rotated}` });
    expect(first.status).toBe(401);
    expect((await first.json()).reason).toBe("unknown_kid");
    // ... and a later one passes.
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      await Bun.sleep(20);
      status = (await get("/api/orders", { authorization: `Bearer ${rotated}` })).status;
    }
    expect(status).toBe(200);
    const old = await get("/api/orders", { authorization: `Bearer ${await mint()}` });
    expect((await old.json()).reason).toBe("unknown_kid");
    // No reload happened: still the first config.
    const config = (await (await fetch(`http://127.0.0.1:${p.admin}/config`)).json()) as { version: number };
    expect(config.version).toBe(1);
  });

  test("accepts a configured API key and forwards its name; refuses a wrong or missing one", async () => {
    const ok = await get("/keys/report", { "x-api-key": API_KEYS.ops, "x-api-client": "ci" });
    expect(ok.status).toBe(200);
    const s = await seen(ok);
    expect(s.headers.filter(([n]) => n === "x-api-client")).toEqual([["x-api-client", "ops"]]);
    expect(header(s, "x-api-key")).toBeNull();

    for (const wrong of [`${API_KEYS.ops}0`, API_KEYS.ops.slice(0, -1), "nope"]) {
      const res = await get("/keys/report", { "x-api-key": wrong });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe('ApiKey realm="meshwasm"');
      expect(await res.json()).toMatchObject({ error: "invalid_api_key" });
    }
    expect((await get("/keys/report")).status).toBe(401);
  });

  test.skipIf(!OPENSSL)(`accepts RS256 and ES256 tokens signed by the openssl CLI${OPENSSL ? "" : " (SKIPPED: openssl is not on PATH)"}`, async () => {
    const body = { sub: "openssl", exp: now() + 300 };
    for (const alg of ["RS256", "ES256"] as const) {
      const token = ossl!.sign(alg, body);
      expect({ alg, status: (await get("/openssl/x", { authorization: `Bearer ${token}` })).status }).toEqual({ alg, status: 200 });
      // The same token with its payload changed is refused.
      const [h, , sig] = token.split(".");
      const tampered = `${h}.${b64(JSON.stringify({ ...body, sub: "root" }))}.${sig}`;
      expect((await get("/openssl/x", { authorization: `Bearer ${tampered}` })).status).toBe(401);
    }
    // And an HS256 token keyed with the RSA key's PEM (algorithm confusion) is refused.
    const input = `${b64(JSON.stringify({ alg: "HS256", kid: "ossl-rsa" }))}.${b64(JSON.stringify(body))}`;
    const mac = spawnSync(OPENSSL!, ["dgst", "-sha256", "-mac", "HMAC", "-macopt", `key:${ossl!.rsaPem}`, "-binary"], { input });
    const confused = await get("/openssl/x", { authorization: `Bearer ${input}.${b64(new Uint8Array(mac.stdout))}` });
    expect((await confused.json()).reason).toBe("alg_mismatch");
  });
});
