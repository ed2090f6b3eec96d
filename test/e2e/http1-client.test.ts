// The HTTP/1.1 upstream client against real sockets on 127.0.0.1: raw servers that say exactly what a test needs.
import { afterEach, describe, expect, test } from "bun:test";
import type { Socket as BunSocket, TCPSocketListener } from "bun";
import { ProxyError } from "../../runtime/errors.ts";
import type { Endpoint, HeaderList, UpstreamClient, UpstreamRequest } from "../../runtime/upstream/types.ts";
import { createHttp1Client, type Http1ClientOptions } from "../../runtime/upstream/http1/index.ts";
import { ChunkedDecoder } from "../../runtime/upstream/http1/response-parser.ts";

// ---------------------------------------------------------------------------------------------------
// A raw TCP server: every connection keeps what it received as a latin1 string, and a handler decides
// what to write back.

interface Conn {
  socket: BunSocket<Conn>;
  /** Everything received and not yet taken. */
  buf: string;
  /** Request heads taken so far on this connection. */
  heads: string[];
  closed: boolean;
  state: Record<string, unknown>;
}

interface RawServer {
  port: number;
  endpoint: Endpoint;
  conns: Conn[];
}

type OnData = (conn: Conn) => void;

const servers: TCPSocketListener<Conn>[] = [];
const clients: UpstreamClient[] = [];

afterEach(() => {
  for (const client of clients.splice(0)) client.close();
  for (const server of servers.splice(0)) server.stop(true);
});

function endpoint(port: number, host = "127.0.0.1"): Endpoint {
  return { host, port, key: `${host}:${port}`, weight: 1 };
}

function rawServer(onData: OnData): RawServer {
  const conns: Conn[] = [];
  const server = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { socket, buf: "", heads: [], closed: false, state: {} };
        conns.push(socket.data);
      },
      data(socket, data) {
        socket.data.buf += Buffer.from(data).toString("latin1");
        onData(socket.data);
      },
      close(socket) {
        socket.data.closed = true;
      },
    },
  });
  servers.push(server);
  return { port: server.port, endpoint: endpoint(server.port), conns };
}

/** Takes one request head (without a body) off conn.buf, or null if none is complete yet. */
function takeHead(conn: Conn): string | null {
  const end = conn.buf.indexOf("\r\n\r\n");
  if (end === -1) return null;
  const head = conn.buf.slice(0, end + 4);
  conn.buf = conn.buf.slice(end + 4);
  conn.heads.push(head);
  return head;
}

/** A server that answers every request head with `response(head, conn)`. */
function answering(response: (head: string, conn: Conn) => string | null): RawServer {
  return rawServer((conn) => {
    for (let head = takeHead(conn); head !== null; head = takeHead(conn)) {
      const out = response(head, conn);
      if (out !== null) conn.socket.write(out);
    }
  });
}

/** Most tests here exercise streamed bodies, so collecting small bodies whole is off unless a test turns it on. */
function client(opts: Http1ClientOptions = {}): UpstreamClient {
  const c = createHttp1Client({ collectBodyBytes: 0, ...opts });
  clients.push(c);
  return c;
}

function get(target = "/", headers: HeaderList = []): UpstreamRequest {
  return { method: "GET", target, headers, body: null, bodyLength: null };
}

const OPTS = { connectTimeoutMs: 2000 };

async function text(body: ReadableStream<Uint8Array> | null): Promise<string> {
  if (body === null) return "";
  return Buffer.from(await new Response(body).arrayBuffer()).toString("latin1");
}

async function rejection(p: Promise<unknown>): Promise<ProxyError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ProxyError);
    return err as ProxyError;
  }
  throw new Error("expected a rejection");
}

function streamOf(...parts: string[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    pull(controller) {
      const next = parts.shift();
      if (next === undefined) controller.close();
      else controller.enqueue(new Uint8Array(Buffer.from(next, "latin1")));
    },
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(5);
  }
}

