// Runs with: meshctl filter test filters/auth (or bun test filters/auth after a build).
// Tokens come from jose (HS256, RS256, ES256), from RFC 7515's example, and by hand for the hostile ones.
import { afterAll, beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import { createHmac, createPublicKey, generateKeyPairSync } from "node:crypto";
import * as jose from "jose";
import { buildFilter } from "../../control/cli/filter-build.ts";
import { FilterHarness, type RequestResult } from "../../runtime/wasm/harness.ts";
import { sharedJwks } from "../../runtime/wasm/jwks.ts";

let wasm: string;
const open: FilterHarness[] = [];
async function load(config: unknown) {
  const h = await FilterHarness.load(wasm, { config, name: "auth" });
  open.push(h);
  return h;
}

const b64 = (data: string | Uint8Array) => Buffer.from(data).toString("base64url");
const json = (v: unknown) => b64(JSON.stringify(v));
/** A copy without some members (a YAML config never holds `undefined`). */
function omit<T extends object>(o: T, ...names: string[]): T {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !names.includes(k))) as T;
}
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** The answer of a request the filter refused, with its parsed JSON body. */
function refusal(r: RequestResult) {
  if (r.outcome.kind !== "respond") throw new Error(`expected the filter to answer, got ${r.outcome.kind}`);
  const header = (n: string) => (r.outcome as { headers: [string, string][] }).headers.filter(([k]) => k === n).map(([, v]) => v);
  return { status: r.outcome.status, challenge: header("www-authenticate"), body: JSON.parse(text(r.outcome.body)) as { error: string; reason: string; message: string } };
}

const hsSecret = new Uint8Array(48).map((_, i) => (i * 37 + 11) & 255);
let rsa: CryptoKeyPair;
let rsa2: CryptoKeyPair;
let ec: CryptoKeyPair;
let rsaJwk: jose.JWK;
let ecJwk: jose.JWK;
const hsJwk = { kty: "oct", kid: "hs-1", k: b64(hsSecret) };
let keysConfig: unknown;

type Claims = Record<string, unknown>;
const now = () => Math.floor(Date.now() / 1000);

async function mint(alg: "HS256" | "RS256" | "ES256", claims: Claims = {}, header: Record<string, unknown> = {}): Promise<string> {
  const key = alg === "HS256" ? hsSecret : alg === "RS256" ? rsa.privateKey : ec.privateKey;
  const kid = alg === "HS256" ? "hs-1" : alg === "RS256" ? "rsa-1" : "ec-1";
  return new jose.SignJWT({ sub: "alice", exp: now() + 300, ...claims }).setProtectedHeader({ alg, kid, ...header }).sign(key);
}

/** A token put together by hand: any header, any payload, any signature. */
function craft(header: unknown, payload: unknown, sig = "c2ln"): string {
  return `${json(header)}.${json(payload)}.${sig}`;
}
function hs256(secret: Uint8Array | string, header: unknown, payload: unknown): string {
  const input = `${json(header)}.${json(payload)}`;
  return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
}
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

