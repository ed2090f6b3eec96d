// The native listener with a handler of our own: an in-memory body is written whole, then let go of
// (the listener empties the chunk array, so settled promises and exchange records that still point
// at it no longer keep the buffers alive: see DownstreamResponse.chunks).
import { afterAll, beforeAll, expect, test } from "bun:test";
import net from "node:net";
import { createHttp1Server, type Http1Server } from "../../runtime/listener/http1/server.ts";
import type { DownstreamResponse } from "../../runtime/listener/types.ts";

const handed: Uint8Array[][] = [];
let server: Http1Server;

beforeAll(() => {
  server = createHttp1Server({
    hostname: "127.0.0.1",
    port: 0,
    limits: () => ({ maxHeadBytes: 16384, idleTimeoutMs: 5000, requestHeadersTimeoutMs: 5000, requestBodyTimeoutMs: 5000, tunnelIdleTimeoutMs: 5000 }),
    refuse: () => ({ status: 400, statusText: "", headers: [], chunks: null, stream: null }),
    handler: (req, reply) => {
      // Three parts, the middle one a view into a larger buffer, as an upstream's body often is.
      const big = new TextEncoder().encode(`[head bytes]${"b".repeat(70_000)}[more]`);
      const chunks = [new TextEncoder().encode(`path=${req.target};`), big.subarray(12, 12 + 70_000), new TextEncoder().encode(";end")];
      handed.push(chunks);
      const res: DownstreamResponse = { status: 200, statusText: "", headers: [["content-type", "text/plain"]], chunks, stream: null };
      queueMicrotask(() => reply(res)); // never before the handler returns (DownstreamHandler)
    },
  });
});

afterAll(() => server.stop(false));

/** Sends raw bytes, returns everything received until `done(text)` says the response is complete. */
function exchange(bytes: string, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, "127.0.0.1");
    let text = "";
    socket.setEncoding("latin1");
    socket.on("data", (d: string) => {
      text += d;
      if (done(text)) {
        socket.destroy();
        resolve(text);
      }
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(text));
    socket.write(bytes);
  });
}

test("an in-memory body goes out whole with its real length, and the listener empties the chunk array after writing it", async () => {
  const expected = `path=/x?a=1;${"b".repeat(70_000)};end`;
  const text = await exchange("GET /x?a=1 HTTP/1.1\r\nHost: t\r\n\r\n", (t) => t.endsWith(";end"));
  const split = text.indexOf("\r\n\r\n");
  expect(text.slice(0, split)).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
  expect(text.slice(0, split).toLowerCase()).toContain(`\r\ncontent-length: ${expected.length}`);
  expect(text.slice(split + 4)).toBe(expected);
  expect(handed.length).toBe(1);
  expect(handed[0]!.length).toBe(0);
});

test("HEAD: no body is written, and the chunks are let go of all the same", async () => {
  const text = await exchange("HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n", (t) => t.includes("\r\n\r\n"));
  expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
  expect(text.endsWith("\r\n\r\n")).toBe(true);
  expect(handed.length).toBe(2);
  expect(handed[1]!.length).toBe(0);
});