const OK = (body: string, extra = "") => `HTTP/1.1 200 OK\r\n${extra}content-length: ${body.length}\r\n\r\n${body}`;

// ---------------------------------------------------------------------------------------------------

describe("responses", () => {
  test("collects a small Content-Length body whole and delivers it as a Blob, even when it arrives in pieces", async () => {
    const srv = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234");
      setTimeout(() => conn.socket.write("56789"), 30);
    });
    const res = await client({ collectBodyBytes: 1024, collectWindowMs: 2000 }).request(srv.endpoint, get(), OPTS);
    expect(res.blob).toBeDefined();
    expect(await res.blob!.text()).toBe("0123456789");
  });

  test("delivers the head of a small body that trickles once the collect window ends, and streams the rest", async () => {
    const srv = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234");
      setTimeout(() => conn.socket.write("56789"), 600);
    });
    const started = performance.now();
    // The request's timeout ends at the head: it must not cover the trickling body.
    const res = await client({ collectBodyBytes: 1024, collectWindowMs: 20 }).request(srv.endpoint, get(), { ...OPTS, timeoutMs: 300 });
    expect(performance.now() - started).toBeLessThan(300);
    expect(res.blob).toBeUndefined();
    expect(await text(res.body)).toBe("0123456789");
    expect(performance.now() - started).toBeGreaterThanOrEqual(550);
  });

  test("streams a body over the collect limit", async () => {
    const srv = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2048\r\n\r\n" + "y".repeat(1024));
      setTimeout(() => conn.socket.write("y".repeat(1024)), 30);
    });
    const res = await client({ collectBodyBytes: 1024 }).request(srv.endpoint, get(), OPTS);
    expect(res.blob).toBeUndefined();
    expect((await new Response(res.body).text()).length).toBe(2048);
  });

  test("rejects with upstream_reset when a body being collected is cut short", async () => {
    const srv = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n012");
      setTimeout(() => conn.socket.end(), 20);
    });
    const err = await client({ collectBodyBytes: 1024, collectWindowMs: 2000 }).request(srv.endpoint, get(), OPTS).catch((e) => e);
    expect(err).toBeInstanceOf(ProxyError);
    expect(err.code).toBe("upstream_reset");
  });

  test("reads a content-length body", async () => {
    const server = answering(() => OK("hello", "content-type: text/plain\r\n"));
    const res = await client().request(server.endpoint, get(), OPTS);
    expect(res.status).toBe(200);
    expect(res.statusText).toBe("OK");
    expect(res.headers).toEqual([["content-type", "text/plain"], ["content-length", "5"]]);
    expect(await text(res.body)).toBe("hello");
  });

  test("decodes a chunked body and hands over no chunk framing", async () => {
    const server = answering(
      () => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n",
    );
    const c = client();
    const res = await c.request(server.endpoint, get(), OPTS);
    expect(await text(res.body)).toBe("hello world");
    expect(c.idleConnections()).toBe(1);
  });

  test("parses a head and body the upstream writes one byte at a time", async () => {
    const wire = "HTTP/1.1 201 Created\r\nx-a: 1\r\nSet-Cookie: a=1\r\ncontent-length: 3\r\n\r\nabc";
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      void (async () => {
        for (const ch of wire) {
          conn.socket.write(ch);
          await sleep(1);
        }
      })();
    });
    const res = await client().request(server.endpoint, get(), OPTS);
    expect(res.status).toBe(201);
    expect(res.statusText).toBe("Created");
    expect(res.headers).toEqual([["x-a", "1"], ["set-cookie", "a=1"], ["content-length", "3"]]);
    expect(await text(res.body)).toBe("abc");
  });

  test("keeps several set-cookie headers apart and in wire order", async () => {
    const server = answering(() => OK("", "Set-Cookie: a=1; Path=/\r\nVary: x\r\nset-cookie: b=2, c=3\r\nSET-COOKIE: d=4\r\n"));
    const res = await client().request(server.endpoint, get(), OPTS);
    expect(res.headers.filter(([n]) => n === "set-cookie").map(([, v]) => v)).toEqual(["a=1; Path=/", "b=2, c=3", "d=4"]);
  });

  test("gives no body for HEAD, 204 and 304, and reuses the connection after each", async () => {
    const server = answering((head) => {
      if (head.startsWith("HEAD")) return "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
      if (head.includes("/204")) return "HTTP/1.1 204 No Content\r\n\r\n";
      if (head.includes("/304")) return "HTTP/1.1 304 Not Modified\r\ncontent-length: 100\r\n\r\n";
      return OK("after");
    });
    const c = client();
    const head = await c.request(server.endpoint, { ...get(), method: "HEAD" }, OPTS);
    expect(head.body).toBeNull();
    expect(head.headers).toEqual([["content-length", "100"]]);
    expect((await c.request(server.endpoint, get("/204"), OPTS)).body).toBeNull();
    expect((await c.request(server.endpoint, get("/304"), OPTS)).body).toBeNull();
    expect(await text((await c.request(server.endpoint, get("/"), OPTS)).body)).toBe("after");
    expect(server.conns.length).toBe(1);
  });

  test("reads an HTTP/1.0 body until close and does not pool that connection", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.0 200 OK\r\nx-a: 1\r\n\r\nuntil the end");
      conn.socket.end();
    });
    const c = client();
    const res = await c.request(server.endpoint, get(), OPTS);
    expect(await text(res.body)).toBe("until the end");
    expect(c.idleConnections()).toBe(0);
  });

  test("skips 103 Early Hints and returns the final response", async () => {
    const server = answering(() => "HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n" + OK("final"));
    const res = await client().request(server.endpoint, get(), OPTS);
    expect(res.status).toBe(200);
    expect(res.headers).toEqual([["content-length", "5"]]);
    expect(await text(res.body)).toBe("final");
  });

  test("resolves with the head before the body has arrived", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab");
      setTimeout(() => conn.socket.write("cd"), 300);
    });
    const started = Date.now();
    const res = await client().request(server.endpoint, get(), OPTS);
    expect(Date.now() - started).toBeLessThan(250);
    expect(await text(res.body)).toBe("abcd");
  });

  test("hands a body that came whole with its head over as a Blob, and as a stream on demand", async () => {
    const server = answering(() => OK("hello"));
    const res = await client().request(server.endpoint, get(), OPTS);
    expect(res.blob).toBeInstanceOf(Blob);
    expect(await res.blob!.text()).toBe("hello");
    expect(await text(res.body)).toBe("hello");
  });

  test("streams a body that is still coming, and reports its end once through onBodyEnd", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n");
      setTimeout(() => conn.socket.write("2\r\nde\r\n0\r\n\r\n"), 30);
    });
    const res = await client().request(server.endpoint, get(), OPTS);
    expect(res.blob).toBeUndefined();
    const ends: [number, unknown][] = [];
    res.onBodyEnd = (bytes, error) => ends.push([bytes, error]);
    expect(await text(res.body)).toBe("abcde");
    expect(ends).toEqual([[5, null]]);
  });

  test("reports a body cut off mid-way through onBodyEnd with the error", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc");
      setTimeout(() => conn.socket.end(), 30);
    });
    const res = await client().request(server.endpoint, get(), OPTS);
    const ends: [number, unknown][] = [];
    res.onBodyEnd = (bytes, error) => ends.push([bytes, error]);
    await rejection(text(res.body));
    expect(ends.length).toBe(1);
    expect(ends[0][0]).toBe(3);
    expect((ends[0][1] as ProxyError).code).toBe("upstream_reset");
  });

  test("reports a cancelled body through onBodyEnd", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) !== null) conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc");
    });
    const res = await client().request(server.endpoint, get(), OPTS);
    const ends: [number, unknown][] = [];
    res.onBodyEnd = (bytes, error) => ends.push([bytes, error]);
    await res.body!.cancel();
    expect(ends).toEqual([[3, "cancelled"]]);
  });

  test("connects to localhost by name", async () => {
    const server = answering(() => OK("local"));
    const res = await client().request(endpoint(server.port, "localhost"), get(), OPTS);
    expect(await text(res.body)).toBe("local");
  });
});

