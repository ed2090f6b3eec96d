// Every error the proxy makes: its status, its x-mesh-error code and its JSON body naming the route.
import { describe, expect, test } from "bun:test";
import net from "node:net";
import { closedPort, rawRequest, rawUpstream, simpleConfig, sleep, startInProcess, upstream } from "./harness.ts";

async function expectMeshError(res: Response, status: number, code: string, route: string | null) {
  expect(res.status).toBe(status);
  expect(res.headers.get("x-mesh-error")).toBe(code);
  expect(res.headers.get("content-type")).toBe("application/json");
  const body = (await res.json()) as { error: string; route: string | null; message: string; requestId: string };
  expect(body.error).toBe(code);
  expect(body.route).toBe(route);
  expect(body.message.length).toBeGreaterThan(0);
  expect(body.requestId.length).toBeGreaterThan(0);
  return body;
}

describe("errors", () => {
  test("404 no_route when no route matches", async () => {
    const up = upstream(() => new Response("ok"));
    const q = await startInProcess(simpleConfig(up.port).replace("cluster: up\n", "cluster: up\n    match: { path: { exact: /only } }\n"));
    try {
      await expectMeshError(await fetch(`${q.url}/other`), 404, "no_route", null);
      expect((await fetch(`${q.url}/only`)).status).toBe(200);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("503 upstream_refused when nothing listens on the endpoint", async () => {
    const q = await startInProcess(simpleConfig(await closedPort()));
    try {
      await expectMeshError(await fetch(`${q.url}/`), 503, "upstream_refused", "main");
      const metrics = await (await fetch(`http://127.0.0.1:${q.admin}/metrics`)).text();
      expect(metrics).toMatch(/mesh_upstream_connect_failures_total\{cluster="up",endpoint="127\.0\.0\.1:\d+"\} 1/);
    } finally {
      await q.stop();
    }
  });

  test("the route timeout ends at the response head: a small body that trickles in after it still arrives whole", async () => {
    const up = await rawUpstream((s) =>
      s.once("data", () => {
        s.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
        setTimeout(() => s.write("67890"), 700);
      }),
    );
    const q = await startInProcess(simpleConfig(up.port, { routeExtra: "    timeoutMs: 300" }));
    try {
      const t0 = performance.now();
      const res = await fetch(`${q.url}/`);
      expect(res.status).toBe(200);
      // The head is not held back until the body is complete.
      expect(performance.now() - t0).toBeLessThan(600);
      expect(await res.text()).toBe("1234567890");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("504 upstream_timeout when the upstream exceeds the route timeout", async () => {
    const up = upstream(async () => {
      await sleep(1500);
      return new Response("late");
    });
    const q = await startInProcess(simpleConfig(up.port, { routeExtra: "    timeoutMs: 200" }));
    try {
      const t0 = performance.now();
      await expectMeshError(await fetch(`${q.url}/`), 504, "upstream_timeout", "main");
      expect(performance.now() - t0).toBeLessThan(1200);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("502 upstream_reset when the upstream closes before answering", async () => {
    const up = await rawUpstream((s) => s.once("data", () => s.destroy()));
    const q = await startInProcess(simpleConfig(up.port));
    try {
      await expectMeshError(await fetch(`${q.url}/`), 502, "upstream_reset", "main");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("502 upstream_reset when the upstream dies in the middle of a small body (collected whole, nothing sent yet)", async () => {
    const up = await rawUpstream((s) =>
      s.once("data", () => {
        // Cut off at once: within the proxy's window for collecting a small body (5 ms).
        s.end("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + "x".repeat(1000));
      }),
    );
    const q = await startInProcess(simpleConfig(up.port));
    try {
      await expectMeshError(await fetch(`${q.url}/`), 502, "upstream_reset", "main");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("aborts the client stream when the upstream dies mid-body after the head was sent", async () => {
    const up = await rawUpstream((s) =>
      s.once("data", () => {
        s.write("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + "x".repeat(1000));
        setTimeout(() => s.destroy(), 50);
      }),
    );
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const raw = await rawRequest(q.port, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", 2000);
      expect(raw.startsWith("HTTP/1.1 200")).toBe(true);
      const body = raw.slice(raw.indexOf("\r\n\r\n") + 4);
      // Truncation must be visible: the connection closes before the promised 1000000 bytes arrive.
      expect(body.length).toBeLessThan(1000000);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("502 upstream_protocol_error when the upstream does not speak HTTP", async () => {
    const up = await rawUpstream((s) => s.once("data", () => s.end("SSH-2.0-OpenSSH_9.0\r\n\r\n")));
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const body = await expectMeshError(await fetch(`${q.url}/`), 502, "upstream_protocol_error", "main");
      // Another service's bytes are not echoed to the client (the access log has them).
      expect(body.message).not.toContain("SSH");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("413 when Content-Length is over the body limit, before anything reaches the upstream", async () => {
    let hits = 0;
    const up = upstream(() => (hits++, new Response("ok")));
    const q = await startInProcess(simpleConfig(up.port, { top: "limits: { maxRequestBodyBytes: 1000 }" }));
    try {
      await expectMeshError(await fetch(`${q.url}/`, { method: "POST", body: "x".repeat(1001) }), 413, "request_body_too_large", "main");
      expect(hits).toBe(0);
      expect((await fetch(`${q.url}/`, { method: "POST", body: "x".repeat(1000) })).status).toBe(200);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("413 when a chunked body grows over the limit", async () => {
    const up = upstream(async (req) => new Response(await req.text()));
    const q = await startInProcess(simpleConfig(up.port, { top: "limits: { maxRequestBodyBytes: 1000 }" }));
    try {
      const raw = await rawRequest(
        q.port,
        "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + "258\r\n" + "y".repeat(600) + "\r\n" + "258\r\n" + "y".repeat(600) + "\r\n0\r\n\r\n",
        1000,
      );
      expect(raw.startsWith("HTTP/1.1 413")).toBe(true);
      expect(raw).toContain("x-mesh-error: request_body_too_large");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("431 when request headers are over the limit", async () => {
    const up = upstream(() => new Response("ok"));
    const q = await startInProcess(simpleConfig(up.port, { top: "limits: { maxRequestHeaderBytes: 1024 }" }));
    try {
      await expectMeshError(await fetch(`${q.url}/`, { headers: { "x-big": "a".repeat(2000) } }), 431, "request_headers_too_large", null);
      expect((await fetch(`${q.url}/`, { headers: { "x-small": "a".repeat(100) } })).status).toBe(200);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("503 no_endpoint when the cluster is empty", async () => {
    const q = await startInProcess(`
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
routes: [{ name: r, cluster: empty }]
clusters: [{ name: empty, endpoints: [] }]
`);
    try {
      await expectMeshError(await fetch(`${q.url}/`), 503, "no_endpoint", "r");
    } finally {
      await q.stop();
    }
  });
});

describe("a client that leaves before its response", () => {
  /** An upstream that reads requests and never answers; says when the proxy closes its side. */
  async function silentUpstream() {
    let closed = false;
    let bytes = 0;
    const up = await rawUpstream((s) => {
      s.on("data", (d: Buffer) => (bytes += d.length));
      s.on("close", () => (closed = true));
      s.on("error", () => {});
    });
    return { ...up, closed: () => closed, bytes: () => bytes };
  }

  async function metrics(admin: number): Promise<string> {
    return (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  }

  async function until(check: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
    const deadline = performance.now() + ms;
    while (performance.now() < deadline) {
      if (await check()) return true;
      await sleep(20);
    }
    return check();
  }

  test("waiting for the upstream: the upstream request is cancelled and the request logged as 499 downstream_cancelled", async () => {
    const up = await silentUpstream();
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const c = net.connect(q.port, "127.0.0.1");
      await new Promise((r) => c.once("connect", r));
      c.write("GET /wait HTTP/1.1\r\nHost: t\r\n\r\n");
      expect(await until(() => up.bytes() > 0, 2000)).toBe(true);
      // A reset: a client that only half-closes (FIN) still gets its answer (listener.test.ts).
      c.resetAndDestroy();
      // The proxy closes its upstream connection (the response would go nowhere) well before the 15 s route timeout.
      expect(await until(() => up.closed(), 2000)).toBe(true);
      expect(await until(async () => (await metrics(q.admin)).includes('mesh_proxy_errors_total{code="downstream_cancelled"} 1'), 2000)).toBe(true);
      const m = await metrics(q.admin);
      expect(m).toContain('mesh_requests_total{route="main",cluster="up",code="499"} 1');
      expect(m).not.toContain("upstream_timeout");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("in the middle of its upload: 499 downstream_cancelled, not 400 bad_request", async () => {
    const up = await silentUpstream();
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const c = net.connect(q.port, "127.0.0.1");
      await new Promise((r) => c.once("connect", r));
      c.write("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nhello");
      expect(await until(() => up.bytes() > 0, 2000)).toBe(true);
      c.resetAndDestroy();
      expect(await until(async () => (await metrics(q.admin)).includes('mesh_proxy_errors_total{code="downstream_cancelled"} 1'), 2000)).toBe(true);
      const m = await metrics(q.admin);
      expect(m).toContain('code="499"} 1');
      expect(m).not.toContain('code="bad_request"');
      expect(await until(() => up.closed(), 2000)).toBe(true);
    } finally {
      await q.stop();
      up.stop();
    }
  });
});
