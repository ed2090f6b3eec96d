// Experiment, not part of the proxy: the least an HTTP-aware reverse proxy in JavaScript on Bun does
// per request, to see how close to nginx that can get on this box (bench/README.md, "How far
// JavaScript on Bun can go"). It parses both heads into name/value pairs, drops hop-by-hop headers,
// adds X-Forwarded-For, rebuilds both heads, and gives each client connection its own upstream
// connection. No promises, no validation, no routing: it assumes every head arrives in one read and
// every response carries Content-Length. Do not put it in front of anything real.
//   PORT=18086 UPSTREAM=127.0.0.1:18000 taskset -c 0 bun bench/experiments/lean-proxy.ts
//   taskset -c 1 wrk -t1 -c64 -d3s http://127.0.0.1:18086/small
import { Buffer } from "node:buffer";

const PORT = Number(process.env.PORT ?? 18086);
const [UP_HOST, UP_PORT] = (process.env.UPSTREAM ?? "127.0.0.1:18000").split(":") as [string, string];
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, s: number, e: number): string }).latin1Slice;
const latin1Write = (Buffer.prototype as unknown as { latin1Write(this: Uint8Array, s: string, o: number, l: number): number }).latin1Write;
const scratch = Buffer.allocUnsafe(1 << 17);
const HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]);

function headerPairs(text: string, pos: number): [string, string][] {
  const out: [string, string][] = [];
  for (;;) {
    const eol = text.indexOf("\r\n", pos);
    if (eol === pos) return out;
    const colon = text.indexOf(":", pos);
    out.push([text.slice(pos, colon).toLowerCase(), text.slice(colon + 1, eol).trim()]);
    pos = eol + 2;
  }
}

function rebuild(firstLine: string, pairs: [string, string][], extra: string): string {
  let head = firstLine + "\r\n";
  for (const [name, value] of pairs) if (!HOP.has(name)) head += `${name}: ${value}\r\n`;
  return head + extra + "\r\n";
}

interface Client {
  up: { write(data: string): number; end(): void } | null;
  queued: string | null;
}

Bun.listen<Client>({
  hostname: "127.0.0.1",
  port: PORT,
  socket: {
    open(client) {
      client.data = { up: null, queued: null };
      void Bun.connect({
        hostname: UP_HOST,
        port: Number(UP_PORT),
        socket: {
          data(_up, chunk) {
            const end = chunk.indexOf("\r\n\r\n");
            const text = latin1Slice.call(chunk, 0, end + 4);
            const eol = text.indexOf("\r\n");
            const head = rebuild(text.slice(0, eol), headerPairs(text, eol + 2), "");
            let at = latin1Write.call(scratch, head, 0, head.length);
            const body = chunk.subarray(end + 4);
            scratch.set(body, at);
            at += body.length;
            client.write(scratch, 0, at);
          },
          close() {
            client.end();
          },
          error() {},
        },
      }).then((up) => {
        client.data.up = up;
        if (client.data.queued !== null) up.write(client.data.queued);
      });
    },
    data(client, chunk) {
      const end = chunk.indexOf("\r\n\r\n");
      const text = latin1Slice.call(chunk, 0, end + 4);
      const eol = text.indexOf("\r\n");
      const head = rebuild(text.slice(0, eol), headerPairs(text, eol + 2), "x-forwarded-for: 127.0.0.1\r\n");
      if (client.data.up !== null) client.data.up.write(head);
      else client.data.queued = head;
    },
    close(client) {
      client.data.up?.end();
    },
    error() {},
  },
});
console.log(`lean proxy on 127.0.0.1:${PORT} -> ${UP_HOST}:${UP_PORT}`);