describe("requests", () => {
  test.each(["/a%2Fb", "/a%20b", "/a+b?x=1+2", "//double//slash", "/x/../y/./z", "/?q=a%26b&bad=%ZZ&e=%E2%82%AC"])(
    "sends target %s byte for byte",
    async (target) => {
      const server = answering(() => OK(""));
      await client().request(server.endpoint, get(target), OPTS);
      expect(server.conns[0].heads[0].split("\r\n")[0]).toBe(`GET ${target} HTTP/1.1`);
    },
  );

  test("sends headers in order, with host from the endpoint", async () => {
    const server = answering(() => OK(""));
    await client().request(server.endpoint, get("/", [["x-b", "2"], ["x-a", "1"], ["x-b", "3"]]), OPTS);
    expect(server.conns[0].heads[0]).toBe(`GET / HTTP/1.1\r\nx-b: 2\r\nx-a: 1\r\nx-b: 3\r\nhost: 127.0.0.1:${server.port}\r\n\r\n`);
  });

  test("sends a known-length body with content-length", async () => {
    const server = rawServer((conn) => {
      const head = conn.heads[0] ?? takeHead(conn);
      if (head !== null && conn.buf.length >= 11) conn.socket.write(OK(conn.buf));
    });
    const res = await client().request(
      server.endpoint,
      { method: "PUT", target: "/", headers: [], body: streamOf("hello", " ", "world"), bodyLength: 11 },
      OPTS,
    );
    expect(server.conns[0].heads[0]).toContain("content-length: 11\r\n");
    expect(await text(res.body)).toBe("hello world");
  });

  test("sends a body of unknown length chunked", async () => {
    const server = rawServer((conn) => {
      if (conn.heads.length === 0 && takeHead(conn) === null) return;
      if (conn.buf.endsWith("0\r\n\r\n")) conn.socket.write(OK("got it"));
    });
    const res = await client().request(
      server.endpoint,
      { method: "POST", target: "/up", headers: [["content-type", "text/plain"]], body: streamOf("first ", "", "second ", "third"), bodyLength: null },
      OPTS,
    );
    expect(await text(res.body)).toBe("got it");
    const conn = server.conns[0];
    expect(conn.heads[0]).toContain("transfer-encoding: chunked\r\n");
    expect(conn.heads[0]).not.toContain("content-length");
    const decoded: Uint8Array[] = [];
    const decoder = new ChunkedDecoder();
    decoder.push(new Uint8Array(Buffer.from(conn.buf, "latin1")), 0, { onBodyChunk: (c) => decoded.push(c) });
    expect(decoder.done).toBe(true);
    expect(Buffer.concat(decoded).toString()).toBe("first second third");
  });

  test("holds the body back for expect: 100-continue and skips the interim 100", async () => {
    const server = rawServer((conn) => {
      if (conn.heads.length === 0) {
        if (takeHead(conn) === null) return;
        // Nothing of the body may have come with the head; wait a little to be sure before saying 100.
        setTimeout(() => {
          conn.state.bodyBefore100 = conn.buf.length;
          conn.socket.write("HTTP/1.1 100 Continue\r\n\r\n");
        }, 50);
        return;
      }
      if (conn.buf.length >= 4) conn.socket.write(OK(`echo:${conn.buf}`));
    });
    const c = client({ expectContinueTimeoutMs: 5000 });
    const res = await c.request(
      server.endpoint,
      { method: "PUT", target: "/", headers: [["expect", "100-continue"]], body: streamOf("data"), bodyLength: 4 },
      OPTS,
    );
    expect(res.status).toBe(200);
    expect(await text(res.body)).toBe("echo:data");
    expect(server.conns[0].state.bodyBefore100).toBe(0);
    expect(c.idleConnections()).toBe(1);
  });

  test("sends the held-back body anyway when no 100 comes in time", async () => {
    const server = rawServer((conn) => {
      if (conn.heads.length === 0 && takeHead(conn) === null) return;
      if (conn.buf.length >= 4) conn.socket.write(OK(`echo:${conn.buf}`));
    });
    const res = await client({ expectContinueTimeoutMs: 50 }).request(
      server.endpoint,
      { method: "PUT", target: "/", headers: [["expect", "100-continue"]], body: streamOf("data"), bodyLength: 4 },
      OPTS,
    );
    expect(await text(res.body)).toBe("echo:data");
  });

  test("never sends the body when the upstream answers before 100 Continue, and drops that connection", async () => {
    const server = answering(() => "HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\n\r\n");
    const c = client({ expectContinueTimeoutMs: 5000 });
    let pulled = false;
    const body = new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          pulled = true;
          controller.enqueue(new Uint8Array(4));
          controller.close();
        },
      },
      { highWaterMark: 0 }, // pull only when someone reads
    );
    const res = await c.request(server.endpoint, { method: "PUT", target: "/", headers: [["expect", "100-continue"]], body, bodyLength: 4 }, OPTS);
    expect(res.status).toBe(417);
    await sleep(20);
    expect(server.conns[0].buf).toBe("");
    expect(pulled).toBe(false);
    expect(c.idleConnections()).toBe(0);
  });

  test("stops sending a body the upstream refused with connection: close", async () => {
    const server = rawServer((conn) => {
      if (conn.heads.length === 0 && takeHead(conn) !== null) {
        conn.socket.write("HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
      }
    });
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull: (controller) => controller.enqueue(new Uint8Array(1024)), // endless
      cancel: () => void (cancelled = true),
    });
    const c = client();
    const res = await c.request(server.endpoint, { method: "POST", target: "/", headers: [], body, bodyLength: null }, OPTS);
    expect(res.status).toBe(413);
    await until(() => cancelled);
    expect(c.idleConnections()).toBe(0);
  });
});

