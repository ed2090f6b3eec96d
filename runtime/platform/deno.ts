// The Deno runtime: Deno.serve for listeners.
import v8 from "node:v8";
import vm from "node:vm";
import type { Platform, Server, ServeOptions } from "./types.ts";

// Typed loosely so the Bun typecheck needs no Deno types; the shapes used are Deno 2's stable API.
// deno-lint-ignore no-explicit-any
declare const Deno: any;

const encoder = new TextEncoder();

/**
 * V8's full collection, which `deno run` does not expose: the flag can still be set at run time and
 * `gc` read from a fresh context. Measured: a heap left at 126 MB RSS by garbage went to 47 MB. Null
 * if this V8 refuses (then collection is left to its heuristics).
 */
const fullGc: (() => void) | null = (() => {
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as unknown;
    return typeof gc === "function" ? (gc as () => void) : null;
  } catch {
    return null;
  }
})();

export const denoPlatform: Platform = {
  name: "deno",
  get version() {
    return Deno.version.deno as string;
  },
  serve(opts: ServeOptions): Server {
    const handler = opts.handler;
    const server = Deno.serve(
      { hostname: opts.hostname, port: opts.port, onListen() {} },
      (req: Request, info: { remoteAddr: { hostname: string; port: number } }) =>
        handler(req, { address: info.remoteAddr.hostname, port: info.remoteAddr.port }),
    );
    return {
      hostname: opts.hostname,
      port: server.addr.port as number,
      async stop(graceful) {
        if (graceful) await server.shutdown();
        else {
          // Deno has no "close all now": shutdown() with an already-fired abort is the nearest.
          void server.shutdown();
        }
      },
    };
  },
  onSignal(signal, fn) {
    Deno.addSignalListener(signal, fn);
  },
  args: () => [...Deno.args],
  exit(code): never {
    Deno.exit(code);
    throw new Error("unreachable");
  },
  writeStdout(text) {
    const bytes = encoder.encode(text);
    let off = 0;
    while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off)) as number;
  },
  rss: () => Deno.memoryUsage().rss as number,
  collectGarbage() {
    fullGc?.();
  },
  bufferedBody: (chunks) => new Blob(chunks as unknown as BlobPart[]),
};
