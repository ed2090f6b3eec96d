// The retries filter through the proxy's attempt loop, against scripted upstreams on real sockets.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { buildStandardFilters, closedPort, eachRequestHead, rawUpstream, simpleConfig, sleep, startInProcess, upstream, type InProcessProxy } from "./harness.ts";

beforeAll(async () => {
  // What `npm run build:filters` does for this one module, so the test never runs a stale build.
  await buildStandardFilters("retries");
});

const stops: (() => unknown)[] = [];
afterAll(async () => {
  for (const stop of stops.reverse()) await stop();
});

/** A proxy with one route whose chain is the retries filter with `config`; `endpoints` defaults to the upstream's port. */
async function proxyWith(config: Record<string, unknown>, endpoints: number[], routeExtra = ""): Promise<InProcessProxy> {
  const filter = `    filters:\n      - name: retries\n        config: ${JSON.stringify(config)}\n${routeExtra}`;
  let yaml = simpleConfig(endpoints[0]!, { top: "filterDir: filters/dist", routeExtra: filter });
  yaml = yaml.replace(/endpoints: \[.*\]/, `endpoints: [${endpoints.map((p) => `"127.0.0.1:${p}"`).join(", ")}]`);
  const q = await startInProcess(yaml);
  stops.push(() => q.stop());
  return q;
}

/** An upstream that answers with `script(n, req)` for its n-th request (from 1) and records what it saw. */
function scripted(script: (n: number, req: Request, body: string) => Response | Promise<Response>) {
  const seen: { attempt: string | null; method: string; body: string }[] = [];
  const up = upstream(async (req) => {
    const body = await req.text();
    seen.push({ attempt: req.headers.get("x-mesh-attempt"), method: req.method, body });
    return script(seen.length, req, body);
  });
  stops.push(() => up.stop());
  return { port: up.port, seen };
}