describe("connection reuse", () => {
  test("sends 10 sequential requests over one connection", async () => {
    const server = answering((head) => OK(head.split(" ")[1]));
    const c = client();
    for (let i = 0; i < 10; i++) {
      const res = await c.request(server.endpoint, get(`/${i}`), OPTS);
      expect(await text(res.body)).toBe(`/${i}`);
    }
    expect(server.conns.length).toBe(1);
    expect(server.conns[0].heads.length).toBe(10);
    expect(c.idleConnections()).toBe(1);
  });

  test("opens one connection per concurrent request and pools them all", async () => {
    const server = answering(() => OK("x"));
    const c = client();
    await Promise.all(Array.from({ length: 5 }, async () => text((await c.request(server.endpoint, get(), OPTS)).body)));
    expect(server.conns.length).toBe(5);
    expect(c.idleConnections()).toBe(5);
  });

  test("closes instead of pooling when the upstream says connection: close", async () => {
    const server = answering(() => OK("bye", "connection: close\r\n"));
    const c = client();
    await text((await c.request(server.endpoint, get(), OPTS)).body);
    await text((await c.request(server.endpoint, get(), OPTS)).body);
    expect(server.conns.length).toBe(2);
    expect(c.idleConnections()).toBe(0);
  });

  test("closes instead of pooling when the caller says connection: close", async () => {
    const server = answering(() => OK("x"));
    const c = client();
    await text((await c.request(server.endpoint, get("/", [["connection", "close"]]), OPTS)).body);
    expect(c.idleConnections()).toBe(0);
    await until(() => server.conns[0].closed);
  });

  test("does not pool a connection whose response was followed by stray bytes", async () => {
    const server = answering(() => OK("x") + "HTTP/1.1 200 OK\r\n");
    const c = client();
    await text((await c.request(server.endpoint, get(), OPTS)).body);
    expect(c.idleConnections()).toBe(0);
  });

  test("forgets a pooled connection the upstream closes while idle", async () => {
    const server = answering(() => OK("x"));
    const c = client();
    await text((await c.request(server.endpoint, get(), OPTS)).body);
    expect(c.idleConnections()).toBe(1);
    server.conns[0].socket.end();
    await until(() => c.idleConnections() === 0);
  });

  test("closes idle connections after the idle timeout", async () => {
    const server = answering(() => OK("x"));
    const c = client({ idleTimeoutMs: 50 });
    await text((await c.request(server.endpoint, get(), OPTS)).body);
    expect(c.idleConnections()).toBe(1);
    await until(() => server.conns[0].closed);
    expect(c.idleConnections()).toBe(0);
  });

  test("retries once on a fresh connection when the upstream closed a pooled one as the request went out", async () => {
    // First connection: answers one request, then hangs up on the next without a word, as a server
    // whose keep-alive timer fired at that moment would.
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      if (conn === server.conns[0] && conn.heads.length === 2) conn.socket.end();
      else conn.socket.write(OK(`conn${server.conns.indexOf(conn)}`));
    });
    const c = client();
    expect(await text((await c.request(server.endpoint, get(), OPTS)).body)).toBe("conn0");
    expect(await text((await c.request(server.endpoint, get(), OPTS)).body)).toBe("conn1");
    expect(server.conns.length).toBe(2);
  });

  test("does not resend a non-idempotent request on a fresh connection, even without a body", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      if (conn === server.conns[0] && conn.heads.length === 2) conn.socket.end();
      else conn.socket.write(OK(`conn${server.conns.indexOf(conn)}`));
    });
    const c = client();
    expect(await text((await c.request(server.endpoint, get(), OPTS)).body)).toBe("conn0");
    const err = await rejection(c.request(server.endpoint, { method: "POST", target: "/", headers: [], body: null, bodyLength: null }, OPTS));
    expect(err.code).toBe("upstream_reset");
    expect(server.conns.length).toBe(1);
  });

  test("does not retry when the request body was already being sent", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      if (conn.heads.length === 2) conn.socket.end();
      else conn.socket.write(OK("first"));
    });
    const c = client();
    await text((await c.request(server.endpoint, get(), OPTS)).body);
    const err = await rejection(
      c.request(server.endpoint, { method: "POST", target: "/", headers: [], body: streamOf("payload"), bodyLength: 7 }, OPTS),
    );
    expect(err.code).toBe("upstream_reset");
    expect(server.conns.length).toBe(1);
  });

  test("closes the connection when the consumer cancels the body", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\nsome of it");
    });
    const c = client();
    const res = await c.request(server.endpoint, get(), OPTS);
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    await until(() => server.conns[0].closed);
    expect(c.idleConnections()).toBe(0);
  });
});

