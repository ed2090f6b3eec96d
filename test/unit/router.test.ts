import { describe, expect, test } from "bun:test";
import { parseConfig } from "../../runtime/config/load.ts";
import { Router, compileRoute, normalizeHost, type MatchInput } from "../../runtime/proxy/router.ts";

function router(routesYaml: string): Router<string> {
  const r = parseConfig(`routes:\n${routesYaml}\nclusters: [{ name: c, endpoints: ["127.0.0.1:1"] }]`);
  if (!r.ok) throw new Error(r.errors.join("\n"));
  return new Router(r.config.routes.map((x) => compileRoute(x, x.name)));
}
const req = (path: string, more: Partial<Omit<MatchInput, "header">> & { headers?: Record<string, string> } = {}): MatchInput => ({
  host: more.host ?? "example.com",
  path,
  method: more.method ?? "GET",
  header: (n) => more.headers?.[n] ?? null,
});

describe("router", () => {
  test("first matching route in config order wins", () => {
    const r = router(`
  - { name: specific, cluster: c, match: { path: { prefix: /api/v2 } } }
  - { name: api, cluster: c, match: { path: { prefix: /api } } }
  - { name: all, cluster: c }`);
    expect(r.match(req("/api/v2/x"))?.value).toBe("specific");
    expect(r.match(req("/api/v1"))?.value).toBe("api");
    expect(r.match(req("/other"))?.value).toBe("all");
  });

  test("exact, prefix and anchored regex paths", () => {
    const r = router(`
  - { name: exact, cluster: c, match: { path: { exact: /health } } }
  - { name: regex, cluster: c, match: { path: { regex: "/users/[0-9]+" } } }`);
    expect(r.match(req("/health"))?.value).toBe("exact");
    expect(r.match(req("/health/x"))).toBeNull();
    expect(r.match(req("/users/42"))?.value).toBe("regex");
    expect(r.match(req("/users/42/posts"))).toBeNull(); // the regex must match the whole path
    expect(r.match(req("/x/users/42"))).toBeNull();
  });

  test("hosts: exact, wildcard suffix, list; port and case ignored", () => {
    const r = router(`
  - { name: api, cluster: c, match: { host: api.example.com } }
  - { name: wild, cluster: c, match: { host: "*.example.com" } }
  - { name: list, cluster: c, match: { host: [a.test, b.test] } }`);
    expect(r.match(req("/", { host: normalizeHost("API.example.com:8080") }))?.value).toBe("api");
    expect(r.match(req("/", { host: "x.example.com" }))?.value).toBe("wild");
    expect(r.match(req("/", { host: "example.com" }))).toBeNull(); // "*.example.com" needs a label before
    expect(r.match(req("/", { host: "b.test" }))?.value).toBe("list");
    expect(normalizeHost("[::1]:8080")).toBe("[::1]");
    // A fully qualified name (trailing dot) is the same host.
    expect(r.match(req("/", { host: normalizeHost("api.example.com.") }))?.value).toBe("api");
    expect(r.match(req("/", { host: normalizeHost("api.example.com.:8080") }))?.value).toBe("api");
  });

  test("methods and headers: exact, prefix, regex, present, invert", () => {
    const r = router(`
  - { name: post, cluster: c, match: { methods: [POST] } }
  - { name: canary, cluster: c, match: { headers: [{ name: x-canary, exact: "1" }] } }
  - { name: bearer, cluster: c, match: { headers: [{ name: authorization, prefix: "Bearer " }] } }
  - { name: ver, cluster: c, match: { headers: [{ name: x-v, regex: "v[0-9]" }] } }
  - { name: nodebug, cluster: c, match: { headers: [{ name: x-debug, present: true, invert: true }] } }
  - { name: rest, cluster: c }`);
    expect(r.match(req("/", { method: "POST" }))?.value).toBe("post");
    expect(r.match(req("/", { headers: { "x-canary": "1" } }))?.value).toBe("canary");
    expect(r.match(req("/", { headers: { "x-canary": "2", authorization: "Bearer t" } }))?.value).toBe("bearer");
    expect(r.match(req("/", { headers: { "x-v": "v2" } }))?.value).toBe("ver");
    expect(r.match(req("/", { headers: { "x-v": "v22" } }))?.value).toBe("nodebug");
    expect(r.match(req("/", { headers: { "x-debug": "1" } }))?.value).toBe("rest");
  });

  test("answers null when nothing matches", () => {
    const r = router(`  - { name: a, cluster: c, match: { path: { exact: /a } } }`);
    expect(r.match(req("/b"))).toBeNull();
  });
});
