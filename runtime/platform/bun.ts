// The Bun runtime: Bun.serve for listeners.
import type { Platform, Server, ServeOptions } from "./types.ts";

export const bunPlatform: Platform = {
  name: "bun",
  get version() {
    return Bun.version;
  },
  serve(opts: ServeOptions): Server {
    const handler = opts.handler;
    const server = Bun.serve({
      hostname: opts.hostname,
      port: opts.port,
      // Bun's default is 128 MiB and answers 413 itself; the proxy streams and enforces its own limit.
      maxRequestBodySize: opts.maxRequestBodySize ?? Number.MAX_SAFE_INTEGER,
      // Seconds without bytes before Bun closes a connection. Longer than any sane route timeout,
      // short enough to shed dead keep-alive clients.
      idleTimeout: 255,
      fetch(req, srv) {
        const ip = srv.requestIP(req);
        return handler(req, { address: ip?.address ?? "", port: ip?.port ?? 0 });
      },
    });
    return {
      hostname: opts.hostname,
      port: server.port ?? opts.port,
      stop: (graceful) => server.stop(!graceful).then(() => undefined),
    };
  },
  onSignal(signal, fn) {
    process.on(signal, fn);
  },
  args: () => process.argv.slice(2),
  exit: (code) => process.exit(code),
  writeStdout(text) {
    process.stdout.write(text);
  },
  rss: () => process.memoryUsage.rss(),
  collectGarbage: () => Bun.gc(true),
  bufferedBody(chunks, size) {
    // Bun.serve sends a Blob or Uint8Array returned after the request's own tick (any proxied
    // response) through a slow path: 64 KiB cost ~85 us of CPU against ~25 us through a "direct"
    // stream that writes the bytes synchronously (bench/README.md). Small bodies are cheapest as a Blob.
    if (size <= DIRECT_ABOVE) return new Blob(chunks as unknown as BlobPart[]);
    return new ReadableStream({
      type: "direct",
      pull(controller: { write(b: Uint8Array): void; close(): void }) {
        for (const c of chunks) controller.write(c);
        controller.close();
      },
    } as unknown as UnderlyingDefaultSource<Uint8Array>);
  },
};

const DIRECT_ABOVE = 16 * 1024;
