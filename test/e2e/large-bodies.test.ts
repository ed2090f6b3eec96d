// 1 GiB each way through a real proxy process, with the proxy's peak RSS under 100 MB.
import { describe, expect, test } from "bun:test";
import { readProcStatus, simpleConfig, startReadyProcess, upstream } from "./harness.ts";

const GIB = 1024 * 1024 * 1024;
const CHUNK = new Uint8Array(256 * 1024).fill(97);

/** A stream of `total` bytes made on demand, so the test itself holds no big buffer either. */
function generated(total: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(c) {
      if (sent >= total) return c.close();
      const n = Math.min(CHUNK.byteLength, total - sent);
      c.enqueue(n === CHUNK.byteLength ? CHUNK : CHUNK.subarray(0, n));
      sent += n;
    },
  }, { highWaterMark: 0 });
}

describe("large bodies", () => {
  test("a 1 GiB download and a 1 GiB upload pass with the proxy's RSS under 100 MB", async () => {
    const up = upstream(async (req) => {
      if (req.method === "GET") return new Response(generated(GIB), { headers: { "content-length": String(GIB) } });
      let n = 0;
      const reader = req.body!.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        n += value.byteLength;
      }
      return new Response(String(n));
    });
    const p = await startReadyProcess(simpleConfig(up.port, { routeExtra: "    timeoutMs: 0" }));
    try {
      const res = await fetch(`${p.url}/big`);
      let got = 0;
      const reader = res.body!.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        got += value.byteLength;
      }
      expect(got).toBe(GIB);

      const upload = await fetch(`${p.url}/big`, { method: "POST", body: generated(GIB), duplex: "half" } as RequestInit);
      expect(await upload.text()).toBe(String(GIB));

      const peak = readProcStatus(p.child.pid!, "VmHWM");
      console.log(`proxy peak RSS after 2 GiB streamed: ${(peak / 1e6).toFixed(1)} MB`);
      expect(peak).toBeGreaterThan(0);
      expect(peak).toBeLessThan(100 * 1024 * 1024);
    } finally {
      p.kill("SIGKILL");
      up.stop();
    }
  }, 120_000);
});
