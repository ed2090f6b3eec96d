// The downstream HTTP/1.1 listener as a black box: bytes in, bytes out, who closes the socket and when.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { eachRequestHead, rawUpstream, simpleConfig, sleep, startInProcess, upstream, type InProcessProxy } from "./harness.ts";

interface Res {
  status: number;
  statusLine: string;
  /** Names lowercased, values trimmed, in wire order. */
  headers: [string, string][];
  /** Decoded: chunk framing removed. */
  body: string;
}

const headerValues = (r: Res, name: string) => r.headers.filter(([k]) => k === name).map(([, v]) => v);
const header = (r: Res, name: string) => (headerValues(r, name).length === 0 ? null : headerValues(r, name).join(", "));

/** One response from the front of `buf`, or null while more bytes are needed. */
function parseResponse(buf: string, opts: { bodiless: boolean; ended: boolean }): { res: Res; used: number } | null {
  const end = buf.indexOf("\r\n\r\n");
  if (end === -1) return null;
  const [statusLine = "", ...lines] = buf.slice(0, end).split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3}) /.exec(statusLine);
  if (!m) throw new Error(`not a status line: ${JSON.stringify(statusLine)} in ${JSON.stringify(buf.slice(0, 300))}`);
  const headers = lines.map((l): [string, string] => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]);
  const res: Res = { status: Number(m[1]), statusLine, headers, body: "" };
  let i = end + 4;
  if (opts.bodiless || res.status < 200 || res.status === 204 || res.status === 304) return { res, used: i };
  if (/chunked/i.test(header(res, "transfer-encoding") ?? "")) {
    for (;;) {
      const eol = buf.indexOf("\r\n", i);
      if (eol === -1) return null;
      const size = Number.parseInt(buf.slice(i, eol).split(";")[0]!.trim(), 16);
      if (Number.isNaN(size)) throw new Error(`bad chunk size line ${JSON.stringify(buf.slice(i, eol))}`);
      i = eol + 2;
      if (size === 0) {
        for (;;) {
          const e = buf.indexOf("\r\n", i);
          if (e === -1) return null;
          const trailer = buf.slice(i, e);
          i = e + 2;
          if (trailer === "") return { res, used: i };
        }
      }
      if (buf.length < i + size + 2) return null;
      if (buf.slice(i + size, i + size + 2) !== "\r\n") throw new Error("chunk data not followed by CRLF");
      res.body += buf.slice(i, i + size);
      i += size + 2;
    }
  }
  const length = header(res, "content-length");
  if (length !== null) {
    const n = Number(length);
    if (buf.length < i + n) return null;
    res.body = buf.slice(i, i + n);
    return { res, used: i + n };
  }
  if (!opts.ended) return null; // close-delimited
  res.body = buf.slice(i);
  return { res, used: buf.length };
}

/** A client socket that writes raw bytes, reads responses off the wire one at a time, and sees the server close. */
class Wire {
  /** Everything the server sent. */
  received = "";
  /** Received bytes not yet taken by response(). */
  pending = "";
  /** The server closed (FIN or reset). */
  closed = false;
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (d: Buffer) => {
      this.received += d.toString("latin1");
      this.pending += d.toString("latin1");
      this.wake();
    });
    socket.on("end", () => this.onClose());
    socket.on("close", () => this.onClose());
    socket.on("error", () => this.onClose()); // writes after the server closed: EPIPE, ECONNRESET
  }

  static open(port: number): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () => resolve(new Wire(s)));
      s.once("error", reject);
    });
  }

  private onClose() {
    this.closed = true;
    this.wake();
  }

  private wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves on the next data or close, or after `ms`. */
  private next(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => (clearTimeout(t), resolve()));
    });
  }

  write(data: string): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.from(data, "latin1"));
  }

  /** The next complete response; `bodiless` for the answer to a HEAD. */
  async response(opts: { bodiless?: boolean; timeoutMs?: number } = {}): Promise<Res> {
    const deadline = performance.now() + (opts.timeoutMs ?? 1500);
    for (;;) {
      const r = parseResponse(this.pending, { bodiless: opts.bodiless ?? false, ended: this.closed });
      if (r !== null) {
        this.pending = this.pending.slice(r.used);
        return r.res;
      }
      if (this.closed) throw new Error(`connection closed before a complete response; got ${JSON.stringify(this.pending.slice(0, 400))}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no complete response in time; got ${JSON.stringify(this.pending.slice(0, 400))}`);
      await this.next(left);
    }
  }

  /** Whether the server closes the connection within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    const deadline = performance.now() + ms;
    while (!this.closed && performance.now() < deadline) await this.next(deadline - performance.now());
    return this.closed;
  }

  /** Waits until at least `n` bytes arrived (or the server closed, or `ms` passed). */
  async receivedAtLeast(n: number, ms: number): Promise<void> {
    const deadline = performance.now() + ms;
    while (this.received.length < n && !this.closed && performance.now() < deadline) await this.next(deadline - performance.now());
  }

  destroy(): void {
    this.socket.destroy();
  }
}

