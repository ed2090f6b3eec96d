import { describe, expect, test } from "bun:test";
import {
  ChunkedDecoder,
  CloseDecoder,
  HeadReader,
  LengthDecoder,
  ParseError,
  parseResponseHead,
  type BodyDecoder,
} from "../../runtime/upstream/http1/response-parser.ts";
import { parseRequestHead } from "../../runtime/listener/http1/request-parser.ts";

const enc = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));

/** Feeds `wire` to a decoder in pieces of `step` bytes; returns the body and where the body ended. */
function decode(decoder: BodyDecoder, wire: string, step = wire.length): { body: string; rest: string } {
  const bytes = enc(wire);
  const parts: Uint8Array[] = [];
  const sink = { onBodyChunk: (c: Uint8Array) => parts.push(c.slice()) };
  for (let at = 0; at < bytes.length; at += step) {
    const chunk = bytes.subarray(at, Math.min(at + step, bytes.length));
    const end = decoder.push(chunk, 0, sink);
    if (decoder.done) {
      return { body: Buffer.concat(parts).toString("latin1"), rest: Buffer.from(chunk.subarray(end)).toString("latin1") + wire.slice(at + chunk.length) };
    }
  }
  return { body: Buffer.concat(parts).toString("latin1"), rest: "" };
}

describe("HeadReader", () => {
  const head = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n";

  test("finds a head inside one chunk and says where the body starts", () => {
    const reader = new HeadReader(1024);
    const chunk = enc(head + "abc");
    expect(reader.push(chunk, 0)).toBe(head);
    expect(reader.end).toBe(head.length);
  });

  test("assembles a head that arrives one byte at a time", () => {
    const reader = new HeadReader(1024);
    const bytes = enc(head + "abc");
    let text: string | null = null;
    let i = 0;
    for (; i < bytes.length && text === null; i++) text = reader.push(bytes.subarray(i, i + 1), 0);
    expect(text).toBe(head);
    expect(i).toBe(head.length);
    expect(reader.end).toBe(1);
  });

  test("finds the end when CRLFCRLF straddles two chunks, with the body in the second", () => {
    const reader = new HeadReader(1024);
    const cut = head.length - 2;
    expect(reader.push(enc(head.slice(0, cut)), 0)).toBeNull();
    const second = enc(head.slice(cut) + "abc");
    expect(reader.push(second, 0)).toBe(head);
    expect(reader.end).toBe(2);
  });

  test("starts at an offset, as after an interim response", () => {
    const reader = new HeadReader(1024);
    const interim = "HTTP/1.1 100 Continue\r\n\r\n";
    const chunk = enc(interim + head);
    expect(reader.push(chunk, 0)).toBe(interim);
    expect(reader.push(chunk, reader.end)).toBe(head);
    expect(reader.end).toBe(chunk.length);
  });

  test("rejects a head over the limit, whole or in pieces", () => {
    const big = "HTTP/1.1 200 OK\r\nx-big: " + "a".repeat(2000) + "\r\n\r\n";
    expect(() => new HeadReader(1024).push(enc(big), 0)).toThrow(ParseError);
    const reader = new HeadReader(1024);
    const bytes = enc(big);
    expect(() => {
      for (let i = 0; i < bytes.length; i += 100) reader.push(bytes.subarray(i, i + 100), 0);
    }).toThrow(/larger than 1024/);
  });
});