async function metric(q: InProcessProxy, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${q.admin}/metrics`)).text();
  const m = new RegExp(`^${name}\\{filter="retries"\\} (\\d+)`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

async function expectMeshError(res: Response, status: number, code: string) {
  expect(res.status).toBe(status);
  expect(res.headers.get("x-mesh-error")).toBe(code);
  expect(res.headers.get("content-type")).toBe("application/json");
  expect(((await res.json()) as { error: string }).error).toBe(code);
}

const fast = { backoff: { baseMs: 1, maxMs: 5 } };

/**
 * A raw keep-alive upstream: answers 200 until `resets` is set, then reads each request whole and
 * resets the connection, `resets` times; records each request's x-mesh-attempt and connection number.
 */
async function resetting() {
  const seen: { attempt: string; conn: number }[] = [];
  const state = { resets: 0 };
  let conns = 0;
  const up = await rawUpstream((s) => {
    const conn = ++conns;
    eachRequestHead(s, (head) => {
      seen.push({ attempt: /\r\nx-mesh-attempt: (\d+)/i.exec(head)?.[1] ?? "-", conn });
      if (state.resets > 0) {
        state.resets--;
        s.resetAndDestroy();
        return false;
      }
      s.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    });
  });
  stops.push(() => up.stop());
  return { port: up.port, seen, state };
}

describe("retries filter", () => {
  test("a reused connection the upstream resets counts as an attempt: at most maxAttempts requests, numbered 1, 2, 3", async () => {
    const up = await resetting();
    const q = await proxyWith({ maxAttempts: 3, ...fast }, [up.port]);
    for (let i = 0; i < 3; i++) expect(await (await fetch(`${q.url}/warm`)).text()).toBe("ok"); // a pooled connection
    up.seen.length = 0;
    up.state.resets = 100;
    await expectMeshError(await fetch(`${q.url}/x`), 502, "upstream_reset");
    expect(up.seen.map((s) => s.attempt)).toEqual(["1", "2", "3"]);
  });

  test("a keep-alive race the filter does not retry is still sent once more, on a fresh connection", async () => {
    const up = await resetting();
    // Retries only for 409: a reset is not the filter's to retry.
    const q = await proxyWith({ retryOn: ["retriable-status-codes"], statusCodes: [409], ...fast }, [up.port]);
    expect(await (await fetch(`${q.url}/warm`)).text()).toBe("ok");
    up.seen.length = 0;
    up.state.resets = 1;
    const res = await fetch(`${q.url}/x`);
    expect(res.status).toBe(200);
    expect(up.seen.map((s) => s.attempt)).toEqual(["1", "1"]);
    expect(up.seen[0]!.conn).not.toBe(up.seen[1]!.conn);
  });

  test("retries a GET that failed twice with 503: the client gets the 200, the upstream saw attempts 1, 2, 3", async () => {
    const up = scripted((n) => (n <= 2 ? new Response("busy", { status: 503 }) : new Response("ok")));
    const q = await proxyWith({ maxAttempts: 3, ...fast }, [up.port]);
    const res = await fetch(`${q.url}/items`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ok");
    expect(up.seen.map((s) => s.attempt)).toEqual(["1", "2", "3"]);
    expect(await metric(q, "mesh_filter_retries_total")).toBe(2);
  });

  test("retries a refused connection on one endpoint of a two-endpoint cluster on the other", async () => {
    const up = scripted(() => new Response("ok"));
    const q = await proxyWith({ retryOn: ["connect-failure"], ...fast }, [await closedPort(), up.port]);
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${q.url}/`);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe("ok");
    }
    // Round robin sends every first attempt that lands on the closed port to the live one next.
    const retries = await metric(q, "mesh_filter_retries_total");
    expect(retries).toBeGreaterThanOrEqual(1);
    expect(up.seen.length).toBe(4);
    expect(up.seen.filter((s) => s.attempt === "2").length).toBe(retries);
  });

  test("does not retry a POST unless retryNonIdempotent, and replays the body when it does", async () => {
    const up = scripted(() => new Response("busy", { status: 503 }));
    const plain = await proxyWith({ maxAttempts: 3, ...fast }, [up.port]);
    expect((await fetch(`${plain.url}/orders`, { method: "POST", body: "order-1" })).status).toBe(503);
    expect(up.seen).toEqual([{ attempt: "1", method: "POST", body: "order-1" }]);

    up.seen.length = 0;
    const opted = await proxyWith({ maxAttempts: 3, retryNonIdempotent: true, ...fast }, [up.port]);
    expect((await fetch(`${opted.url}/orders`, { method: "POST", body: "order-2" })).status).toBe(503);
    expect(up.seen).toEqual([1, 2, 3].map((n) => ({ attempt: String(n), method: "POST", body: "order-2" })));
  });

  test("does not retry a body larger than maxBodyBytes", async () => {
    const up = scripted(() => new Response("busy", { status: 503 }));
    const q = await proxyWith({ retryNonIdempotent: true, maxBodyBytes: 8, ...fast }, [up.port]);
    expect((await fetch(`${q.url}/`, { method: "PUT", body: "123456789" })).status).toBe(503);
    expect(up.seen.length).toBe(1);
    expect((await fetch(`${q.url}/`, { method: "PUT", body: "12345678" })).status).toBe(503);
    expect(up.seen.map((s) => s.body)).toEqual(["123456789", "12345678", "12345678"]);
  });

  test("does not retry a body of unknown length (chunked)", async () => {
    const up = scripted(() => new Response("busy", { status: 503 }));
    const q = await proxyWith({ retryNonIdempotent: true, ...fast }, [up.port]);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode("streamed"));
        c.close();
      },
    });
    const res = await fetch(`${q.url}/`, { method: "PUT", body, duplex: "half" } as RequestInit);
    expect(res.status).toBe(503);
    expect(up.seen).toEqual([{ attempt: "1", method: "PUT", body: "streamed" }]);
  });

  test("when attempts run out the client gets the last upstream response", async () => {
    const up = scripted((n) => new Response(`attempt ${n}`, { status: 503, headers: { "x-upstream-attempt": String(n) } }));
    const q = await proxyWith({ maxAttempts: 3, ...fast }, [up.port]);
    const res = await fetch(`${q.url}/`);
    expect(res.status).toBe(503);
    expect(res.headers.get("x-upstream-attempt")).toBe("3");
    expect(res.headers.get("x-mesh-error")).toBeNull();
    expect(await res.text()).toBe("attempt 3");
  });

  test("a per-try timeout ends a slow attempt and the retry answers", async () => {
    const up = scripted(async (n) => {
      if (n === 1) await sleep(1500);
      return new Response(`answer ${n}`);
    });
    const q = await proxyWith({ perTryTimeoutMs: 200, ...fast }, [up.port]);
    const t0 = performance.now();
    const res = await fetch(`${q.url}/`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("answer 2");
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(up.seen.map((s) => s.attempt)).toEqual(["1", "2"]);
  });

  test("answers the proxy's 503 JSON error when no attempt ever connects", async () => {
    const q = await proxyWith({ retryOn: ["connect-failure"], maxAttempts: 3, ...fast }, [await closedPort()]);
    await expectMeshError(await fetch(`${q.url}/`), 503, "upstream_refused");
    expect(await metric(q, "mesh_filter_retries_total")).toBe(2);
  });

  test("answers the proxy's 504 JSON error when every attempt times out", async () => {
    const up = scripted(async () => {
      await sleep(2000);
      return new Response("late");
    });
    const q = await proxyWith({ perTryTimeoutMs: 150, maxAttempts: 2, ...fast }, [up.port]);
    const t0 = performance.now();
    await expectMeshError(await fetch(`${q.url}/`), 504, "upstream_timeout");
    expect(performance.now() - t0).toBeLessThan(1500);
    expect(up.seen.map((s) => s.attempt)).toEqual(["1", "2"]);
  });

  test("the retry budget stops retries during a total outage: about 20 for 100 requests, not 100", async () => {
    const up = scripted(() => new Response("down", { status: 503 }));
    const q = await proxyWith({ maxAttempts: 3, backoff: { baseMs: 0, maxMs: 0 }, budget: { percent: 20, minRetriesPerSecond: 0 } }, [up.port]);
    for (let i = 0; i < 100; i++) expect((await fetch(`${q.url}/`)).status).toBe(503);
    const retries = up.seen.length - 100;
    expect(retries).toBeGreaterThanOrEqual(15);
    expect(retries).toBeLessThanOrEqual(21);
    expect(await metric(q, "mesh_filter_retries_total")).toBe(retries);
    expect(await metric(q, "mesh_filter_retry_budget_exhausted_total")).toBeGreaterThanOrEqual(100 - retries);
  });
});
