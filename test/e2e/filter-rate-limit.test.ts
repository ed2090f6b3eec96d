// The rate-limit filter through a running proxy: exact counts under concurrency, keys, headers, refill.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http from "node:http";
import { SignJWT } from "jose";
import { buildStandardFilters, sleep, startInProcess, upstream, type InProcessProxy } from "./harness.ts";

const SECRET = new TextEncoder().encode("rate-limit-e2e-secret-of-32-bytes-or-more");
const token = (sub: string) =>
  new SignJWT({}).setProtectedHeader({ alg: "HS256", kid: "e2e" }).setSubject(sub).setExpirationTime("5m").sign(SECRET);

/** GET through the proxy from a given loopback source address (the whole 127/8 is local on Linux). */
function getFrom(localAddress: string, url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const r = http.request(url, { localAddress, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    r.on("error", reject);
    r.end();
  });
}

describe("rate-limit filter", () => {
  let hits = 0;
  let inFlight = 0;
  let peak = 0;
  const up = upstream(async (req) => {
    hits++;
    // /exact holds each request a moment, so the admitted ones overlap and the peak shows it.
    if (new URL(req.url).pathname === "/exact") {
      peak = Math.max(peak, ++inFlight);
      await sleep(50);
      inFlight--;
    }
    return new Response("ok");
  });
  let p: InProcessProxy;
  const get = (path: string, headers: Record<string, string> = {}) => fetch(`${p.url}${path}`, { headers });

  beforeAll(async () => {
    await buildStandardFilters("rate-limit", "auth");
    p = await startInProcess(`
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
filterDir: filters/dist
routes:
  - name: exact
    match: { path: { prefix: /exact } }
    cluster: up
    filters:
      - name: rate-limit
        config: { requestsPerUnit: 50, unit: hour }
  - name: by-key
    match: { path: { prefix: /by-key } }
    cluster: up
    filters:
      - name: rate-limit
        config: { rate: 0.001, burst: 2, key: { header: x-api-key } }
  - name: by-claim
    match: { path: { prefix: /by-claim } }
    cluster: up
    filters:
      - name: auth
        config:
          jwt:
            jwks: { keys: [{ kty: oct, kid: e2e, k: "${Buffer.from(SECRET).toString("base64url")}" }] }
            forwardClaims: { sub: x-user-id }
      - name: rate-limit
        config: { rate: 0.001, burst: 1, key: { claim: x-user-id } }
  - name: by-client
    match: { path: { prefix: /by-client } }
    cluster: up
    filters:
      - name: rate-limit
        config: { rate: 0.001, burst: 1, key: { clientAddress: true } }
  - name: refill
    match: { path: { prefix: /refill } }
    cluster: up
    filters:
      - name: rate-limit
        config: { rate: 5, burst: 1, responseHeaders: false }
clusters:
  - { name: up, endpoints: ["127.0.0.1:${up.port}"] }
`);
  });
  afterAll(async () => {
    await p.stop();
    up.stop();
  });

  test("lets exactly 50 of 200 concurrent requests through at a limit of 50", async () => {
    hits = 0;
    const responses = await Promise.all(
      Array.from({ length: 200 }, async () => {
        const r = await get("/exact");
        return { status: r.status, headers: r.headers, body: await r.text() };
      }),
    );
    const statuses = responses.map((r) => r.status);
    expect(statuses.filter((s) => s === 200).length).toBe(50);
    expect(statuses.filter((s) => s === 429).length).toBe(150);
    expect(hits).toBe(50);
    expect(peak).toBeGreaterThan(25); // they really were in flight together

    const limited = responses.find((r) => r.status === 429)!;
    expect(limited.headers.get("retry-after")).toBe("72"); // one token per 3600/50 s
    expect(limited.headers.get("ratelimit-limit")).toBe("50");
    expect(limited.headers.get("ratelimit-remaining")).toBe("0");
    expect(limited.headers.get("ratelimit-reset")).toBe("3600");
    expect(JSON.parse(limited.body)).toMatchObject({ error: "rate_limited", route: "exact" });
    for (const r of responses.filter((r) => r.status === 200)) {
      expect(r.headers.get("ratelimit-limit")).toBe("50");
      expect(Number(r.headers.get("ratelimit-remaining"))).toBeLessThan(50);
    }

    const metrics = await (await fetch(`http://127.0.0.1:${p.admin}/metrics`)).text();
    expect(metrics).toContain('mesh_filter_rate_limit_allowed_total{filter="rate-limit"} 50');
    expect(metrics).toContain('mesh_filter_rate_limit_limited_total{filter="rate-limit"} 150');
  });

  test("gives every value of the key header its own bucket", async () => {
    const seq = async (key: string, n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push((await get("/by-key", { "x-api-key": key })).status);
      return out;
    };
    expect(await seq("team-a", 3)).toEqual([200, 200, 429]);
    expect(await seq("team-b", 3)).toEqual([200, 200, 429]);
    const first = await get("/by-key", { "x-api-key": "team-c" });
    expect(first.headers.get("ratelimit-remaining")).toBe("1");
  });

  test("keys by a claim the auth filter forwards, which a client cannot forge", async () => {
    const alice = { authorization: `Bearer ${await token("alice")}` };
    const bob = { authorization: `Bearer ${await token("bob")}` };
    expect((await get("/by-claim", alice)).status).toBe(200);
    expect((await get("/by-claim", alice)).status).toBe(429);
    // auth drops the client's own x-user-id before it sets the verified one.
    expect((await get("/by-claim", { ...alice, "x-user-id": "carol" })).status).toBe(429);
    expect((await get("/by-claim", bob)).status).toBe(200);
    expect((await get("/by-claim")).status).toBe(401); // auth answers before rate-limit runs
  });

  test("keys by client address", async () => {
    const a = `${p.url}/by-client`;
    expect(await getFrom("127.0.0.2", a)).toBe(200);
    expect(await getFrom("127.0.0.2", a)).toBe(429);
    expect(await getFrom("127.0.0.3", a)).toBe(200);
  });

  test("refills at the configured rate", async () => {
    expect((await get("/refill")).status).toBe(200);
    const limited = await get("/refill");
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("1");
    await sleep(300); // a token every 200 ms
    const again = await get("/refill");
    expect(again.status).toBe(200);
    expect(again.headers.get("ratelimit-remaining")).toBeNull(); // responseHeaders: false
  });
});
