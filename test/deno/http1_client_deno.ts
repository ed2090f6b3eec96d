// The HTTP/1.1 upstream client on Deno: a chunked GET and connection reuse over Deno.connect.
// Run: deno test -A test/deno/http1_client_deno.ts
import { createHttp1Client } from "../../runtime/upstream/http1/index.ts";

function assertEquals(actual: unknown, expected: unknown): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`expected ${e}, got ${a}`);
}

/** A raw TCP server answering every request head with a chunked body; counts connections. */
function chunkedServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const state = { connections: 0, requests: 0 };
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const serve = async (conn: Deno.Conn) => {
    state.connections++;
    const buf = new Uint8Array(16 * 1024);
    let pending = "";
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        pending += decoder.decode(buf.subarray(0, n));
        for (let end = pending.indexOf("\r\n\r\n"); end !== -1; end = pending.indexOf("\r\n\r\n")) {
          const target = pending.slice(0, end).split(" ")[1];
          pending = pending.slice(end + 4);
          state.requests++;
          const wire = `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n` +
            `6\r\nhello \r\n${target.length.toString(16)};ext=1\r\n${target}\r\n0\r\n\r\n`;
          await conn.write(encoder.encode(wire));
        }
      }
    } catch {
      // The client closed; nothing to do.
    } finally {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    }
  };
  const done = (async () => {
    const conns: Promise<void>[] = [];
    try {
      for await (const conn of listener) conns.push(serve(conn));
    } catch {
      // Listener closed.
    }
    await Promise.all(conns);
  })();
  const port = (listener.addr as Deno.NetAddr).port;
  return {
    endpoint: { host: "127.0.0.1", port, key: `127.0.0.1:${port}`, weight: 1 },
    state,
    async close() {
      listener.close();
      await done;
    },
  };
}

Deno.test("GET with a chunked response, five times over one connection", async () => {
  const server = chunkedServer();
  const client = createHttp1Client();
  try {
    for (let i = 0; i < 5; i++) {
      const res = await client.request(
        server.endpoint,
        { method: "GET", target: `/item/${i}?x=%2F`, headers: [], body: null, bodyLength: null },
        { connectTimeoutMs: 1000 },
      );
      assertEquals(res.status, 200);
      assertEquals(res.headers.filter(([name]) => name === "set-cookie"), [["set-cookie", "a=1"], ["set-cookie", "b=2"]]);
      assertEquals(await new Response(res.body).text(), `hello /item/${i}?x=%2F`);
    }
    assertEquals(server.state.requests, 5);
    assertEquals(server.state.connections, 1);
    assertEquals(client.idleConnections(), 1);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("connection refused on Deno is upstream_refused", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const client = createHttp1Client();
  try {
    await client.request(
      { host: "127.0.0.1", port, key: `127.0.0.1:${port}`, weight: 1 },
      { method: "GET", target: "/", headers: [], body: null, bodyLength: null },
      { connectTimeoutMs: 1000 },
    );
    throw new Error("expected a rejection");
  } catch (err) {
    assertEquals((err as { code?: string }).code, "upstream_refused");
  } finally {
    client.close();
  }
});