describe("parseResponseHead", () => {
  test("lower-cases names and keeps duplicates in wire order", () => {
    const head = parseResponseHead(
      "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nContent-Type: text/plain\r\nset-cookie: b=2\r\nX-Empty:\r\n\r\n",
    );
    expect(head.status).toBe(200);
    expect(head.statusText).toBe("OK");
    expect(head.minor).toBe(1);
    expect(head.headers).toEqual([
      ["set-cookie", "a=1; Path=/"],
      ["content-type", "text/plain"],
      ["set-cookie", "b=2"],
      ["x-empty", ""],
    ]);
  });

  test("trims spaces and tabs around values but keeps inner ones", () => {
    const head = parseResponseHead("HTTP/1.1 200 OK\r\nx-a: \t one  two \t\r\n\r\n");
    expect(head.headers).toEqual([["x-a", "one  two"]]);
  });

  test("keeps bytes above 0x7f as latin1 chars so they go back out unchanged", () => {
    const head = parseResponseHead("HTTP/1.1 200 OK\r\nx-a: caf\xc3\xa9\r\n\r\n");
    expect(head.headers[0][1]).toBe("caf\xc3\xa9");
  });

  test("accepts a missing or empty reason phrase and HTTP/1.0", () => {
    expect(parseResponseHead("HTTP/1.1 204\r\n\r\n").statusText).toBe("");
    expect(parseResponseHead("HTTP/1.1 204 \r\n\r\n").statusText).toBe("");
    const old = parseResponseHead("HTTP/1.0 200 Fine Thanks\r\n\r\n");
    expect(old.minor).toBe(0);
    expect(old.statusText).toBe("Fine Thanks");
  });

  test("reads framing: content-length, repeated identical lengths, transfer-encoding, connection", () => {
    expect(parseResponseHead("HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n").contentLength).toBe(42);
    expect(parseResponseHead("HTTP/1.1 200 OK\r\ncontent-length: 42, 42\r\ncontent-length: 42\r\n\r\n").contentLength).toBe(42);
    expect(parseResponseHead("HTTP/1.1 200 OK\r\n\r\n").contentLength).toBe(-1);
    expect(parseResponseHead("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").transferEncoding).toBe("chunked");
    expect(parseResponseHead("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n").transferEncoding).toBe("other");
    const conn = parseResponseHead("HTTP/1.1 200 OK\r\nconnection: Keep-Alive, Close\r\n\r\n");
    expect(conn.connectionClose).toBe(true);
    expect(conn.connectionKeepAlive).toBe(true);
  });

  test.each([
    ["a different protocol", "HTTP/2.0 200 OK\r\n\r\n"],
    ["a short status line", "HTTP/1.1 20\r\n\r\n"],
    ["a four-digit status", "HTTP/1.1 2000 OK\r\n\r\n"],
    ["a non-numeric status", "HTTP/1.1 2x0 OK\r\n\r\n"],
    ["a status below 100", "HTTP/1.1 099 OK\r\n\r\n"],
    ["garbage", "SSH-2.0-OpenSSH_9.6\r\n\r\n"],
    ["a header without a colon", "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"],
    ["whitespace before the colon", "HTTP/1.1 200 OK\r\nx-a : b\r\n\r\n"],
    ["an empty header name", "HTTP/1.1 200 OK\r\n: b\r\n\r\n"],
    ["obsolete line folding", "HTTP/1.1 200 OK\r\nx-a: b\r\n  c\r\n\r\n"],
    ["a bare LF inside a value", "HTTP/1.1 200 OK\r\nx-a: b\nx-b: c\r\n\r\n"],
    ["a NUL in a value", "HTTP/1.1 200 OK\r\nx-a: b\x00c\r\n\r\n"],
    ["a negative content-length", "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"],
    ["a content-length with a sign", "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n"],
    ["different content-lengths in a list", "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n"],
    ["conflicting content-length headers", "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"],
    ["a huge content-length", "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n"],
  ])("rejects %s", (_, text) => {
    expect(() => parseResponseHead(text)).toThrow(ParseError);
  });
});

describe("LengthDecoder", () => {
  test("stops at the length and reports where it stopped", () => {
    expect(decode(new LengthDecoder(5), "helloEXTRA")).toEqual({ body: "hello", rest: "EXTRA" });
  });

  test("is done at once for a zero length", () => {
    expect(new LengthDecoder(0).done).toBe(true);
  });

  test("collects a body split into single bytes", () => {
    expect(decode(new LengthDecoder(5), "hello", 1).body).toBe("hello");
  });
});

describe("CloseDecoder", () => {
  test("takes everything and is never done by itself", () => {
    const decoder = new CloseDecoder();
    expect(decode(decoder, "all of it").body).toBe("all of it");
    expect(decoder.done).toBe(false);
    expect(decoder.endsAtClose).toBe(true);
  });
});

