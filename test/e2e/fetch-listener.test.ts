// The fetch listener (MESHWASM_LISTENER=fetch: the phases behind a Hono app on Bun.serve) does the
// same job as the native one: the conversions in listener/fetch.ts, checked through real sockets.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildStandardFilters, echoUpstream, rawRequest, simpleConfig, startInProcess, upstream, type InProcessProxy } from "./harness.ts";

type Echo = { method: string; target: string; headers: [string, string][]; body: string };

describe("fetch listener", () => {
  const echo = echoUpstream();
  const cookies = upstream(() => {
    const h = new Headers();
    h.append("set-cookie", "a=1; Path=/");
    h.append("set-cookie", "b=2; Path=/");
    return new Response("ok", { headers: h });
  });
  let p: InProcessProxy;
  let c: InProcessProxy;
  beforeAll(async () => {
    p = await startInProcess(simpleConfig(echo.port, { top: "limits: { maxRequestHeaderBytes: 2048 }" }), { listener: "fetch" });
    c = await startInProcess(simpleConfig(cookies.port), { listener: "fetch" });
  });
  afterAll(async () => {
    await p.stop();
    await c.stop();
    echo.stop();
    cookies.stop();
  });

  test("a route's or a filter's header value above U+00FF goes as its UTF-8 bytes (fetch Headers take byte strings)", async () => {
    await buildStandardFilters("add-header");
    const q = await startInProcess(
      simpleConfig(echo.port, {
        top: "filterDir: filters/dist",
        routeExtra: '    responseHeaders: { set: { x-r: "\u20ac r" } }\n    filters:\n      - { name: add-header, config: { request: {}, response: { x-g: "\u03c0 \u20ac" } } }',
      }),
      { listener: "fetch" },
    );
    try {
      const raw = await rawRequest(q.port, "GET /u HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
      const utf8 = (t: string) => Buffer.from(t, "utf8").toString("latin1"); // rawRequest reads one char per byte
      expect(raw).toStartWith("HTTP/1.1 200 ");
      expect(raw).toContain(`x-g: ${utf8("\u03c0 \u20ac")}\r\n`);
      expect(raw).toContain(`x-r: ${utf8("\u20ac r")}\r\n`);
    } finally {
      await q.stop();
    }
  });

  test("MeshProxy reports the listener it runs", () => {
    expect(p.proxy.listenerKind).toBe("fetch");
  });

  test("forwards method, target, body and forwarding headers", async () => {
    const res = await fetch(`${p.url}/a/b?x=%2F&y=1&y=`, { method: "POST", body: "hello", headers: { "x-forwarded-for": "10.0.0.1" } });
    expect(res.status).toBe(200);
    const seen = (await res.json()) as Echo;
    expect(seen.method).toBe("POST");
    expect(seen.target).toBe("/a/b?x=%2F&y=1&y=");
    expect(seen.body).toBe("hello");
    const h = new Map(seen.headers);
    expect(h.get("x-forwarded-for")).toBe("10.0.0.1, 127.0.0.1");
    expect(h.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  test("keeps several Set-Cookie headers apart", async () => {
    const res = await fetch(`${c.url}/`);
    expect(res.headers.getSetCookie()).toEqual(["a=1; Path=/", "b=2; Path=/"]);
  });

  test("the proxy's own errors keep their JSON body and x-mesh-error", async () => {
    const out = await rawRequest(p.port, `GET / HTTP/1.1\r\nhost: t\r\nx-big: ${"a".repeat(4000)}\r\nconnection: close\r\n\r\n`);
    expect(out).toStartWith("HTTP/1.1 431");
    expect(out.toLowerCase()).toContain("x-mesh-error: request_headers_too_large");
    expect(out).toContain('"error":"request_headers_too_large"');
  });

  test("an HTTP/1.0 request without Host keeps its whole path", async () => {
    const out = await rawRequest(p.port, "GET /r/x?q=1 HTTP/1.0\r\n\r\n");
    expect(out).toMatch(/^HTTP\/1\.[01] 200/);
    expect(((JSON.parse(out.slice(out.indexOf("\r\n\r\n") + 4)) as Echo).target)).toBe("/r/x?q=1");
  });

  test("refuses what the runtime's server lets through: two Hosts, an unknown Expect", async () => {
    const send = (head: string) => rawRequest(p.port, `${head}\r\nconnection: close\r\n\r\n`);
    expect(await send("GET /x HTTP/1.1\r\nhost: a\r\nhost: b")).toStartWith("HTTP/1.1 400");
    const expectation = await send("GET /x HTTP/1.1\r\nhost: a\r\nexpect: foo");
    expect(expectation).toStartWith("HTTP/1.1 417");
    expect(expectation.toLowerCase()).toContain("x-mesh-error: expectation_failed");
  });

  test("HEAD has no body", async () => {
    const res = await fetch(`${p.url}/h`, { method: "HEAD" });
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBe(0);
  });
});
