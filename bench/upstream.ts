// The one upstream every scenario talks to: fixed 100 B and 64 KiB bodies served from memory.
//
// Run as its own process (`bun bench/upstream.ts --port N`) so it can be pinned to a core and so its
// CPU never counts against the proxy under test.

/** Response sizes the scenarios ask for, by path. */
export const BODIES = { "/small": 100, "/large": 64 * 1024 } as const;

if (import.meta.main) {
  const portArg = process.argv.indexOf("--port");
  const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 18000;
  const bodies = new Map(
    Object.entries(BODIES).map(([path, size]) => [path, new Uint8Array(size).fill(0x61 /* "a" */)] as const),
  );
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port,
    // Keep-alive is Bun's default; a long idle timeout keeps the proxies' pooled connections open.
    idleTimeout: 120,
    fetch(req) {
      const path = req.url.slice(req.url.indexOf("/", 8)).split("?")[0];
      const body = bodies.get(path);
      if (body) return new Response(body, { headers: { "content-type": "application/octet-stream" } });
      if (path === "/health") return new Response("ok");
      return new Response("no such bench path", { status: 404 });
    },
  });
  console.log(`upstream listening on 127.0.0.1:${server.port}`);
}