beforeAll(async () => {
  wasm = (await buildFilter(import.meta.dir, { cache: true })).outFile;
  rsa = await jose.generateKeyPair("RS256", { extractable: true });
  rsa2 = await jose.generateKeyPair("RS256", { extractable: true });
  ec = await jose.generateKeyPair("ES256", { extractable: true });
  rsaJwk = { ...(await jose.exportJWK(rsa.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" };
  ecJwk = { ...(await jose.exportJWK(ec.publicKey)), kid: "ec-1" };
  keysConfig = { keys: [hsJwk, rsaJwk, ecJwk] };
}, 60_000);
afterAll(async () => {
  setSystemTime();
  await Promise.all(open.map((h) => h.close()));
  open.length = 0;
  Bun.gc(true); // lets the host drop the JWKS refreshes of the instances just retired
});

describe("valid tokens", () => {
  test("accepts HS256, RS256 and ES256 tokens from jose, choosing the key by kid", async () => {
    const h = await load({ jwt: { jwks: keysConfig } });
    for (const alg of ["HS256", "RS256", "ES256"] as const) {
      expect(h.request({ headers: bearer(await mint(alg)) }).outcome.kind).toBe("continue");
    }
    expect(h.metricsText()).toContain('mesh_filter_auth_allowed_total{filter="auth"} 3');
  });

  test("accepts a token without kid when there is exactly one key", async () => {
    const h = await load({ jwt: { jwks: { keys: [omit(ecJwk, "kid")] } } });
    const t = await new jose.SignJWT({ exp: now() + 60 }).setProtectedHeader({ alg: "ES256" }).sign(ec.privateKey);
    expect(h.request({ headers: bearer(t) }).outcome.kind).toBe("continue");
  });

  test("accepts the RFC 7515 A.1 HS256 example with its key at the example's time, and only then", async () => {
    const token =
      "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9" +
      ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ" +
      ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    const h = await load({
      jwt: { jwks: { keys: [{ kty: "oct", k }] }, issuers: "joe", requiredClaims: [{ name: "http://example.com/is_root", equals: true }], forwardClaims: { iss: "x-iss" } },
    });
    // Today it has expired (exp 1300819380): the signature was good, so the claims were checked.
    expect(refusal(h.request({ headers: bearer(token) })).body.reason).toBe("expired");
    try {
      setSystemTime(new Date(1300819300 * 1000));
      const r = h.request({ headers: bearer(token) });
      expect(r.outcome.kind).toBe("continue");
      expect(r.header("x-iss")).toBe("joe");
      const at = token.lastIndexOf(".") + 1;
      const flipped = token.slice(0, at) + (token[at] === "d" ? "e" : "d") + token.slice(at + 1);
      expect(refusal(h.request({ headers: bearer(flipped) })).body.reason).toBe("bad_signature");
    } finally {
      setSystemTime();
    }
  });

  test("reads the scheme case-insensitively and ignores other schemes", async () => {
    const h = await load({ jwt: { jwks: keysConfig } });
    expect(h.request({ headers: { authorization: `bearer ${await mint("HS256")}` } }).outcome.kind).toBe("continue");
    const basic = refusal(h.request({ headers: { authorization: "Basic YWxpY2U6c2VjcmV0" } }));
    expect(basic.status).toBe(401);
    expect(basic.challenge).toEqual(['Bearer realm="meshwasm"']);
  });

  test("reads the token from a configured header or cookie, in order", async () => {
    const h = await load({ jwt: { jwks: keysConfig, from: [{ header: "x-jwt" }, { cookie: "session" }] } });
    const t = await mint("RS256");
    expect(h.request({ headers: { "x-jwt": t } }).outcome.kind).toBe("continue");
    expect(h.request({ headers: { cookie: `theme=dark; session=${t}; lang=en` } }).outcome.kind).toBe("continue");
    // In a second Cookie field (as after an HTTP/2 hop), and in DQUOTEs (RFC 6265).
    expect(h.request({ headers: [["cookie", "theme=dark"], ["cookie", `session=${t}`]] }).outcome.kind).toBe("continue");
    expect(h.request({ headers: { cookie: `session="${t}"` } }).outcome.kind).toBe("continue");
    // Authorization is not a source here.
    expect(refusal(h.request({ headers: bearer(t) })).body.error).toBe("missing_credentials");
  });
});

describe("claims", () => {
  test("rejects an expired token, but not within the clock skew", async () => {
    const h = await load({ jwt: { jwks: keysConfig, clockSkewSeconds: 30 } });
    const expired = refusal(h.request({ headers: bearer(await mint("HS256", { exp: now() - 31 })) }));
    expect(expired.status).toBe(401);
    expect(expired.challenge).toEqual(['Bearer realm="meshwasm", error="invalid_token", error_description="the token has expired"']);
    expect(expired.body).toEqual({ error: "invalid_token", reason: "expired", message: "the token has expired" });
    expect(h.request({ headers: bearer(await mint("HS256", { exp: now() - 20 })) }).outcome.kind).toBe("continue");
  });

  test("rejects a token that is not valid yet (nbf) beyond the skew, default 60 s", async () => {
    const h = await load({ jwt: { jwks: keysConfig } });
    expect(refusal(h.request({ headers: bearer(await mint("ES256", { nbf: now() + 120 })) })).body.reason).toBe("not_yet_valid");
    expect(h.request({ headers: bearer(await mint("ES256", { nbf: now() + 30 })) }).outcome.kind).toBe("continue");
  });

  test("requires exp unless told otherwise", async () => {
    const noExp = await new jose.SignJWT({ sub: "svc" }).setProtectedHeader({ alg: "HS256", kid: "hs-1" }).sign(hsSecret);
    expect(refusal((await load({ jwt: { jwks: keysConfig } })).request({ headers: bearer(noExp) })).body.reason).toBe("missing_exp");
    expect((await load({ jwt: { jwks: keysConfig, requireExpiration: false } })).request({ headers: bearer(noExp) }).outcome.kind).toBe("continue");
  });

  test("checks iss against the accepted issuers", async () => {
    const h = await load({ jwt: { jwks: keysConfig, issuers: ["https://idp.a", "https://idp.b"] } });
    expect(h.request({ headers: bearer(await mint("RS256", { iss: "https://idp.b" })) }).outcome.kind).toBe("continue");
    expect(refusal(h.request({ headers: bearer(await mint("RS256", { iss: "https://evil" })) })).body.reason).toBe("wrong_issuer");
    expect(refusal(h.request({ headers: bearer(await mint("RS256")) })).body.reason).toBe("wrong_issuer");
  });

  test("checks aud as a string or an array", async () => {
    const h = await load({ jwt: { jwks: keysConfig, audiences: "api" } });
    expect(h.request({ headers: bearer(await mint("HS256", { aud: "api" })) }).outcome.kind).toBe("continue");
    expect(h.request({ headers: bearer(await mint("HS256", { aud: ["web", "api"] })) }).outcome.kind).toBe("continue");
    expect(refusal(h.request({ headers: bearer(await mint("HS256", { aud: ["web"] })) })).body.reason).toBe("wrong_audience");
    expect(refusal(h.request({ headers: bearer(await mint("HS256")) })).body.reason).toBe("wrong_audience");
    expect(refusal(h.request({ headers: bearer(await mint("HS256", { aud: 7 })) })).body.reason).toBe("malformed");
  });

  test("answers 403 insufficient_scope for a valid token lacking a required claim or value", async () => {
    const h = await load({
      jwt: { jwks: keysConfig, requiredClaims: ["tenant", { name: "role", equals: "admin" }, { name: "scope", contains: "write" }] },
    });
    const ok = { tenant: "t1", role: "admin", scope: "read write" };
    expect(h.request({ headers: bearer(await mint("ES256", ok)) }).outcome.kind).toBe("continue");
    const lacking = refusal(h.request({ headers: bearer(await mint("ES256", { ...ok, tenant: undefined })) }));
    expect(lacking.status).toBe(403);
    expect(lacking.challenge).toEqual(['Bearer realm="meshwasm", error="insufficient_scope", error_description="the token lacks a required claim"']);
    expect(lacking.body).toMatchObject({ error: "insufficient_scope", reason: "missing_claim" });
    expect(refusal(h.request({ headers: bearer(await mint("ES256", { ...ok, tenant: null })) })).status).toBe(403);
    expect(refusal(h.request({ headers: bearer(await mint("ES256", { ...ok, role: "user" })) })).body.reason).toBe("claim_mismatch");
    expect(refusal(h.request({ headers: bearer(await mint("ES256", { ...ok, scope: "read writer" })) })).status).toBe(403);
    expect(h.request({ headers: bearer(await mint("ES256", { ...ok, scope: ["write"] })) }).outcome.kind).toBe("continue");
  });

  test("equals compares JSON values: member order does not matter, array order and types do", async () => {
    const h = await load({ jwt: { jwks: keysConfig, requiredClaims: [{ name: "tenant", equals: { a: 1, b: [1, 2], c: { d: "x" } } }] } });
    const ok = h.request({ headers: bearer(await mint("ES256", { tenant: { c: { d: "x" }, b: [1, 2], a: 1.0 } })) });
    expect(ok.outcome.kind).toBe("continue");
    for (const tenant of [{ a: 1, b: [2, 1], c: { d: "x" } }, { a: "1", b: [1, 2], c: { d: "x" } }, { a: 1, b: [1, 2] }, { a: 1, b: [1, 2], c: { d: "x" }, e: 0 }]) {
      expect(refusal(h.request({ headers: bearer(await mint("ES256", { tenant })) })).body.reason).toBe("claim_mismatch");
    }
  });

  test("forwards chosen claims and always removes client-sent copies of those headers", async () => {
    const h = await load({ jwt: { jwks: keysConfig, forwardClaims: { sub: "x-user-id", email: "x-user-email", tenant_id: "x-tenant", roles: "x-roles" } } });
    const spoof = { "x-user-id": "root", "X-User-Email": "root@evil", "x-tenant": "0" };
    const r = h.request({ headers: { ...spoof, ...bearer(await mint("RS256", { tenant_id: 42, roles: ["a", "b"] })) } });
    expect(r.outcome.kind).toBe("continue");
    expect(r.ctx.headers.list().filter(([n]) => n.startsWith("x-"))).toEqual([["x-user-id", "alice"], ["x-tenant", "42"], ["x-roles", '["a","b"]']]);
    // Refused requests and requests without the claim never carry the client's copies either.
    const refused = h.request({ headers: { ...spoof, ...bearer("x.y.z") } });
    expect(refused.header("x-user-id")).toBeNull();
    const nonAscii = h.request({ headers: { ...spoof, ...bearer(await mint("RS256", { sub: "jos\u00e9", email: "a\nb" })) } });
    expect(nonAscii.outcome.kind).toBe("continue");
    expect(nonAscii.header("x-user-id")).toBeNull();
    expect(nonAscii.header("x-user-email")).toBeNull();
  });

  test("strips the token before forwarding when asked: the header, or only its cookie", async () => {
    const h = await load({ jwt: { jwks: keysConfig, stripToken: true, from: [{ header: "authorization" }, { cookie: "at" }] } });
    const t = await mint("HS256");
    const r = h.request({ headers: { ...bearer(t), accept: "*/*" } });
    expect(r.outcome.kind).toBe("continue");
    expect(r.header("authorization")).toBeNull();
    expect(h.request({ headers: { cookie: `a=1; at=${t}; b=2` } }).header("cookie")).toBe("a=1; b=2");
    expect(h.request({ headers: { cookie: `at=${t}` } }).header("cookie")).toBeNull();
    // Over several Cookie fields only the token's cookie goes; the others stay, as one field.
    const split = h.request({ headers: [["cookie", `at=${t}`], ["cookie", "a=1"], ["cookie", "b=2"]] });
    expect(split.outcome.kind).toBe("continue");
    expect(split.header("cookie")).toBe("a=1; b=2");
  });
});

describe("hostile tokens", () => {
  let h: FilterHarness;
  beforeAll(async () => {
    h = await load({ jwt: { jwks: keysConfig, maxTokenBytes: 4096 } });
  });
  const reason = (token: string) => refusal(h.request({ headers: bearer(token) })).body.reason;
  const payload = () => ({ sub: "mallory", exp: now() + 300 });

  test("a made-up payload as large as the default size allows is a bad signature, inside the default CPU budget", async () => {
    // ~760 short members within the default 8 KiB: parsed before the signature, as it once was, that
    // cost 2-5 ms of the default 5 ms of fuel, so a loaded machine answered 500 (or, under
    // failurePolicy open, let the request through unauthenticated). Unread, it costs ~1 ms. That the
    // payload is read only after the signature is pinned down by the malformed-payload cases below
    // (unsigned: bad_signature; signed: malformed).
    const h = await FilterHarness.load(wasm, { config: { jwt: { jwks: keysConfig } }, name: "auth" });
    open.push(h);
    const payloadText = `{${Array.from({ length: 760 }, (_, i) => `"${i}":0`).join(",")}}`;
    const token = `${b64('{"alg":"HS256","kid":"hs-1"}')}.${b64(payloadText)}.${b64(new Uint8Array(32))}`;
    expect(token.length).toBeGreaterThan(7000);
    expect(token.length).toBeLessThanOrEqual(8192);
    const r = refusal(h.request({ headers: bearer(token) }));
    expect({ status: r.status, reason: r.body.reason }).toEqual({ status: 401, reason: "bad_signature" });
  });

  test("a header over half of maxTokenBytes is refused before it is parsed", async () => {
    // This suite's maxTokenBytes is 4096: headers up to 2048 characters.
    const big = { alg: "HS256", kid: "hs-1", pad: "x".repeat(1600) };
    expect(reason(craft(big, payload()))).toBe("malformed");
    expect(reason(hs256(hsSecret, big, payload()))).toBe("malformed");
    expect(h.request({ headers: bearer(hs256(hsSecret, { alg: "HS256", kid: "hs-1", pad: "x".repeat(64) }, payload())) }).outcome.kind).toBe("continue");
    // At the default 8192 the same header (~2.2 KiB, the size of one x5c certificate) is read.
    const roomy = await FilterHarness.load(wasm, { config: { jwt: { jwks: keysConfig } }, name: "auth" });
    open.push(roomy);
    expect(roomy.request({ headers: bearer(hs256(hsSecret, big, payload())) }).outcome.kind).toBe("continue");
  });

  test("a signed payload of many members costs time linear in their number", async () => {
    // 1600 members: the one-pass duplicate check needs 5-10 ms of fuel here, a pairwise one over 40 ms
    // (measured with both builds), so a budget of 40 ms tells them apart with room for a loaded machine.
    const h = await FilterHarness.load(wasm, { config: { jwt: { jwks: keysConfig, maxTokenBytes: 32768 } }, name: "auth", cpuBudgetMs: 40 });
    open.push(h);
    const claims: Record<string, unknown> = { sub: "alice", exp: now() + 300 };
    for (let i = 0; i < 1600; i++) claims[`m${i}`] = 0;
    expect(h.request({ headers: bearer(hs256(hsSecret, { alg: "HS256", kid: "hs-1" }, claims)) }).outcome.kind).toBe("continue");
  });

  test("refuses alg none in any spelling, signed or not", () => {
    for (const alg of ["none", "None", "NONE"]) {
      expect(reason(`${json({ alg, kid: "hs-1" })}.${json(payload())}.`)).toBe("malformed"); // empty signature
      expect(reason(craft({ alg, kid: "hs-1" }, payload()))).toBe("alg_not_allowed");
    }
  });

  test("refuses algorithm confusion: an RSA public key used as the HMAC secret", async () => {
    const pem = createPublicKey(await jose.exportSPKI(rsa.publicKey)).export({ type: "spki", format: "pem" }) as string;
    const der = createPublicKey(pem).export({ type: "spki", format: "der" });
    for (const secret of [pem, new Uint8Array(der), Buffer.from(rsaJwk.n!, "base64url"), JSON.stringify(rsaJwk)]) {
      const asSecret = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
      expect(reason(hs256(asSecret, { alg: "HS256", kid: "rsa-1" }, payload()))).toBe("alg_mismatch");
    }
    // Also without a kid, against a key set of one RSA key.
    const single = await load({ jwt: { jwks: { keys: [omit(rsaJwk, "kid", "alg")] } } });
    expect(refusal(single.request({ headers: bearer(hs256(pem, { alg: "HS256" }, payload())) })).body.reason).toBe("alg_mismatch");
    // And an ES256 token naming the RSA key, an RS256 token naming the HMAC key.
    expect(reason(craft({ alg: "ES256", kid: "rsa-1" }, payload(), b64(new Uint8Array(64))))).toBe("alg_mismatch");
    expect(reason(craft({ alg: "RS256", kid: "hs-1" }, payload(), b64(new Uint8Array(256))))).toBe("alg_mismatch");
  });

  test("refuses a token signed by another key under a known kid", async () => {
    const forged = await new jose.SignJWT(payload()).setProtectedHeader({ alg: "RS256", kid: "rsa-1" }).sign(rsa2.privateKey);
    expect(reason(forged)).toBe("bad_signature");
  });

  test("refuses truncated and altered signatures", async () => {
    for (const alg of ["HS256", "RS256", "ES256"] as const) {
      const t = await mint(alg);
      const [hp, sig] = [t.slice(0, t.lastIndexOf(".")), Buffer.from(t.slice(t.lastIndexOf(".") + 1), "base64url")];
      expect(reason(`${hp}.${b64(sig.subarray(0, sig.length - 1))}`)).toBe("bad_signature"); // one byte short
      expect(reason(`${hp}.${b64(sig.subarray(0, sig.length >> 1))}`)).toBe("bad_signature"); // half
      expect(["bad_signature", "malformed"]).toContain(reason(t.slice(0, -1))); // one character short
      expect(reason(t.slice(0, t.lastIndexOf(".") + 1))).toBe("malformed");
    }
    const t = await mint("HS256");
    const [h0, p0] = t.split(".");
    expect(reason(`${h0}.${json({ ...payload(), sub: "admin" })}.${t.split(".")[2]}`)).toBe("bad_signature");
    expect(reason(`${h0}.${p0}.${b64(new Uint8Array(31))}`)).toBe("bad_signature");
  });

  test("refuses malformed tokens of every kind", async () => {
    const good = await mint("HS256");
    const [gh, gp, gs] = good.split(".");
    const cases: [string, string][] = [
      ["abc.def.ghi", "malformed"], // 3 segments of garbage
      ["a.b", "malformed"],
      ["a.b.c.d", "malformed"],
      ["a.b.c.d.e", "malformed"], // JWE
      ["..", "malformed"],
      [`${gh}.${gp}`, "malformed"],
      [`${gh}..${gs}`, "malformed"],
      [`${gh}=.${gp}.${gs}`, "malformed"], // padding
      [`${gh}.${gp}.${gs}+/`, "malformed"], // plain base64 characters
      [`${gh}.${gp}.${gs} x`, "malformed"],
      [`${good}, Bearer ${good}`, "malformed"], // two Authorization headers joined by the listener
      [`${b64("hello")}.${gp}.${gs}`, "malformed"], // header not JSON
      [`${json([1])}.${gp}.${gs}`, "malformed"], // header not an object
      [`${json("HS256")}.${gp}.${gs}`, "malformed"],
      // A payload is read only under a good signature: unsigned garbage is a bad signature, signed garbage malformed.
      [`${gh}.${b64("{not json")}.${gs}`, "bad_signature"],
      [`${gh}.${json(["sub"])}.${gs}`, "bad_signature"],
      [craft({ kid: "hs-1" }, payload()), "malformed"], // no alg
      [craft({ alg: 256, kid: "hs-1" }, payload()), "malformed"],
      [craft({ alg: "HS256", kid: 1 }, payload()), "malformed"],
      [craft({ alg: "HS512", kid: "hs-1" }, payload()), "alg_not_allowed"],
      [craft({ alg: "PS256", kid: "rsa-1" }, payload()), "alg_not_allowed"],
      [craft({ alg: "HS256", kid: "hs-1", crit: ["exp"] }, payload()), "malformed"],
      [craft({ alg: "HS256" }, payload()), "missing_kid"], // several keys, no kid
      [craft({ alg: "HS256", kid: "nope" }, payload()), "unknown_kid"],
      [hs256(hsSecret, { alg: "HS256", kid: "hs-1" }, { exp: String(now() + 300) }), "malformed"],
      [hs256(hsSecret, { alg: "HS256", kid: "hs-1" }, { exp: now() + 300, nbf: true }), "malformed"],
      [hs256(hsSecret, { alg: "HS256", kid: "hs-1" }, { exp: now() + 300, iat: "yesterday" }), "malformed"],
      [hs256(hsSecret, { alg: "HS256", kid: "hs-1" }, { exp: null }), "malformed"],
    ];
    // Validly signed, but with a repeated member in the header or the payload (parsers disagree on which wins).
    const signedRaw = (headerText: string, payloadText: string) => {
      const input = `${b64(headerText)}.${b64(payloadText)}`;
      return `${input}.${createHmac("sha256", hsSecret).update(input).digest("base64url")}`;
    };
    const claims = JSON.stringify({ sub: "alice", exp: now() + 300 });
    cases.push([signedRaw('{"alg":"HS256","kid":"hs-1"}', "{not json"), "malformed"]);
    cases.push([signedRaw('{"alg":"HS256","kid":"hs-1"}', '["sub"]'), "malformed"]);
    cases.push([signedRaw('{"alg":"HS256","kid":"hs-1"}', "42"), "malformed"]);
    cases.push([signedRaw('{"alg":"none","alg":"HS256","kid":"hs-1"}', claims), "malformed"]);
    cases.push([signedRaw('{"alg":"HS256","kid":"hs-1"}', `{"sub":"alice","exp":${now() + 300},"sub":"root"}`), "malformed"]);
    expect(h.request({ headers: bearer(signedRaw('{"alg":"HS256","kid":"hs-1"}', claims)) }).outcome.kind).toBe("continue");
    // Non-canonical base64url: same bytes, different last character (unused low bits set).
    const last = gs!.at(-1)!;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    cases.push([`${gh}.${gp}.${gs!.slice(0, -1)}${alphabet[alphabet.indexOf(last) + 1]}`, "malformed"]);
    for (const [token, want] of cases) {
      const r = refusal(h.request({ headers: bearer(token) }));
      expect({ token, status: r.status, reason: r.body.reason }).toEqual({ token, status: 401, reason: want });
      expect(r.challenge[0]).toStartWith('Bearer realm="meshwasm", error="invalid_token", error_description="');
    }
  });

  test("refuses an oversized token before decoding it", () => {
    const huge = `${json({ alg: "HS256", kid: "hs-1" })}.${b64("x".repeat(4096))}.c2ln`;
    expect(reason(huge)).toBe("token_too_large");
    // 64 KiB: four times the proxy's default header limit (limits.maxRequestHeaderBytes), which stops longer ones first.
    expect(reason("a".repeat(65_536))).toBe("token_too_large");
  });

  test("keeps working after all that: no trap, no failure counted", async () => {
    expect(h.request({ headers: bearer(await mint("RS256")) }).outcome.kind).toBe("continue");
    expect(h.metricsText()).not.toContain("mesh_filter_failures_total");
  });
});

describe("API keys", () => {
  const KEYS = { ci: "ci-0123456789abcdef", ops: "ops-fedcba9876543210", ops2: "ops-fedcba987654321" };

  test("accepts a configured key from the header and forwards its name, not a forged one", async () => {
    const h = await load({ apiKeys: { keys: KEYS, forwardNameHeader: "x-api-client" } });
    for (const [name, key] of Object.entries(KEYS)) {
      const r = h.request({ headers: { "x-api-key": key, "x-api-client": "admin" } });
      expect(r.outcome.kind).toBe("continue");
      expect(r.header("x-api-client")).toBe(name);
    }
    expect(h.request({ headers: { "x-api-client": "admin" } }).header("x-api-client")).toBeNull();
  });

  test("refuses a wrong key with 401 and an ApiKey challenge, whatever its length or prefix", async () => {
    const h = await load({ apiKeys: { keys: [{ name: "ci", key: KEYS.ci }], header: "x-key" }, realm: "payments" });
    for (const wrong of ["", "c", KEYS.ci.slice(0, -1), `${KEYS.ci}x`, KEYS.ci.toUpperCase(), "x".repeat(5000)]) {
      const r = refusal(h.request({ headers: { "x-key": wrong } }));
      expect(r.status).toBe(401);
      expect(r.challenge).toEqual(['ApiKey realm="payments"']);
      expect(r.body.error).toBe("invalid_api_key");
    }
    expect(refusal(h.request({ headers: { "x-api-key": KEYS.ci } })).body.error).toBe("missing_credentials");
  });

  test("reads the key from a query parameter and strips it before forwarding", async () => {
    const h = await load({ apiKeys: { keys: KEYS, queryParam: "api_key", strip: true } });
    const r = h.request({ path: `/v1/items?page=2&api_key=${KEYS.ops}&sort=asc` });
    expect(r.outcome.kind).toBe("continue");
    expect(r.ctx.target).toBe("/v1/items?page=2&sort=asc");
    const byHeader = h.request({ headers: { "x-api-key": KEYS.ci } });
    expect(byHeader.header("x-api-key")).toBeNull();
    expect(refusal(h.request({ path: "/v1/items?api_key=nope" })).status).toBe(401);
  });

  test("with both modes, a token decides when present, else the key; none gets both challenges", async () => {
    const h = await load({ jwt: { jwks: keysConfig }, apiKeys: { keys: KEYS } });
    expect(h.request({ headers: { "x-api-key": KEYS.ci } }).outcome.kind).toBe("continue");
    expect(h.request({ headers: bearer(await mint("ES256")) }).outcome.kind).toBe("continue");
    expect(refusal(h.request({ headers: { ...bearer("x.y.z"), "x-api-key": KEYS.ci } })).body.error).toBe("invalid_token");
    expect(refusal(h.request({})).challenge).toEqual(['Bearer realm="meshwasm"', 'ApiKey realm="meshwasm"']);
  });
});

describe("paths and config", () => {
  test("lets excluded paths through without credentials, exact or by prefix", async () => {
    const h = await load({ excludePaths: ["/health", { prefix: "/public/" }], apiKeys: { keys: { a: "a-0123456789abcdef" }, forwardNameHeader: "x-client" } });
    expect(h.request({ path: "/health" }).outcome.kind).toBe("continue");
    expect(h.request({ path: "/public/logo.png?v=1" }).outcome.kind).toBe("continue");
    expect(refusal(h.request({ path: "/healthz" })).status).toBe(401);
    expect(refusal(h.request({ path: "/public" })).status).toBe(401);
    // Forged identity headers are removed on excluded paths too.
    expect(h.request({ path: "/health", headers: { "x-client": "a" } }).header("x-client")).toBeNull();
  });

  test("refuses configs it cannot enforce, naming the field", async () => {
    const h = await load({ apiKeys: { keys: { a: "a-0123456789abcdef" } } });
    const cases: [unknown, string][] = [
      [{}, "routes[0].filters[0].config: expected jwt, apiKeys or both"],
      [{ jwt: {} }, "routes[0].filters[0].config: jwt: expected jwks (inline keys) or remoteJwks (URLs)"],
      [{ jwt: { jwks: { keys: [{ kty: "oct", k: b64("short") }] } } }, "routes[0].filters[0].config: jwt.jwks.keys[0]: k: an HS256 secret must be at least 32 bytes"],
      [{ jwt: { jwks: { keys: [{ kty: "OKP", crv: "Ed25519", x: "AA" }] } } }, "routes[0].filters[0].config: jwt.jwks.keys[0]: kty: expected oct, RSA or EC"],
      [{ jwt: { jwks: { keys: [{ ...hsJwk, alg: "RS256" }] } } }, "routes[0].filters[0].config: jwt.jwks.keys[0]: alg RS256 does not fit kty oct"],
      [{ jwt: { jwks: keysConfig, forwardClaims: { sub: "authorization" } } }, "routes[0].filters[0].config: forwarded header authorization: the token is read from it"],
      [{ apiKeys: { keys: { a: "a-0123456789abcdef", b: "a-0123456789abcdef" } } }, 'routes[0].filters[0].config: apiKeys.keys: "a" and "b" have the same key'],
    ];
    for (const [config, want] of cases) expect(await h.reconfigure([config])).toEqual([want]);
    // The schema catches shapes before the filter runs.
    expect(await h.reconfigure([{ apiKeys: { keys: { a: "short" } } }])).toEqual(["routes[0].filters[0].config.apiKeys.keys: does not match any of the allowed shapes"]);
    expect(await h.reconfigure([{ jwt: { jwks: keysConfig, clockSkew: 5 } }])).toEqual(['routes[0].filters[0].config.jwt: unknown field "clockSkew"']);
    expect((await h.reconfigure([{ realm: 'a"b', apiKeys: { keys: { a: "a-0123456789abcdef" } } }]))[0]).toContain("config.realm: expected a string matching");
    // Nothing changed: the first config still runs.
    expect(h.request({ headers: { "x-api-key": "a-0123456789abcdef" } }).outcome.kind).toBe("continue");
  });

  test("refuses RSA keys under 2048 bits", async () => {
    // jose will not even make one; node:crypto will.
    const jwk = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" });
    const h = await load({ apiKeys: { keys: { a: "a-0123456789abcdef" } } });
    expect(await h.reconfigure([{ jwt: { jwks: { keys: [jwk] } } }])).toEqual(["routes[0].filters[0].config: jwt.jwks.keys[0]: n: RSA keys must have at least 2048 bits"]);
  });

  test("skips encryption keys in a key set", async () => {
    const h = await load({ jwt: { jwks: { keys: [{ ...rsaJwk, kid: "enc", use: "enc" }, ecJwk] } } });
    const t = await new jose.SignJWT({ exp: now() + 60 }).setProtectedHeader({ alg: "ES256" }).sign(ec.privateKey);
    expect(h.request({ headers: bearer(t) }).outcome.kind).toBe("continue"); // one signing key: no kid needed
  });
});

describe("remote JWKS", () => {
  /** A JWKS server on loopback whose document and status the test changes. */
  function jwksServer(initial: unknown) {
    const state = { doc: initial as unknown, status: 200, hits: 0, raw: null as string | null };
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch() {
        state.hits++;
        if (state.raw !== null) return new Response(state.raw, { status: state.status });
        return Response.json(state.doc, { status: state.status });
      },
    });
    return { state, url: `http://127.0.0.1:${server.port}/jwks.json`, stop: () => server.stop(true) };
  }
  async function eventually(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 5000) {
    const until = Date.now() + timeoutMs;
    while (!(await fn())) {
      if (Date.now() > until) throw new Error(`timed out waiting for: ${what}`);
      await Bun.sleep(20);
    }
  }
  const servers: { stop(): void }[] = [];
  afterAll(() => servers.forEach((s) => s.stop()));

  test("verifies with keys the host fetched, and picks up a rotated key on an unknown kid without a reload", async () => {
    const srv = jwksServer({ keys: [rsaJwk] });
    servers.push(srv);
    const h = await load({ jwt: { remoteJwks: [{ url: srv.url, refreshIntervalMs: 60_000, minRefreshIntervalMs: 200 }] } });
    const first = await mint("RS256");
    await eventually("the first document", () => h.request({ headers: bearer(first) }).outcome.kind === "continue");

    const next = await jose.generateKeyPair("ES256", { extractable: true });
    srv.state.doc = { keys: [{ ...(await jose.exportJWK(next.publicKey)), kid: "ec-2" }] };
    await Bun.sleep(250); // past the cooldown of the first fetch
    const rotated = await new jose.SignJWT({ exp: now() + 60 }).setProtectedHeader({ alg: "ES256", kid: "ec-2" }).sign(next.privateKey);
    const hits = srv.state.hits;
    // The request that meets the new kid asks for a refresh and is refused (nothing waits) ...
    expect(refusal(h.request({ headers: bearer(rotated) })).body.reason).toBe("unknown_kid");
    // ... a later one gets through.
    await eventually("the rotated key", () => h.request({ headers: bearer(rotated) }).outcome.kind === "continue");
    expect(srv.state.hits).toBe(hits + 1);
    expect(refusal(h.request({ headers: bearer(first) })).body.reason).toBe("unknown_kid");
    expect(h.metricsText()).toMatch(/mesh_filter_auth_jwks_refresh_requests_total\{filter="auth"\} [1-9]/);
  });

  test("rate-limits refreshes caused by unknown kids", async () => {
    const srv = jwksServer({ keys: [ecJwk] });
    servers.push(srv);
    const h = await load({ jwt: { remoteJwks: [{ url: srv.url, refreshIntervalMs: 60_000, minRefreshIntervalMs: 60_000 }] } });
    await eventually("the first document", () => h.request({ headers: bearer(craft({ alg: "ES256", kid: "ec-1" }, {})) }) && srv.state.hits >= 1);
    await Bun.sleep(50);
    for (let i = 0; i < 50; i++) h.request({ headers: bearer(craft({ alg: "ES256", kid: `random-${i}` }, {})) });
    await Bun.sleep(100);
    expect(srv.state.hits).toBe(1);
  });

  test("refreshes on its interval and keeps the last good keys while the server fails or serves garbage", async () => {
    const srv = jwksServer({ keys: [hsJwk] });
    servers.push(srv);
    const h = await load({ jwt: { remoteJwks: [{ url: srv.url, refreshIntervalMs: 100, minRefreshIntervalMs: 100 }] } });
    const t = await mint("HS256");
    await eventually("the first document", () => h.request({ headers: bearer(t) }).outcome.kind === "continue");
    srv.state.status = 500;
    const hits = srv.state.hits;
    await eventually("two failed refreshes", () => srv.state.hits >= hits + 2);
    expect(h.request({ headers: bearer(t) }).outcome.kind).toBe("continue");
    srv.state.status = 200;
    srv.state.raw = '{"keys": "nope"}';
    const more = srv.state.hits;
    await eventually("a refresh with a bad document", () => srv.state.hits >= more + 1);
    expect(h.request({ headers: bearer(t) }).outcome.kind).toBe("continue");
    expect(h.logs.some((l) => l.msg === "JWKS fetch failed; the previous keys stay in use")).toBe(true);
  });

  test("answers 401 until the first document arrives, then accepts", async () => {
    const srv = jwksServer({ keys: [rsaJwk] });
    servers.push(srv);
    srv.state.status = 503;
    const h = await load({ jwt: { remoteJwks: [{ url: srv.url, refreshIntervalMs: 60_000, minRefreshIntervalMs: 100 }] } });
    const t = await mint("RS256");
    await eventually("a failed first fetch", () => srv.state.hits >= 1);
    expect(refusal(h.request({ headers: bearer(t) })).body.reason).toBe("no_keys");
    srv.state.status = 200;
    await eventually("keys after the failure", () => h.request({ headers: bearer(t) }).outcome.kind === "continue");
  });

  test("skips unusable keys of a fetched key set, and keys past the 32nd, with a warning", async () => {
    const filler = Array.from({ length: 40 }, (_, i) => ({ kty: "oct", kid: `f${i}`, k: b64(new Uint8Array(32).fill(i)) }));
    const srv = jwksServer({ keys: [{ kty: "RSA", kid: "weak", n: "AQAB", e: "AQAB" }, ecJwk, ...filler] });
    servers.push(srv);
    const h = await load({ jwt: { remoteJwks: [{ url: srv.url }] } });
    const t = await mint("ES256");
    await eventually("the document", () => h.request({ headers: bearer(t) }).outcome.kind === "continue");
    const warnings = h.logs.filter((l) => l.level === "warn").map((l) => l.msg);
    expect(warnings).toContain(`auth: JWKS ${srv.url} keys[0] skipped: n: RSA keys must have at least 2048 bits`);
    expect(warnings).toContain(`auth: JWKS ${srv.url} has 42 keys: only the first 32 are used`);
    expect(h.request({ headers: bearer(craft({ alg: "HS256", kid: "f35" }, {})) }).outcome.kind).toBe("respond");
  });

  test("stops the host's refreshes of a URL that left the config, and of instances that are gone", async () => {
    const a = jwksServer({ keys: [hsJwk] });
    const b = jwksServer({ keys: [hsJwk] });
    servers.push(a, b);
    const watched = (url: string) => sharedJwks.status().filter((e) => e.url === url);
    let h: FilterHarness | null = await FilterHarness.load(wasm, { config: { jwt: { remoteJwks: [{ url: a.url, refreshIntervalMs: 100 }] } } });
    await eventually("the first fetch", () => a.state.hits >= 1);
    expect(watched(a.url)).toMatchObject([{ subscribers: 2 }]); // the live instance and its warm spare
    expect(await h.reconfigure([{ jwt: { remoteJwks: [{ url: b.url, refreshIntervalMs: 100 }] } }])).toEqual([]);
    expect(watched(a.url)).toEqual([]);
    expect(watched(b.url)).toMatchObject([{ subscribers: 2 }]);
    // Closing the harness retires the filter; its last instance goes with the garbage collector.
    await h.close();
    h = null;
    for (let i = 0; i < 40 && watched(b.url).length > 0; i++) {
      Bun.gc(true);
      await Bun.sleep(25);
    }
    expect(watched(b.url)).toEqual([]);
  });

  test("refuses a JWKS URL that is not http(s)", async () => {
    const h = await load({ apiKeys: { keys: { a: "a-0123456789abcdef" } } });
    expect(await h.reconfigure([{ jwt: { remoteJwks: [{ url: "file:///etc/passwd" }] } }])).toEqual([
      "routes[0].filters[0].config.jwt.remoteJwks[0].url: expected a string matching /^https?:///",
    ]);
  });
});
