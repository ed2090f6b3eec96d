import { describe, expect, test } from "bun:test";
import { ProxyError } from "../../runtime/errors.ts";
import type { HeaderList, UpstreamRequest } from "../../runtime/upstream/types.ts";
import { buildRequestHead } from "../../runtime/upstream/http1/request-head.ts";

const someBody = () => new ReadableStream<Uint8Array>();

function req(over: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return { method: "GET", target: "/", headers: [], body: null, bodyLength: null, ...over };
}

function text(data: string | Uint8Array): string {
  return typeof data === "string" ? data : Buffer.from(data).toString("latin1");
}

describe("buildRequestHead", () => {
  test.each(["/a%2Fb", "/a%20b?x=%2B", "/a+b", "//double//slash", "/x/../y/./z", "/?q=a%26b&bad=%ZZ", "*", "/caf\xc3\xa9"])(
    "puts target %s on the request line byte for byte",
    (target) => {
      const head = buildRequestHead(req({ target }), "up:80");
      expect(text(head.data).split("\r\n")[0]).toBe(`GET ${target} HTTP/1.1`);
    },
  );

  test("keeps header order and adds host from the endpoint key only when absent", () => {
    const headers: HeaderList = [["x-b", "2"], ["accept", "*/*"], ["x-a", "1"]];
    expect(buildRequestHead(req({ headers }), "10.0.0.7:8080").data).toBe(
      "GET / HTTP/1.1\r\nx-b: 2\r\naccept: */*\r\nx-a: 1\r\nhost: 10.0.0.7:8080\r\n\r\n",
    );
    const withHost = buildRequestHead(req({ headers: [["host", "api.example"], ["x-a", "1"]] }), "10.0.0.7:8080");
    expect(withHost.data).toBe("GET / HTTP/1.1\r\nhost: api.example\r\nx-a: 1\r\n\r\n");
  });

  test("keeps repeated headers apart", () => {
    const head = buildRequestHead(req({ headers: [["cookie", "a=1"], ["x", "y"], ["cookie", "b=2"]] }), "h:1");
    expect(text(head.data)).toContain("cookie: a=1\r\nx: y\r\ncookie: b=2\r\n");
  });

  test("frames a known-length body with content-length and drops the caller's framing headers", () => {
    const head = buildRequestHead(
      req({
        method: "PUT",
        headers: [["content-length", "999"], ["transfer-encoding", "chunked"], ["Content-Length", "1"]],
        body: someBody(),
        bodyLength: 12,
      }),
      "h:1",
    );
    expect(head.framing).toBe("length");
    expect(head.data).toBe("PUT / HTTP/1.1\r\nhost: h:1\r\ncontent-length: 12\r\n\r\n");
  });

  test("frames a body of unknown length as chunked", () => {
    const head = buildRequestHead(req({ method: "POST", body: someBody(), bodyLength: null }), "h:1");
    expect(head.framing).toBe("chunked");
    expect(head.data).toBe("POST / HTTP/1.1\r\nhost: h:1\r\ntransfer-encoding: chunked\r\n\r\n");
  });

  test("says content-length: 0 for a POST without a body, nothing for a GET", () => {
    expect(text(buildRequestHead(req({ method: "POST" }), "h:1").data)).toContain("content-length: 0\r\n");
    expect(text(buildRequestHead(req({ method: "GET" }), "h:1").data)).not.toContain("content-length");
  });

  test("notices expect: 100-continue only when there is a body to hold back", () => {
    const headers: HeaderList = [["expect", "100-Continue"]];
    expect(buildRequestHead(req({ method: "PUT", headers, body: someBody(), bodyLength: 3 }), "h:1").expectContinue).toBe(true);
    expect(buildRequestHead(req({ headers }), "h:1").expectContinue).toBe(false);
  });

  test("notices connection: close from the caller", () => {
    expect(buildRequestHead(req({ headers: [["connection", "keep-alive, close"]] }), "h:1").close).toBe(true);
    expect(buildRequestHead(req(), "h:1").close).toBe(false);
  });

  test("sends chars 0x80-0xff as single bytes, like fetch Headers", () => {
    const head = buildRequestHead(req({ headers: [["x-name", "caf\xe9"]] }), "h:1");
    expect(head.data).toBeInstanceOf(Uint8Array);
    const bytes = head.data as Uint8Array;
    const at = text(bytes).indexOf("caf") + 3;
    expect(bytes[at]).toBe(0xe9);
  });

  test("sends a value with chars above 0xff as its UTF-8 bytes, latin1 values beside it one byte per char", () => {
    const head = buildRequestHead(req({ headers: [["x-a", "\u00e9 \u2603 \u00e9"], ["x-b", "caf\xe9"]] }), "h:1");
    const bytes = head.data as Uint8Array;
    expect(bytes).toBeInstanceOf(Uint8Array);
    const t = text(bytes);
    expect(t).toContain(`x-a: ${Buffer.from("\u00e9 \u2603 \u00e9", "utf8").toString("latin1")}\r\n`);
    expect(t).toContain("x-b: caf\xe9\r\n");
  });

  test.each([
    ["a CRLF in a value", req({ headers: [["x-a", "1\r\nx-injected: 1"]] })],
    ["a bare LF in a value", req({ headers: [["x-a", "1\nx"]] })],
    ["a NUL in a value", req({ headers: [["x-a", "1\x00"]] })],
    ["a space in a name", req({ headers: [["x a", "1"]] })],
    ["a colon in a name", req({ headers: [["x:a", "1"]] })],
    ["an empty name", req({ headers: [["", "1"]] })],
    ["a pseudo-header", req({ headers: [[":authority", "x"]] })],
    ["a space in the target", req({ target: "/a b" })],
    ["a CRLF in the target", req({ target: "/a\r\nx: y" })],
    ["an empty target", req({ target: "" })],
    ["a method that is not a token", req({ method: "GET /" })],
    ["a CRLF after a char above 0xff in a value", req({ headers: [["x-a", "\u2603\r\nx-injected: 1"]] })],
    ["a char above 0xff in the target", req({ target: "/\u2603" })],
    ["a char above 0xff in a name", req({ headers: [["x-\u2603", "1"]] })],
    ["a length with a null body", req({ method: "POST", bodyLength: 5 })],
    ["a negative length", req({ method: "POST", body: someBody(), bodyLength: -1 })],
  ])("refuses %s", (_, bad) => {
    expect(() => buildRequestHead(bad, "h:1")).toThrow(ProxyError);
  });
});