describe("ChunkedDecoder", () => {
  const wire = "5\r\nhello\r\n1;name=value\r\n \r\nA \r\n0123456789\r\n0\r\nx-trailer: yes\r\n\r\n";

  test("removes the framing, extensions and trailers", () => {
    expect(decode(new ChunkedDecoder(), wire + "NEXT")).toEqual({ body: "hello 0123456789", rest: "NEXT" });
  });

  test.each([1, 2, 3, 7])("gives the same body when fed %i bytes at a time", (step) => {
    expect(decode(new ChunkedDecoder(), wire, step).body).toBe("hello 0123456789");
  });

  test("accepts upper- and lower-case hex sizes", () => {
    const data = "x".repeat(0xab);
    expect(decode(new ChunkedDecoder(), `aB\r\n${data}\r\n0\r\n\r\n`).body).toBe(data);
  });

  test("is done only after the final CRLF", () => {
    const decoder = new ChunkedDecoder();
    decode(decoder, "0\r\n\r");
    expect(decoder.done).toBe(false);
    decode(decoder, "\n");
    expect(decoder.done).toBe(true);
  });

  test.each([
    ["a non-hex size", "zz\r\n"],
    ["an empty size", "\r\n"],
    ["a size with a sign", "-5\r\nhello\r\n"],
    ["a size over 13 hex digits", "10000000000000\r\n"],
    ["data longer than its size", "3\r\nhello\r\n"],
    ["data not followed by CRLF", "5\r\nhelloX\r\n"],
    ["a bare LF after the size", "5\nhello\r\n"],
    ["an endless extension", "5;" + "e".repeat(5000)],
    ["endless trailers", "0\r\n" + "x-t: y\r\n".repeat(10_000)],
  ])("rejects %s", (_, text) => {
    expect(() => decode(new ChunkedDecoder(), text)).toThrow(ParseError);
  });
});

describe("header name interning", () => {
  test("every name comes back lower-cased and exact, whatever the case and however many names share a slot", () => {
    // 5,000 distinct names overflow the 1,024-slot table many times over: collisions must never leak.
    const names = Array.from({ length: 5000 }, (_, i) => `X-Name-${i.toString(36)}${i % 3 === 0 ? "-Extra" : ""}`);
    for (let round = 0; round < 2; round++) {
      for (const n of names) {
        const head = parseResponseHead(`HTTP/1.1 200 OK\r\n${n}: v\r\nContent-Type: a\r\ncontent-type: b\r\nCONTENT-TYPE: c\r\n\r\n`);
        expect(head.headers.map((h) => h[0])).toEqual([n.toLowerCase(), "content-type", "content-type", "content-type"]);
      }
    }
  });
});

describe("a head received again (again())", () => {
  test("a response head: the same fields, a header list of its own", () => {
    const text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, x-hop\r\nContent-Length: 12\r\n\r\n";
    const first = parseResponseHead(text);
    first.headers.push(["ratelimit-limit", "5"]); // what a response filter does to the list it is given
    const again = first.again();
    expect(again).not.toBe(first);
    expect(again.headers).toEqual([
      ["content-type", "text/plain"],
      ["connection", "keep-alive, x-hop"],
      ["content-length", "12"],
    ]);
    expect([again.status, again.statusText, again.minor, again.contentLength, again.connectionKeepAlive, again.connection, again.lines]).toEqual([
      200,
      "OK",
      1,
      12,
      true,
      "keep-alive, x-hop",
      "Content-Type: text/plain\r\nConnection: keep-alive, x-hop\r\nContent-Length: 12\r\n",
    ]);
  });

  test("a request head: the same fields, a header list of its own", () => {
    const first = parseRequestHead("PUT /up?x=1 HTTP/1.1\r\nHost: a.example\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    first.headers.splice(0, 1);
    const again = first.again();
    expect(again).not.toBe(first);
    expect(again.headers.map((h) => h[0])).toEqual(["host", "expect", "content-length"]);
    expect([again.method, again.target, again.minor, again.expectContinue, again.contentLength, again.value(0)]).toEqual(["PUT", "/up?x=1", 1, true, 3, "a.example"]);
  });
});
