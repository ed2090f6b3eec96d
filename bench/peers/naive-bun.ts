// Reference row: the least a Bun proxy can be (fetch the upstream, hand back its response) with no
// routing, header handling or filters. Our proxy's distance from this row is what its features cost.
import { join } from "node:path";
import { answers, freePort, Proc, waitFor } from "./process.ts";
import { type Peer, type PeerContext, PeerStartError } from "./types.ts";

export async function startNaiveBun(ctx: PeerContext): Promise<Peer> {
  const port = freePort();
  const proc = Proc.spawn(
    "naive-bun",
    [process.execPath, import.meta.path, "--port", String(port), "--upstream", `127.0.0.1:${ctx.upstreamPort}`],
    { cpu: ctx.cpu, logFile: join(ctx.dir, "naive-bun.log") },
  );
  const url = `http://127.0.0.1:${port}`;
  if (!(await waitFor(() => answers(`${url}/health`), 10_000, proc))) {
    await proc.stop();
    throw new PeerStartError(`naive Bun proxy did not answer on ${url}/health`, proc.tail());
  }
  return { url, proc };
}

if (import.meta.main) {
  const arg = (name: string) => process.argv[process.argv.indexOf(name) + 1];
  const upstream = `http://${arg("--upstream")}`;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: Number(arg("--port")),
    idleTimeout: 120,
    fetch(req) {
      const url = req.url;
      return fetch(upstream + url.slice(url.indexOf("/", 8)), {
        method: req.method,
        headers: req.headers,
        body: req.body,
        redirect: "manual",
      });
    },
  });
  console.log(`naive Bun proxy on ${server.port} -> ${upstream}`);
}
