// Routing, rewrites, header mutations, weighted splits and load balancing through the proxy.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rawRequest, startInProcess, upstream, type InProcessProxy } from "./harness.ts";

function named(name: string) {
  return upstream(async (req) => {
    const url = req.url;
    const headers: Record<string, string> = {};
    req.headers.forEach((v, k) => (headers[k] = v));
    return Response.json({ name, target: url.slice(url.indexOf("/", url.indexOf("//") + 2)), headers }, { headers: { server: "upstream", "x-up": name } });
  });
}
type Seen = { name: string; target: string; headers: Record<string, string> };

describe("routing and load balancing", () => {
  const ups = { a: named("a"), b: named("b"), c: named("c") };
  let p: InProcessProxy;
  const get = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(`${p.url}${path}`, init);
    return { res, seen: (res.status === 200 ? await res.json() : await res.text()) as Seen };
  };

  beforeAll(async () => {
    p = await startInProcess(`
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
routes:
  - name: by-host
    match: { host: "*.tenant.test" }
    cluster: b
  - name: by-header
    match: { headers: [{ name: x-canary, exact: "1" }] }
    cluster: c
  - name: by-method
    match: { methods: [DELETE] }
    cluster: c
  - name: rewrite
    match: { path: { prefix: /api/v1/ } }
    rewrite: { prefix: /internal/ }
    requestHeaders: { set: { x-env: prod }, add: { x-via: mesh }, remove: [x-debug] }
    responseHeaders: { remove: [server], add: { x-route: rewrite } }
    cluster: a
  - name: split
    match: { path: { prefix: /split } }
    backends: [{ cluster: a, weight: 80 }, { cluster: b, weight: 20 }]
  - name: rr
    match: { path: { prefix: /rr } }
    cluster: ab
  - name: sticky
    match: { path: { prefix: /sticky } }
    cluster: ring
  - name: fallback
    cluster: a
clusters:
  - { name: a, endpoints: ["127.0.0.1:${ups.a.port}"] }
  - { name: b, endpoints: ["127.0.0.1:${ups.b.port}"] }
  - { name: c, endpoints: ["127.0.0.1:${ups.c.port}"] }
  - { name: ab, endpoints: ["127.0.0.1:${ups.a.port}", { address: "127.0.0.1:${ups.b.port}", weight: 3 }] }
  - name: ring
    endpoints: ["127.0.0.1:${ups.a.port}", "127.0.0.1:${ups.b.port}", "127.0.0.1:${ups.c.port}"]
    lb: { policy: ring_hash, hashOn: { header: x-user } }
`);
  });
  afterAll(async () => {
    await p.stop();
    for (const u of Object.values(ups)) u.stop();
  });

  test("routes by host, header and method before the fallback", async () => {
    expect((await get("/x", { headers: { host: "acme.tenant.test" } })).seen.name).toBe("b");
    expect((await get("/x", { headers: { "x-canary": "1" } })).seen.name).toBe("c");
    expect((await get("/x", { method: "DELETE" })).seen.name).toBe("c");
    expect((await get("/x")).seen.name).toBe("a");
  });

  test("resolves dot segments before routing, so a prefix route cannot be escaped with ..", async () => {
    // Raw bytes: fetch() would resolve the dots on the client side.
    for (const path of ["/split/../api/v1/users?q=1", "/x/%2e%2e/api/v1/users?q=1"]) {
      const out = await rawRequest(p.port, `GET ${path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n`);
      expect(out.startsWith("HTTP/1.1 200")).toBe(true);
      const seen = JSON.parse(out.slice(out.indexOf("\r\n\r\n") + 4)) as Seen;
      // The rewrite route matched the resolved path, and the upstream got the resolved path.
      expect(seen.target).toBe("/internal/users?q=1");
    }
  });

  test("refuses (400) a dot segment hidden behind an encoded slash or a backslash; an encoded slash alone passes", async () => {
    for (const path of ["/split%2f..%2fapi/v1/users", "/split\\..\\api/v1/users", "/split/x%5C..%5Cy"]) {
      const out = await rawRequest(p.port, `GET ${path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n`);
      expect(out.startsWith("HTTP/1.1 400")).toBe(true);
      expect(out.toLowerCase()).toContain("x-mesh-error: bad_request");
    }
    const out = await rawRequest(p.port, `GET /api/v1/a%2Fb HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n`);
    expect(out.startsWith("HTTP/1.1 200")).toBe(true);
  });

  test("rewrites the path prefix and keeps the query", async () => {
    expect((await get("/api/v1/users/7?full=1&x=%2F")).seen.target).toBe("/internal/users/7?full=1&x=%2F");
  });

  test("applies request and response header mutations", async () => {
    const { res, seen } = await get("/api/v1/h", { headers: { "x-debug": "1", "x-env": "dev", "x-via": "client" } });
    expect(seen.headers["x-env"]).toBe("prod");
    expect(seen.headers["x-via"]).toBe("client, mesh");
    expect(seen.headers["x-debug"]).toBeUndefined();
    expect(res.headers.get("server")).toBeNull();
    expect(res.headers.get("x-route")).toBe("rewrite");
    expect(res.headers.get("x-up")).toBe("a");
  });

  test("splits traffic by backend weight", async () => {
    const counts: Record<string, number> = { a: 0, b: 0 };
    for (let i = 0; i < 1000; i++) counts[(await get("/split")).seen.name]!++;
    // 80/20 over 1000: a binomial with sd ~12.6; allow about 4 sd.
    expect(counts.a).toBeGreaterThan(750);
    expect(counts.a).toBeLessThan(850);
  });

  test("round robin follows endpoint weights exactly", async () => {
    const counts: Record<string, number> = { a: 0, b: 0 };
    for (let i = 0; i < 40; i++) counts[(await get("/rr")).seen.name]!++;
    expect(counts).toEqual({ a: 10, b: 30 });
  });

  test("ring hash keeps a key on one endpoint and spreads keys", async () => {
    const byUser = new Map<string, string>();
    for (let u = 0; u < 30; u++) {
      const first = (await get("/sticky", { headers: { "x-user": `user-${u}` } })).seen.name;
      for (let i = 0; i < 3; i++) expect((await get("/sticky", { headers: { "x-user": `user-${u}` } })).seen.name).toBe(first);
      byUser.set(`user-${u}`, first);
    }
    expect(new Set(byUser.values()).size).toBe(3);
  });
});
