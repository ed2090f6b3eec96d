// The platform's TCP sockets on Deno (runtime/platform/tcp.ts), over real sockets.
// Run: deno test -A test/deno/tcp_deno.ts
import { connectSocket, type SocketEvents } from "../../runtime/platform/tcp.ts";

// deno-lint-ignore no-explicit-any
declare const Deno: any;

function assertEquals(actual: unknown, expected: unknown, what: string): void {
  if (actual !== expected) throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

Deno.test("close() sends everything written before it, then FIN; no event follows", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // The peer reads until EOF and counts the bytes.
  const received = (async () => {
    const conn = await listener.accept();
    const buf = new Uint8Array(64 * 1024);
    let total = 0;
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      total += n;
    }
    conn.close();
    return total;
  })();
  const events: string[] = [];
  const sink: SocketEvents = {
    onData: () => events.push("data"),
    onDrain: () => events.push("drain"),
    onClose: () => events.push("close"),
  };
  const socket = await connectSocket("127.0.0.1", listener.addr.port, sink);
  // Many writes in one go, each below the high-water mark: most are still queued when close() comes.
  const chunk = new Uint8Array(3000).fill(7);
  for (let i = 0; i < 40; i++) socket.write(chunk);
  socket.write("the end");
  socket.close();
  assertEquals(await received, 40 * 3000 + 7, "bytes the peer received");
  await new Promise((r) => setTimeout(r, 50));
  assertEquals(events.join(","), "", "events after close()");
  listener.close();
});