describe("errors", () => {
  test("rejects upstream_refused, retryable, when nothing listens", async () => {
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    const err = await rejection(client().request(endpoint(port), get(), OPTS));
    expect(err.code).toBe("upstream_refused");
    expect(err.source).toBe("upstream");
    expect(err.retryable).toBe(true);
  });

  test("rejects upstream_refused when the name does not resolve", async () => {
    const err = await rejection(client().request(endpoint(80, "no-such-host.invalid"), get(), OPTS));
    expect(err.code).toBe("upstream_refused");
  });

  test("rejects upstream_connect_timeout, retryable, when the connect does not finish in time", async () => {
    // Loopback connects finish at once, so the socket layer is replaced by one that never answers.
    const c = client({ connect: () => new Promise(() => {}) });
    const started = Date.now();
    const err = await rejection(c.request(endpoint(9), get(), { connectTimeoutMs: 50 }));
    expect(err.code).toBe("upstream_connect_timeout");
    expect(err.retryable).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
  });

  test("closes a socket whose connect finished after the timeout", async () => {
    let destroyed = false;
    const late = { write: () => true, writeCopy: () => true, pause() {}, resume() {}, close() {}, destroy: () => void (destroyed = true) };
    const c = client({ connect: () => sleep(100).then(() => late) });
    await rejection(c.request(endpoint(9), get(), { connectTimeoutMs: 20 }));
    await until(() => destroyed);
  });

  test("rejects upstream_timeout when the signal fires while connecting", async () => {
    const c = client({ connect: () => new Promise(() => {}) });
    const err = await rejection(c.request(endpoint(9), get(), { connectTimeoutMs: 5000, signal: AbortSignal.timeout(30) }));
    expect(err.code).toBe("upstream_timeout");
  });

  test("rejects upstream_reset when the upstream resets before the head", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) !== null) conn.socket.terminate();
    });
    const err = await rejection(client().request(server.endpoint, get(), OPTS));
    expect(err.code).toBe("upstream_reset");
    expect(err.retryable).toBe(false);
  });

  test("rejects upstream_reset when the upstream closes in the middle of the head", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-le");
      conn.socket.end();
    });
    const err = await rejection(client().request(server.endpoint, get(), OPTS));
    expect(err.code).toBe("upstream_reset");
  });

  test("errors the body stream when the upstream closes in the middle of a content-length body", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b");
      setTimeout(() => conn.socket.end(), 20);
    });
    const res = await client().request(server.endpoint, get(), OPTS);
    const err = await rejection(text(res.body));
    expect(err.code).toBe("upstream_reset");
  });

  test("errors the body stream when the upstream resets in the middle of a chunked body", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n");
      setTimeout(() => conn.socket.terminate(), 20);
    });
    const res = await client().request(server.endpoint, get(), OPTS);
    const err = await rejection(text(res.body));
    expect(err.code).toBe("upstream_reset");
  });

  test("rejects upstream_timeout and closes the connection when the signal fires before the head", async () => {
    const server = rawServer((conn) => void takeHead(conn)); // never answers
    const err = await rejection(client().request(server.endpoint, get(), { connectTimeoutMs: 1000, signal: AbortSignal.timeout(50) }));
    expect(err.code).toBe("upstream_timeout");
    await until(() => server.conns[0].closed);
  });

  test("timeoutMs rejects upstream_timeout before the head, and the connection is closed", async () => {
    const server = rawServer((conn) => void takeHead(conn)); // never answers
    const started = Date.now();
    const err = await rejection(client().request(server.endpoint, get(), { connectTimeoutMs: 1000, timeoutMs: 60 }));
    expect(err.code).toBe("upstream_timeout");
    expect(Date.now() - started).toBeGreaterThanOrEqual(55);
    await until(() => server.conns[0].closed);
  });

  test("timeoutMs covers the connect too, and an outer signal still cancels", async () => {
    const hanging = client({ connect: () => new Promise(() => {}) });
    expect((await rejection(hanging.request(endpoint(9), get(), { connectTimeoutMs: 5000, timeoutMs: 30 }))).code).toBe("upstream_timeout");
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 20);
    const err = await rejection(hanging.request(endpoint(9), get(), { connectTimeoutMs: 5000, timeoutMs: 10_000, signal: controller.signal }));
    expect(err.code).toBe("upstream_timeout");
  });

  test("timeoutMs stops counting once the response is in: a later body is not cut", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n");
      setTimeout(() => conn.socket.write("0\r\n\r\n"), 120);
    });
    const res = await client().request(server.endpoint, get(), { connectTimeoutMs: 1000, timeoutMs: 50 });
    expect(await text(res.body)).toBe("abc");
  });

  test("rejects upstream_timeout at once for a signal that already fired", async () => {
    const server = answering(() => OK("x"));
    const err = await rejection(client().request(server.endpoint, get(), { connectTimeoutMs: 1000, signal: AbortSignal.abort() }));
    expect(err.code).toBe("upstream_timeout");
    expect(server.conns.length).toBe(0);
  });

  test("errors the body with upstream_timeout when the signal fires after the head", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) !== null) conn.socket.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc");
    });
    const controller = new AbortController();
    const res = await client().request(server.endpoint, get(), { connectTimeoutMs: 1000, signal: controller.signal });
    setTimeout(() => controller.abort(), 30);
    const err = await rejection(text(res.body));
    expect(err.code).toBe("upstream_timeout");
    await until(() => server.conns[0].closed);
  });

  test.each([
    ["garbage instead of a status line", "SSH-2.0-OpenSSH_9.6\r\n\r\n"],
    ["a broken header line", "HTTP/1.1 200 OK\r\nbroken header\r\n\r\n"],
    ["101 Switching Protocols", "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"],
    ["conflicting content-lengths", "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"],
    ["bare LF line ends", "HTTP/1.1 200 OK\ncontent-length: 2\n\nok"],
  ])("rejects upstream_protocol_error for %s", async (_, wire) => {
    const server = answering(() => wire);
    const err = await rejection(client().request(server.endpoint, get(), OPTS));
    expect(err.code).toBe("upstream_protocol_error");
  });

  test("rejects upstream_protocol_error for a response head over 64 KiB", async () => {
    const server = answering(() => `HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(70 * 1024)}\r\ncontent-length: 0\r\n\r\n`);
    const err = await rejection(client().request(server.endpoint, get(), OPTS));
    expect(err.code).toBe("upstream_protocol_error");
  });

  test("errors the body with upstream_protocol_error for broken chunk framing after the head", async () => {
    const server = rawServer((conn) => {
      if (takeHead(conn) === null) return;
      conn.socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n");
      setTimeout(() => conn.socket.write("5\r\nhello world\r\n0\r\n\r\n"), 30);
    });
    const res = await client().request(server.endpoint, get(), OPTS);
    const err = await rejection(text(res.body));
    expect(err.code).toBe("upstream_protocol_error");
    await until(() => server.conns[0].closed);
  });

  test("rejects upstream_protocol_error for broken chunk framing that came with the head", async () => {
    const server = answering(() => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello world\r\n0\r\n\r\n");
    const err = await rejection(client().request(server.endpoint, get(), OPTS));
    expect(err.code).toBe("upstream_protocol_error");
  });

  test("rejects a header value that would split the request, without sending anything", async () => {
    const server = answering(() => OK("x"));
    await expect(client().request(server.endpoint, get("/", [["x-a", "1\r\nx-evil: 1"]]), OPTS)).rejects.toBeInstanceOf(ProxyError);
    expect(server.conns.length).toBe(0);
  });

  test("rejects downstream bad_request when the request body stream fails", async () => {
    const server = rawServer((conn) => void takeHead(conn));
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(3));
        setTimeout(() => controller.error(new Error("client went away")), 20);
      },
    });
    const err = await rejection(client().request(server.endpoint, { method: "POST", target: "/", headers: [], body, bodyLength: null }, OPTS));
    expect(err.code).toBe("bad_request");
    expect(err.source).toBe("downstream");
    await until(() => server.conns[0].closed);
  });
});

describe("options", () => {
  test("refuses a bad option at creation, naming it", () => {
    expect(() => createHttp1Client({ maxIdlePerEndpoint: -1 })).toThrow(/maxIdlePerEndpoint/);
    expect(() => createHttp1Client({ idleTimeoutMs: 1.5 })).toThrow(/idleTimeoutMs/);
  });

  test("pools nothing with maxIdlePerEndpoint 0", async () => {
    const server = answering(() => OK("x"));
    const c = client({ maxIdlePerEndpoint: 0 });
    await text((await c.request(server.endpoint, get(), OPTS)).body);
    await text((await c.request(server.endpoint, get(), OPTS)).body);
    expect(server.conns.length).toBe(2);
  });
});
