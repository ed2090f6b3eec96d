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
};