async function withWire<T>(port: number, fn: (w: Wire) => Promise<T>): Promise<T> {
  const w = await Wire.open(port);
  try {
    return await fn(w);
  } finally {
    w.destroy();
  }
}

/** The proxy's own error: exact status line start, the code in x-mesh-error, a body that names it. */
function expectMeshError(r: Res, status: number, code: string) {
  expect(r.statusLine).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
  expect(header(r, "x-mesh-error")).toBe(code);
  expect(r.body).toContain(code);
}

/** A raw upstream that answers every request head it reads with `answer(requestLine, socket)`; it reads no bodies. */
async function scriptedUpstream(answer: (line: string, socket: net.Socket) => void) {
  const lines: string[] = [];
  const up = await rawUpstream((s) =>
    eachRequestHead(s, (head) => {
      const line = head.slice(0, head.indexOf("\r\n"));
      lines.push(line);
      answer(line, s);
    }),
  );
  return { ...up, lines };
}

const IMF_FIXDATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

type Echo = { method: string; target: string; body: string; host?: string | null };

describe("downstream HTTP/1.1 listener", () => {
  // Every request the shared upstream saw, as "METHOD target": requests the listener refuses must not appear.
  const seen: string[] = [];
  const echo = upstream(async (req) => {
    const url = new URL(req.url);
    const target = url.pathname + url.search;
    seen.push(`${req.method} ${target}`);
    if (url.pathname === "/slow") await sleep(200);
    const echo: Echo = { method: req.method, target, body: await req.text() };
    if (url.pathname === "/h") echo.host = req.headers.get("host"); // only where a test asks about Host
    return Response.json(echo);
  });
  let p: InProcessProxy;
  beforeAll(async () => {
    p = await startInProcess(simpleConfig(echo.port));
  });
  afterAll(async () => {
    await p.stop();
    echo.stop();
  });

  /** Sends `head`, expects the proxy's own error with `connection: close`, a closed socket and nothing upstream. */
  async function expectRefused(head: string, status: number, code: string) {
    const before = seen.length;
    await withWire(p.port, async (w) => {
      w.write(head);
      const r = await w.response();
      expectMeshError(r, status, code);
      expect(header(r, "connection")?.toLowerCase()).toBe("close");
      expect(await w.closedWithin(1000)).toBe(true);
    });
    expect(seen.length).toBe(before);
  }

  describe("request line", () => {
    for (const [what, head] of [
      ["a method with no target and no version", "GET\r\n\r\n"],
      ["a request line with a fourth field", "GET /x HTTP/1.1 extra\r\nHost: t\r\n\r\n"],
      ["a method with a character outside tchar", "G(T / HTTP/1.1\r\nHost: t\r\n\r\n"],
    ] as const) {
      test(`answers 400 bad_request and closes for ${what}`, () => expectRefused(head, 400, "bad_request"));
    }

    for (const version of ["HTTP/2.0", "HTTP/0.9", "HTTP/3.0"]) {
      test(`answers 505 http_version_not_supported and closes for ${version}`, () =>
        expectRefused(`GET / ${version}\r\nHost: t\r\n\r\n`, 505, "http_version_not_supported"));
    }

    test("accepts HTTP/1.2 as HTTP/1.1: proxied, and the connection stays open", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /minor HTTP/1.2\r\nHost: t\r\n\r\n");
        const r = await w.response();
        expect(r.statusLine).toMatch(/^HTTP\/1\.1 200 /);
        expect((JSON.parse(r.body) as Echo).target).toBe("/minor");
        expect(await w.closedWithin(200)).toBe(false);
      });
    });

    test("takes the Host of an absolute-form request from its target, not from the Host header", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET http://abs.example:81/h?x=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
        const echo = JSON.parse((await w.response()).body) as Echo;
        expect(echo.target).toBe("/h?x=1");
        expect(echo.host).toBe("abs.example:81");
      });
    });

    test("answers 400 for an absolute-form request with two Host headers or an invalid one, though its target names the host", async () => {
      await expectRefused("GET http://abs.example/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 400, "bad_request");
      await expectRefused("GET http://abs.example/ HTTP/1.1\r\nHost: b c\r\n\r\n", 400, "bad_request");
    });

    test("keeps Host when the client names it in Connection: routing and the upstream still see it", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /h HTTP/1.1\r\nHost: kept.example\r\nConnection: host\r\n\r\n");
        const echo = JSON.parse((await w.response()).body) as Echo;
        expect(echo.host).toBe("kept.example");
      });
    });

    test("answers 400 bad_request and closes for an absolute-form target with userinfo", () =>
      expectRefused("GET http://user:pw@abs.example/ HTTP/1.1\r\nHost: abs.example\r\n\r\n", 400, "bad_request"));

    test("answers 400 bad_request and closes for a target with a fragment", () =>
      expectRefused("GET /page#frag HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_request"));

    test("forwards an absolute-form target to the upstream in origin-form", async () => {
      const up = await scriptedUpstream((_, s) => s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
      const q = await startInProcess(simpleConfig(up.port));
      try {
        await withWire(q.port, async (w) => {
          w.write("GET http://example.test/p?q=1 HTTP/1.1\r\nHost: example.test\r\n\r\n");
          expect((await w.response()).status).toBe(200);
          w.write("GET http://example.test HTTP/1.1\r\nHost: example.test\r\n\r\n");
          expect((await w.response()).status).toBe(200);
        });
        expect(up.lines).toEqual(["GET /p?q=1 HTTP/1.1", "GET / HTTP/1.1"]);
      } finally {
        await q.stop();
        up.stop();
      }
    });
  });

  describe("header fields", () => {
    for (const [what, line] of [
      ["a header line without a colon", "NoColonHere"],
      ["a header name with a space in it", "Bad Name: x"],
      ["whitespace between the header name and the colon", "X-Name : x"],
      ["an obs-fold continuation line", "X-A: 1\r\n  continued"],
      ["a control character in a value", "X-A: a\x01b"],
    ] as const) {
      test(`answers 400 bad_request and closes for ${what}`, () => expectRefused(`GET / HTTP/1.1\r\nHost: t\r\n${line}\r\n\r\n`, 400, "bad_request"));
    }

    // Bare LF line ends: refused at once, not left to wait for a CRLFCRLF until the head timeout (408).
    for (const [what, head] of [
      ["every line", "GET /lf HTTP/1.1\nHost: t\n\n"],
      ["the request line", "GET /lf HTTP/1.1\nHost: t\r\n"],
      ["a header line, the head still incomplete", "GET /lf HTTP/1.1\r\nHost: t\nX-A: 1\r\n"],
    ] as const) {
      test(`answers 400 bad_request at once and closes for a bare LF ending ${what}`, () => expectRefused(head, 400, "bad_request"));
    }

    test("answers 400 bad_request for a bare LF in a head that arrives in two writes", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /lf HTTP/1.1\r\nHost: t\r\n");
        await sleep(50);
        w.write("X-A: 1\n\n");
        const r = await w.response();
        expectMeshError(r, 400, "bad_request");
        expect(r.body).toContain("bare LF");
      });
    });

    test("answers 400 bad_request to an HTTP/1.1 request without Host", async () => {
      const before = seen.length;
      await withWire(p.port, async (w) => {
        w.write("GET /nohost HTTP/1.1\r\n\r\n");
        expectMeshError(await w.response(), 400, "bad_request");
      });
      expect(seen.length).toBe(before);
    });

    test("answers 400 bad_request to an HTTP/1.1 request with two Host headers", async () => {
      const before = seen.length;
      await withWire(p.port, async (w) => {
        w.write("GET /twohosts HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n");
        expectMeshError(await w.response(), 400, "bad_request");
      });
      expect(seen.length).toBe(before);
    });

    test("proxies an HTTP/1.0 request without Host", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /ten HTTP/1.0\r\n\r\n");
        const r = await w.response();
        expect(r.status).toBe(200);
        expect((JSON.parse(r.body) as Echo).target).toBe("/ten");
      });
    });

    test("answers 414 uri_too_long and closes when the request line alone is over the limit, in one write or several", async () => {
      const q = await startInProcess(simpleConfig(echo.port, { top: "limits: { maxRequestHeaderBytes: 1024 }" }));
      try {
        for (const pieces of [[`GET /${"u".repeat(2000)} HTTP/1.1\r\nHost: t\r\n\r\n`], ["GET /", "u".repeat(600), "u".repeat(600)]]) {
          await withWire(q.port, async (w) => {
            for (const piece of pieces) {
              w.write(piece);
              await sleep(30);
            }
            const r = await w.response({ timeoutMs: 1000 });
            expectMeshError(r, 414, "uri_too_long");
            expect(await w.closedWithin(1000)).toBe(true);
          });
        }
      } finally {
        await q.stop();
      }
    });

    test("answers 431 request_headers_too_large and closes for a head that trickles in over the limit and never ends", async () => {
      const q = await startInProcess(simpleConfig(echo.port, { top: "limits: { maxRequestHeaderBytes: 1024 }" }));
      const before = seen.length;
      try {
        await withWire(q.port, async (w) => {
          // One header line that never gets its CRLF: a server waiting for the end of the line or head buffers forever.
          // ~630 bytes in three slow writes, then one write that takes the head to ~1630 bytes, whichever way
          // the head is counted; nothing after it, so no write can race the server's close into a reset.
          w.write("GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ");
          for (let i = 0; i < 3; i++) {
            w.write("a".repeat(200));
            await sleep(40);
          }
          w.write("b".repeat(1000));
          const r = await w.response({ timeoutMs: 1000 });
          expectMeshError(r, 431, "request_headers_too_large");
          expect(header(r, "connection")?.toLowerCase()).toBe("close");
          expect(await w.closedWithin(1000)).toBe(true);
        });
        expect(seen.length).toBe(before);
      } finally {
        await q.stop();
      }
    });
  });

  describe("request body framing", () => {
    test("answers 400 and closes when both Content-Length and Transfer-Encoding are present", () =>
      expectRefused("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "bad_request"));

    for (const [what, lines] of [
      ['"abc"', "Content-Length: abc"],
      ['"-1"', "Content-Length: -1"],
      ["two different values", "Content-Length: 5\r\nContent-Length: 6"],
    ] as const) {
      test(`answers 400 and closes for a Content-Length of ${what}`, () => expectRefused(`POST / HTTP/1.1\r\nHost: t\r\n${lines}\r\n\r\nhello`, 400, "bad_request"));
    }

    test("answers 400 and closes when the last transfer coding is not chunked (RFC 9112 6.3)", () =>
      expectRefused("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello", 400, "bad_request"));

    test("answers 400 and closes when chunked is applied twice, in one header or two", async () => {
      await expectRefused("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, "bad_request");
      await expectRefused("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request");
    });

    test("answers 501 unsupported_transfer_encoding and closes for a coding under chunked", () =>
      expectRefused("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, "unsupported_transfer_encoding"));

    for (const [when, pieces] of [
      ["in the same packet as the head", ["POST /bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"]],
      ["in a later packet", ["POST /bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "5\r\nworldXX\r\n"]],
    ] as const) {
      test(`a malformed chunked body ${when} gets 400 bad_request and a close, never a hang`, async () => {
        await withWire(p.port, async (w) => {
          for (const piece of pieces) {
            w.write(piece);
            await sleep(30);
          }
          const res = await w.response();
          expect(res.status).toBe(400);
          expect(header(res, "x-mesh-error")).toBe("bad_request");
          expect(await w.closedWithin(1000)).toBe(true);
        });
      });
    }

    test("passes a chunked body sent in pieces, with chunk extensions and a trailer, to the upstream intact, then serves the next request", async () => {
      await withWire(p.port, async (w) => {
        const pieces = [
          "POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
          "5;name=value\r\nhel", // a chunk split across writes
          "lo\r\n1", // a chunk-size line split across writes: 0x10
          '0;quoted="a b"\r\n0123456789abcdef\r\n',
          "A\r\nABCDEFGHIJ\r\n",
          "0\r\nX-Checksum: 42\r\n\r\n",
        ];
        for (const piece of pieces) {
          w.write(piece);
          await sleep(30);
        }
        const r = await w.response();
        expect(r.status).toBe(200);
        expect(JSON.parse(r.body) as Echo).toEqual({ method: "POST", target: "/chunked", body: "hello0123456789abcdefABCDEFGHIJ" });
        // The trailer was consumed: the next bytes are a new request, not garbage.
        w.write("GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
        const next = await w.response();
        expect(next.status).toBe(200);
        expect((JSON.parse(next.body) as Echo).target).toBe("/after");
      });
    });

    test("answers 417 expectation_failed to an unknown expectation, without asking the upstream", async () => {
      const before = seen.length;
      await withWire(p.port, async (w) => {
        w.write("GET /expect HTTP/1.1\r\nHost: t\r\nExpect: something\r\n\r\n");
        expectMeshError(await w.response(), 417, "expectation_failed");
      });
      expect(seen.length).toBe(before);
    });

    test("treats the 100-continue expectation case-insensitively: 100 Continue, then the final response", async () => {
      await withWire(p.port, async (w) => {
        w.write("POST /continue HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n");
        await w.receivedAtLeast("HTTP/1.1 100 Continue\r\n\r\n".length, 1000);
        expect(w.received).toBe("HTTP/1.1 100 Continue\r\n\r\n");
        w.write("hello");
        expect((await w.response()).status).toBe(100);
        const r = await w.response();
        expect(r.status).toBe(200);
        expect((JSON.parse(r.body) as Echo).body).toBe("hello");
      });
    });
  });

  describe("pipelining and keep-alive", () => {
    test("a client that half-closes after its requests (nc -N) still gets every answer, then the close", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\n\r\n");
        w.socket.end();
        expect((JSON.parse((await w.response()).body) as Echo).target).toBe("/one");
        expect((JSON.parse((await w.response()).body) as Echo).target).toBe("/two");
        expect(await w.closedWithin(1000)).toBe(true);
      });
    });

    test("a half-close in the middle of a request body fails that request and closes", async () => {
      await withWire(p.port, async (w) => {
        w.write("POST /cut HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly-ten-b");
        w.socket.end();
        expect(await w.closedWithin(1500)).toBe(true);
        expect(w.received).not.toContain("HTTP/1.1 200");
      });
    });

    test("answers three requests written in one write, in order, on that connection", async () => {
      await withWire(p.port, async (w) => {
        w.write(
          "GET /one HTTP/1.1\r\nHost: t\r\n\r\n" +
            "POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc" +
            "GET /three HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        const got: Echo[] = [];
        for (let i = 0; i < 3; i++) got.push(JSON.parse((await w.response()).body) as Echo);
        expect(got).toEqual([
          { method: "GET", target: "/one", body: "" },
          { method: "POST", target: "/two", body: "abc" },
          { method: "GET", target: "/three", body: "" },
        ]);
      });
    });

    test("answers a request that arrives while the previous response is still being made, after it", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
        await sleep(50);
        w.write("GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
        expect((JSON.parse((await w.response()).body) as Echo).target).toBe("/slow");
        expect((JSON.parse((await w.response()).body) as Echo).target).toBe("/fast");
      });
    });

    test("answers two sequential requests on one connection and keeps it open", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
        expect((JSON.parse((await w.response()).body) as Echo).target).toBe("/first");
        expect(await w.closedWithin(100)).toBe(false);
        w.write("GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
        expect((JSON.parse((await w.response()).body) as Echo).target).toBe("/second");
        expect(await w.closedWithin(100)).toBe(false);
      });
    });

    test("answers HTTP/1.1 Connection: close with connection: close and closes after the response", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        const r = await w.response();
        expect(r.status).toBe(200);
        expect(header(r, "connection")?.toLowerCase()).toBe("close");
        expect(await w.closedWithin(1000)).toBe(true);
        expect(w.pending).toBe("");
      });
    });

    test("closes an HTTP/1.0 connection after the response when the client did not ask for keep-alive", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /old HTTP/1.0\r\nHost: t\r\n\r\n");
        const r = await w.response();
        expect(r.status).toBe(200);
        expect(header(r, "connection")?.toLowerCase() ?? "close").toBe("close");
        expect(await w.closedWithin(1000)).toBe(true);
      });
    });

    test("answers an HTTP/1.0 request with Transfer-Encoding and then closes, keep-alive or not (RFC 9112 section 6.1)", async () => {
      await withWire(p.port, async (w) => {
        w.write("POST /old-chunked HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n");
        const r = await w.response();
        expect(r.status).toBe(200);
        expect((JSON.parse(r.body) as Echo).body).toBe("abc");
        expect(header(r, "connection")?.toLowerCase()).toBe("close");
        expect(await w.closedWithin(1000)).toBe(true);
      });
    });

    test("keeps an HTTP/1.0 connection open with Connection: keep-alive and says so", async () => {
      await withWire(p.port, async (w) => {
        w.write("GET /old1 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n");
        const r = await w.response();
        expect(r.status).toBe(200);
        expect(header(r, "connection")?.toLowerCase()).toBe("keep-alive");
        expect(header(r, "transfer-encoding")).toBeNull(); // an HTTP/1.0 client cannot decode chunked
        expect(await w.closedWithin(200)).toBe(false);
        w.write("GET /old2 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n");
        expect((JSON.parse((await w.response()).body) as Echo).target).toBe("/old2");
      });
    });
  });

  describe("response framing", () => {
    // /cl: a Content-Length body; /stream: chunked in two pieces; /cut-cl and /cut-chunked: the upstream dies mid-body.
    let up: Awaited<ReturnType<typeof scriptedUpstream>>;
    let q: InProcessProxy;
    beforeAll(async () => {
      up = await scriptedUpstream((line, s) => {
        const path = line.split(" ")[1];
        const head = line.startsWith("HEAD ");
        if (path === "/cl") s.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        else if (path === "/stream") {
          s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n");
          setTimeout(() => s.write("5\r\nworld\r\n0\r\n\r\n"), 30);
        } else if (path === "/head-cl" && head) s.write("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
        else if (path === "/head-te" && head) s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        else if (path === "/204") s.write("HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n");
        else if (path === "/304") s.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n');
        else if (path === "/with-date") s.write("HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok");
        else if (path === "/cut-cl") {
          // Over the proxy's collect limit, so the head goes out before the body is complete.
          s.write("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + "x".repeat(20_000));
          setTimeout(() => s.destroy(), 50);
        } else if (path === "/cut-chunked") {
          s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n");
          setTimeout(() => s.destroy(), 50);
        } else s.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter");
      });
      q = await startInProcess(simpleConfig(up.port));
    });
    afterAll(async () => {
      await q.stop();
      up.stop();
    });

    test("keeps the upstream's Content-Length and sends no chunk framing", async () => {
      await withWire(q.port, async (w) => {
        w.write("GET /cl HTTP/1.1\r\nHost: t\r\n\r\n");
        const r = await w.response();
        expect(header(r, "content-length")).toBe("5");
        expect(header(r, "transfer-encoding")).toBeNull();
        expect(r.body).toBe("hello");
      });
    });

    test("sends a body of unknown length chunked to an HTTP/1.1 client", async () => {
      await withWire(q.port, async (w) => {
        w.write("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
        const r = await w.response();
        expect(r.status).toBe(200);
        expect(header(r, "transfer-encoding")?.toLowerCase()).toBe("chunked");
        expect(header(r, "content-length")).toBeNull();
        expect(r.body).toBe("hello world");
        expect(await w.closedWithin(100)).toBe(false);
      });
    });

    test("sends a body of unknown length close-delimited to an HTTP/1.0 client, then closes", async () => {
      await withWire(q.port, async (w) => {
        w.write("GET /stream HTTP/1.0\r\nHost: t\r\n\r\n");
        expect(await w.closedWithin(1000)).toBe(true);
        const r = await w.response();
        expect(r.status).toBe(200);
        expect(header(r, "transfer-encoding")).toBeNull();
        expect(r.body).toBe("hello world"); // the raw bytes after the head: no chunk sizes, no terminator
      });
    });

    test("sends no body after a HEAD response head, so the next pipelined response parses", async () => {
      await withWire(q.port, async (w) => {
        w.write("HEAD /head-cl HTTP/1.1\r\nHost: t\r\n\r\nHEAD /head-te HTTP/1.1\r\nHost: t\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n");
        expect((await w.response({ bodiless: true })).status).toBe(200);
        expect((await w.response({ bodiless: true })).status).toBe(200);
        const r = await w.response();
        expect(r.statusLine).toMatch(/^HTTP\/1\.1 200 /);
        expect(r.body).toBe("after");
        await sleep(50);
        expect(w.pending).toBe("");
      });
    });

    test("sends 204 and 304 without body, Transfer-Encoding or (for 204) Content-Length, so the next pipelined response parses", async () => {
      await withWire(q.port, async (w) => {
        w.write('GET /204 HTTP/1.1\r\nHost: t\r\n\r\nGET /304 HTTP/1.1\r\nHost: t\r\nIf-None-Match: "v1"\r\n\r\nGET /after HTTP/1.1\r\nHost: t\r\n\r\n');
        const r204 = await w.response();
        expect(r204.status).toBe(204);
        expect(header(r204, "transfer-encoding")).toBeNull();
        expect(header(r204, "content-length")).toBeNull();
        const r304 = await w.response();
        expect(r304.status).toBe(304);
        expect(header(r304, "transfer-encoding")).toBeNull();
        const r = await w.response();
        expect(r.statusLine).toMatch(/^HTTP\/1\.1 200 /);
        expect(r.body).toBe("after");
      });
    });

    test("sends exactly one Date on every response: proxied with and without an upstream Date, and the proxy's own errors", async () => {
      const dates: string[][] = [];
      for (const head of ["GET /with-date HTTP/1.1\r\nHost: t\r\n\r\n", "GET /cl HTTP/1.1\r\nHost: t\r\n\r\n", "GET\r\n\r\n"]) {
        await withWire(q.port, async (w) => {
          w.write(head);
          dates.push(headerValues(await w.response(), "date"));
        });
      }
      expect(dates.map((d) => d.length)).toEqual([1, 1, 1]);
      for (const [d] of dates) expect(d).toMatch(IMF_FIXDATE);
    });

    test("closes the client connection at once, short of Content-Length, when the upstream dies mid-body", async () => {
      await withWire(q.port, async (w) => {
        w.write("GET /cut-cl HTTP/1.1\r\nHost: t\r\n\r\n");
        expect(await w.closedWithin(1000)).toBe(true);
        expect(w.received).toMatch(/^HTTP\/1\.1 200 /);
        expect(w.received.length - w.received.indexOf("\r\n\r\n") - 4).toBeLessThan(1_000_000);
      });
    });

    test("closes the client connection without the last chunk when a chunked upstream dies mid-body", async () => {
      await withWire(q.port, async (w) => {
        w.write("GET /cut-chunked HTTP/1.1\r\nHost: t\r\n\r\n");
        expect(await w.closedWithin(1000)).toBe(true);
        expect(w.received).toMatch(/^HTTP\/1\.1 200 /);
        expect(w.received.toLowerCase()).toContain("transfer-encoding: chunked");
        expect(w.received).toContain("0123456789");
        expect(w.received).not.toContain("\r\n0\r\n\r\n"); // the terminator would make the truncated body look complete
      });
    });
  });

  test("survives a client that disconnects mid-download, cancels the upstream, and serves the next request", async () => {
    let upstreamClosed = false;
    const up = await scriptedUpstream((line, s) => {
      if (!line.startsWith("GET /big ")) return void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      s.on("close", () => (upstreamClosed = true));
      s.write("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n");
      let sent = 0;
      const timer = setInterval(() => {
        if (s.destroyed || sent >= 1 << 20) return void clearInterval(timer);
        s.write("x".repeat(16 * 1024));
        sent += 16 * 1024;
      }, 10);
    });
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const w = await Wire.open(q.port);
      w.write("GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
      await w.receivedAtLeast(64 * 1024, 1000);
      expect(w.received.length).toBeGreaterThanOrEqual(64 * 1024);
      w.destroy();
      const t0 = performance.now();
      while (!upstreamClosed && performance.now() - t0 < 500) await sleep(10);
      expect(upstreamClosed).toBe(true);
      await withWire(q.port, async (w2) => {
        w2.write("GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
        const r = await w2.response();
        expect(r.status).toBe(200);
        expect(r.body).toBe("ok");
      });
    } finally {
      await q.stop();
      up.stop();
    }
  });

  describe("timeouts", () => {
    test("closes an idle keep-alive connection after limits.idleTimeoutMs", async () => {
      const q = await startInProcess(simpleConfig(echo.port, { top: "limits: { idleTimeoutMs: 300 }" }));
      try {
        await withWire(q.port, async (w) => {
          w.write("GET /idle HTTP/1.1\r\nHost: t\r\n\r\n");
          expect((await w.response()).status).toBe(200);
          expect(await w.closedWithin(100)).toBe(false);
          expect(await w.closedWithin(600)).toBe(true);
          expect(w.pending).toBe(""); // closed quietly: an idle close is not an error response
        });
      } finally {
        await q.stop();
      }
    });

    test("answers 408 request_timeout and closes when a head stays partial past limits.requestHeadersTimeoutMs", async () => {
      const q = await startInProcess(simpleConfig(echo.port, { top: "limits: { requestHeadersTimeoutMs: 1200 }" }));
      try {
        await withWire(q.port, async (w) => {
          // Half a sweep tick after the proxy started: a clock read at the last sweep is 150 ms old now.
          await sleep(150);
          const t0 = performance.now();
          w.write("GET / HTTP/1.1\r\nHost: t\r\n");
          const r = await w.response({ timeoutMs: 3000 });
          // Never before the configured time (the sweep's coarse clock, a tick of 300 ms here, once made it early).
          expect(performance.now() - t0).toBeGreaterThanOrEqual(1195);
          expectMeshError(r, 408, "request_timeout");
          expect(header(r, "connection")?.toLowerCase()).toBe("close");
          expect(await w.closedWithin(500)).toBe(true);
        });
      } finally {
        await q.stop();
      }
    });

    test("answers 408 request_timeout and closes when a request body stops arriving for limits.requestBodyTimeoutMs", async () => {
      const q = await startInProcess(simpleConfig(echo.port, { top: "limits: { requestBodyTimeoutMs: 300 }" }));
      try {
        await withWire(q.port, async (w) => {
          const t0 = performance.now();
          w.write("POST /stalled HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345");
          const r = await w.response({ timeoutMs: 3000 });
          expectMeshError(r, 408, "request_timeout");
          expect(performance.now() - t0).toBeGreaterThanOrEqual(295);
          expect(performance.now() - t0).toBeLessThan(2000);
          expect(header(r, "connection")?.toLowerCase()).toBe("close");
          expect(await w.closedWithin(1000)).toBe(true);
        });
      } finally {
        await q.stop();
      }
    });

    test("a slow upload whose bytes keep coming is not cut off by limits.requestBodyTimeoutMs", async () => {
      const q = await startInProcess(simpleConfig(echo.port, { top: "limits: { requestBodyTimeoutMs: 300 }" }));
      try {
        await withWire(q.port, async (w) => {
          w.write("POST /steady HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n");
          for (const c of "abcdefgh") {
            await sleep(120); // 960 ms in all, never 300 ms without a byte
            w.write(c);
          }
          const r = await w.response({ timeoutMs: 3000 });
          expect(r.status).toBe(200);
          expect((JSON.parse(r.body) as Echo).body).toBe("abcdefgh");
        });
      } finally {
        await q.stop();
      }
    });

    test("counts limits.requestHeadersTimeoutMs from the head's start, however often bytes trickle in", async () => {
      const q = await startInProcess(simpleConfig(echo.port, { top: "limits: { requestHeadersTimeoutMs: 300 }" }));
      try {
        await withWire(q.port, async (w) => {
          const t0 = performance.now();
          w.write("GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
          while (w.received === "" && !w.closed && performance.now() - t0 < 1200) {
            w.write("a");
            await sleep(50);
          }
          expect(performance.now() - t0).toBeLessThan(1000);
          expectMeshError(await w.response(), 408, "request_timeout");
        });
      } finally {
        await q.stop();
      }
    });
  });

  test("graceful shutdown finishes the request in flight, refuses new connections and closes idle ones", async () => {
    const slow = upstream(async (req) => {
      if (new URL(req.url).pathname === "/slow") await sleep(300);
      return new Response(new URL(req.url).pathname);
    });
    const q = await startInProcess(simpleConfig(slow.port));
    let stopped = false;
    const idle = await Wire.open(q.port);
    const busy = await Wire.open(q.port);
    try {
      idle.write("GET /first HTTP/1.1\r\nHost: t\r\n\r\n");
      expect((await idle.response()).body).toBe("/first");
      busy.write("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
      await sleep(50);
      const shutdown = q.proxy.shutdown(2000);
      stopped = true;
      await sleep(50);
      const fresh = await new Promise<string>((resolve) => {
        const s = net.connect(q.port, "127.0.0.1", () => (s.destroy(), resolve("accepted")));
        s.on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? "error"));
      });
      expect(fresh).toBe("ECONNREFUSED");
      const [idleClosed, r] = await Promise.all([idle.closedWithin(1000), busy.response()]);
      expect(idleClosed).toBe(true);
      expect(r.status).toBe(200);
      expect(r.body).toBe("/slow");
      expect(await shutdown).toEqual({ drained: true });
    } finally {
      idle.destroy();
      busy.destroy();
      if (!stopped) await q.stop();
      slow.stop();
    }
  });
});
