import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../runtime/config/load.ts";

const ok = (yaml: string) => {
  const r = parseConfig(yaml);
  if (!r.ok) throw new Error(r.errors.join("\n"));
  return r.config;
};
const errors = (yaml: string) => {
  const r = parseConfig(yaml);
  if (r.ok) throw new Error("expected the config to be rejected");
  return r.errors;
};

const MINIMAL = `
routes: [{ name: r, cluster: c }]
clusters: [{ name: c, endpoints: ["127.0.0.1:9000"] }]
`;

describe("config", () => {
  test("fills defaults for a minimal config", () => {
    const c = ok(MINIMAL);
    expect(c.listeners).toEqual([{ name: "http", address: "0.0.0.0", port: 8080 }]);
    expect(c.admin).toEqual({ enabled: true, address: "127.0.0.1", port: 9901 });
    expect(c.routes[0]!.match.path).toEqual({ prefix: "/" });
    expect(c.routes[0]!.timeoutMs).toBe(15000);
    expect(c.routes[0]!.upgrades).toEqual(["websocket"]);
    expect(c.clusters[0]!.lb.policy).toBe("round_robin");
    expect(c.limits.maxRequestHeaderBytes).toBe(16384);
  });

  test("freezes the result so nothing can change a running config", () => {
    const c = ok(MINIMAL);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.routes[0]!.match)).toBe(true);
  });

  test("lists every error with the path of the field", () => {
    const e = errors(`
routes:
  - name: a
    match: { path: { prefix: "api" }, headers: [{ name: "x y", exact: "1" }] }
    cluster: c
  - name: b
    cluster: c
    match: { methods: [GETT] }
clusters:
  - name: c
    endpoints: ["127.0.0.1:99999"]
    bogus: 1
`);
    expect(e).toContain('routes[0].match.path.prefix: expected a string starting with "/"');
    expect(e).toContain("routes[0].match.headers[0].name: expected an HTTP header name (token characters only)");
    expect(e.some((x) => x.startsWith("routes[1].match.methods[0]: expected one of GET"))).toBe(true);
    expect(e).toContain("clusters[0].endpoints[0]: port must be between 1 and 65535");
    expect(e).toContain('clusters[0].bogus: unknown field "bogus"');
    expect(e.length).toBe(5);
  });

  test("rejects references to unknown clusters and duplicate names", () => {
    const e = errors(`
routes:
  - { name: a, cluster: nope }
  - { name: a, backends: [{ cluster: c, weight: 1 }, { cluster: gone }] }
clusters:
  - { name: c, endpoints: [] }
  - { name: c, endpoints: [] }
`);
    expect(e).toContain('routes[0].cluster: unknown cluster "nope"');
    expect(e).toContain('routes[1].name: duplicate route name "a" (also routes[0])');
    expect(e).toContain('routes[1].backends[1].cluster: unknown cluster "gone"');
    expect(e).toContain('clusters[1].name: duplicate cluster name "c" (also clusters[0])');
  });

  test("requires hashOn for ring_hash", () => {
    const e = errors(`
routes: [{ name: r, cluster: c }]
clusters: [{ name: c, endpoints: ["127.0.0.1:1"], lb: { policy: ring_hash } }]
`);
    expect(e).toEqual(["clusters[0]: lb.hashOn is required when lb.policy is ring_hash"]);
  });

  test("takes a route's upgrades as lower-case protocol tokens, [] included", () => {
    expect(ok(`
routes: [{ name: r, cluster: c, upgrades: [] }]
clusters: [{ name: c, endpoints: ["127.0.0.1:1"] }]
`).routes[0]!.upgrades).toEqual([]);
    const e = errors(`
routes: [{ name: r, cluster: c, upgrades: [websocket, WebSocket, "h2c x"] }]
clusters: [{ name: c, endpoints: ["127.0.0.1:1"] }]
`);
    expect(e).toEqual([
      "routes[0].upgrades[1]: expected a lower-case protocol token such as websocket",
      "routes[0].upgrades[2]: expected a lower-case protocol token such as websocket",
    ]);
  });

  test("requires a prefix match for a prefix rewrite", () => {
    const e = errors(`
routes: [{ name: r, cluster: c, match: { path: { exact: /x } }, rewrite: { prefix: / } }]
clusters: [{ name: c, endpoints: ["127.0.0.1:1"] }]
`);
    expect(e).toEqual(["routes[0].rewrite.prefix: a prefix rewrite needs a prefix path match"]);
  });

  test("rejects an invalid regex and a header match with two conditions", () => {
    const e = errors(`
routes: [{ name: r, cluster: c, match: { path: { regex: "(" }, headers: [{ name: x, exact: a, prefix: b }] } }]
clusters: [{ name: c, endpoints: ["127.0.0.1:1"] }]
`);
    expect(e).toContain("routes[0].match.path.regex: expected a valid regular expression");
    expect(e).toContain("routes[0].match.headers[0]: expected exactly one of exact, prefix, regex or present");
  });

  test("reports YAML syntax errors with their line", () => {
    const e = errors("routes: [a: b\n");
    expect(e[0]).toMatch(/^yaml: .*line 2/);
  });

  test("rejects a document that is not a mapping", () => {
    expect(errors("- 1\n- 2\n")).toEqual(["(root): expected a mapping with routes and clusters"]);
  });

  test("lower-cases header names in matches and mutations", () => {
    const c = ok(`
routes: [{ name: r, cluster: c, match: { headers: [{ name: X-Canary, exact: "1" }] }, requestHeaders: { set: { X-A: b } } }]
clusters: [{ name: c, endpoints: ["127.0.0.1:1"] }]
`);
    expect(c.routes[0]!.match.headers[0]!.name).toBe("x-canary");
    expect(c.routes[0]!.requestHeaders!.set).toEqual({ "x-a": "b" });
  });

  test("refuses header values with CR or LF (header injection)", () => {
    const e = errors(`
routes: [{ name: r, cluster: c, requestHeaders: { set: { x-a: "b\\r\\nx-evil: 1" } } }]
clusters: [{ name: c, endpoints: ["127.0.0.1:1"] }]
`);
    expect(e).toContain("routes[0].requestHeaders.set.x-a: header values cannot contain CR, LF or NUL");
  });
});
