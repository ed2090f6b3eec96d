// Protocol upgrades (WebSocket) through the proxy, over real sockets: the handshake goes upstream with
// its Upgrade header, a 101 switches both connections to a byte tunnel, and either side's end or
// reset reaches the other.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { buildStandardFilters, rawUpstream, simpleConfig, sleep, startInProcess, tempDir, type InProcessProxy } from "./harness.ts";

/** Resolves once `cond()` holds, polling; rejects after `ms`. */
async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met in time: ${cond.toString()}`);
    await sleep(5);
  }
}

/** A WebSocket client's messages, as text or "binary <size> <sum of bytes mod 251>". */
function collect(ws: WebSocket): string[] {
  const got: string[] = [];
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => {
    if (typeof e.data === "string") got.push(e.data);
    else {
      const b = new Uint8Array(e.data as ArrayBuffer);
      let sum = 0;
      for (const x of b) sum = (sum + x) % 251;
      got.push(`binary ${b.length} ${sum}`);
    }
  };
  return got;
}

function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("websocket failed to open"));
  });
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason })));
}

describe("WebSocket through the proxy", () => {
  const handshakes: { path: string; xff: string | null; upgrade: string | null }[] = [];
  let closes: { code: number; reason: string }[] = [];
  let upstreamServer: ReturnType<typeof Bun.serve>;
  let p: InProcessProxy;

  beforeAll(async () => {
    upstreamServer = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch(req, server) {
        const url = new URL(req.url);
        const data = { path: url.pathname, xff: req.headers.get("x-forwarded-for"), upgrade: req.headers.get("upgrade") };
        if (server.upgrade(req, { data })) return undefined;
        return new Response(`plain ${url.pathname}`);
      },
      websocket: {
        open(ws) {
          const d = ws.data as (typeof handshakes)[number];
          handshakes.push(d);
          ws.send(`hello ${d.path}`);
        },
        message(ws, m) {
          if (typeof m === "string") {
            if (m === "bye") return ws.close(4001, "server says bye");
            ws.send(`echo ${m}`);
          } else ws.send(m);
        },
        close(_ws, code, reason) {
          closes.push({ code, reason });
        },
      },
    });
    // A route timeout much shorter than the tests' conversations: it must not apply once switched.
    p = await startInProcess(simpleConfig(upstreamServer.port!, { routeExtra: "    timeoutMs: 300" }));
  });
  afterAll(async () => {
    await p.stop();
    upstreamServer.stop(true);
  });

  test("handshake, messages both ways (a 3 MB binary one too), and the client's close reach the upstream", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${p.port}/chat?room=1`);
    const got = collect(ws);
    await opened(ws);
    ws.send("one");
    const big = new Uint8Array(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    let sum = 0;
    for (const x of big) sum = (sum + x) % 251;
    ws.send(big);
    await until(() => got.length === 3, 10_000);
    expect(got).toEqual(["hello /chat", "echo one", `binary ${big.length} ${sum}`]);
    expect(handshakes.at(-1)).toEqual({ path: "/chat", xff: "127.0.0.1", upgrade: "websocket" });
    const before = closes.length;
    const done = closed(ws);
    ws.close(1000, "client done");
    expect(await done).toEqual({ code: 1000, reason: "client done" });
    await until(() => closes.length > before);
    expect(closes.at(-1)).toEqual({ code: 1000, reason: "client done" });
  });

  test("the route timeout ends at the switch: a conversation outlives it", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${p.port}/slow`);
    const got = collect(ws);
    await opened(ws);
    await sleep(700); // over twice the route's 300 ms
    ws.send("still here");
    await until(() => got.length === 2);
    expect(got).toEqual(["hello /slow", "echo still here"]);
    ws.close();
  });

  test("the upstream's close (code and reason) reaches the client", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${p.port}/leave`);
    collect(ws);
    await opened(ws);
    const done = closed(ws);
    ws.send("bye");
    expect(await done).toEqual({ code: 4001, reason: "server says bye" });
  });

  test("a plain request on the same route is still plain HTTP", async () => {
    const res = await fetch(`${p.url}/page`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("plain /page");
  });
});

/** An upstream speaking raw TCP: `onHead` gets each connection's first head and decides what to send. */
async function scripted(onHead: (head: string, socket: net.Socket, rest: Buffer) => void) {
  const heads: string[] = [];
  const ended: string[] = [];
  const up = await rawUpstream((socket) => {
    socket.on("error", () => {});
    let buf = Buffer.alloc(0);
    let switched = false;
    socket.on("data", (d: Buffer) => {
      if (switched) return;
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf("\r\n\r\n");
      if (i === -1) return;
      switched = true;
      const head = buf.subarray(0, i).toString("latin1");
      heads.push(head);
      onHead(head, socket, buf.subarray(i + 4));
    });
    socket.on("close", () => ended.push("closed"));
  });
  return { ...up, heads, ended };
}

/** The 101 the scripted upstreams answer with. */
const SWITCHED = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n\r\n";

/** Runs `fn` against a proxy in front of `up` (`yaml`: by default one route allowing x-echo upgrades); stops both after. */
async function through(up: { port: number; stop(): void }, fn: (p: InProcessProxy) => Promise<void>, yaml = simpleConfig(up.port, { routeExtra: "    upgrades: [x-echo]" })): Promise<void> {
  const p = await startInProcess(yaml);
  try {
    await fn(p);
  } finally {
    await p.stop();
    up.stop();
  }
}

/** A raw client: write, read what comes. */
function rawClient(port: number) {
  const socket = net.connect(port, "127.0.0.1");
  let data = "";
  let ended = false;
  socket.on("data", (d) => (data += d.toString("latin1")));
  socket.on("error", () => {});
  socket.on("close", () => (ended = true));
  return {
    socket,
    get data() {
      return data;
    },
    get ended() {
      return ended;
    },
  };
}

describe("upgrade tunnels at the byte level", () => {
  const HANDSHAKE = "GET /t HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\nUpgrade: x-echo\r\n\r\n";

  test("bytes right behind either head, then bytes both ways; the client's end closes the upstream", async () => {
    const up = await scripted((_head, socket, rest) => {
      socket.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\nX-Up: 1\r\n\r\nEARLY;");
      if (rest.length > 0) socket.write(`got-first:${rest.toString("latin1")};`);
      socket.on("data", (d: Buffer) => socket.write(`got:${d.toString("latin1")};`));
    });
    await through(up, async (p) => {
      const c = rawClient(p.port);
      c.socket.write(HANDSHAKE + "PIPELINED");
      // Held by the listener until the switch, then sent first (with the head or after it: either way).
      await until(() => /got(-first)?:PIPELINED;/.test(c.data)).catch((e) => {
        throw new Error(`${e.message}; client got ${JSON.stringify(c.data)}; upstream heads ${JSON.stringify(up.heads)}`);
      });
      const [head] = c.data.split("\r\n\r\n");
      expect(head!.split("\r\n")[0]).toBe("HTTP/1.1 101 Switching Protocols");
      const lines = head!.toLowerCase().split("\r\n");
      expect(lines).toContain("connection: upgrade");
      expect(lines).toContain("upgrade: x-echo");
      expect(lines).toContain("x-up: 1");
      expect(lines.some((l) => l.startsWith("content-length") || l.startsWith("transfer-encoding"))).toBe(false);
      expect(c.data.split("\r\n\r\n")[1]).toStartWith("EARLY;");
      c.socket.write("ping");
      await until(() => c.data.includes("got:ping;"));
      // The upstream saw the handshake's Upgrade, a Connection that names it, and the forwarding headers.
      const upLines = up.heads[0]!.toLowerCase().split("\r\n");
      expect(upLines).toContain("connection: upgrade");
      expect(upLines).toContain("upgrade: x-echo");
      expect(upLines.some((l) => l.startsWith("x-forwarded-for: "))).toBe(true);
      c.socket.end();
      await until(() => up.ended.length === 1);
      await until(() => c.ended);
    });
  });

  test("the upstream's end closes the client after the bytes it sent", async () => {
    const up = await scripted((_head, socket) => {
      socket.write(SWITCHED);
      socket.end("last words");
    });
    await through(up, async (p) => {
      const c = rawClient(p.port);
      c.socket.write(HANDSHAKE);
      await until(() => c.ended);
      expect(c.data).toEndWith("\r\n\r\nlast words");
    });
  });

  test("a client reset destroys the upstream side", async () => {
    const up = await scripted((_head, socket) => {
      socket.write(SWITCHED);
    });
    await through(up, async (p) => {
      const c = rawClient(p.port);
      c.socket.write(HANDSHAKE);
      await until(() => c.data.includes("\r\n\r\n"));
      c.socket.resetAndDestroy();
      await until(() => up.ended.length === 1);
    });
  });

  test("an upstream that declines the upgrade answers as usual, and the connection stays HTTP", async () => {
    const up = await rawUpstream((socket) => {
      socket.on("error", () => {});
      let buf = "";
      socket.on("data", (d: Buffer) => {
        buf += d.toString("latin1");
        while (buf.includes("\r\n\r\n")) {
          buf = buf.slice(buf.indexOf("\r\n\r\n") + 4);
          socket.write("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope");
        }
      });
    });
    await through(up, async (p) => {
      const c = rawClient(p.port);
      c.socket.write(HANDSHAKE);
      await until(() => c.data.endsWith("nope"));
      expect(c.data).toStartWith("HTTP/1.1 426 ");
      c.socket.write("GET /again HTTP/1.1\r\nHost: t\r\n\r\n");
      await until(() => c.data.split("nope").length === 3);
      expect(c.ended).toBe(false);
      c.socket.destroy();
    });
  });

  test.each([
    ["a route with upgrades: []", "    upgrades: []", HANDSHAKE],
    ["a protocol the route does not list", "    upgrades: [websocket]", HANDSHAKE],
    ["an Upgrade header that Connection does not name", "    upgrades: [x-echo]", "GET /t HTTP/1.1\r\nHost: t\r\nUpgrade: x-echo\r\n\r\n"],
    ["a POST", "    upgrades: [x-echo]", "POST /t HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: x-echo\r\nContent-Length: 2\r\n\r\nhi"],
  ])("no upgrade goes upstream for %s: Upgrade is dropped as hop-by-hop", async (_what, routeExtra, request) => {
    const up = await scripted((_head, socket) => socket.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain"));
    const yaml = simpleConfig(up.port, { routeExtra });
    await through(up, async (p) => {
      const c = rawClient(p.port);
      c.socket.write(request);
      await until(() => c.data.endsWith("plain"));
      expect(c.data).toStartWith("HTTP/1.1 200 ");
      const upLines = up.heads[0]!.toLowerCase().split("\r\n");
      expect(upLines.some((l) => l.startsWith("upgrade:"))).toBe(false);
      expect(upLines.some((l) => l.startsWith("connection:") && l.includes("upgrade"))).toBe(false);
      c.socket.destroy();
    }, yaml);
  });

  test("on a route with filters, they see the handshake and the 101, and the tunnel then works", async () => {
    await buildStandardFilters("add-header");
    const up = await scripted((_head, socket) => {
      socket.write(SWITCHED);
      socket.on("data", (d: Buffer) => socket.write(`got:${d.toString("latin1")};`));
    });
    const yaml = simpleConfig(up.port, {
      top: "filterDir: filters/dist",
      routeExtra: `    upgrades: [x-echo]
    filters:
      - { name: add-header, config: { request: { x-filter: f }, response: { x-filter-res: g } } }`,
    });
    await through(up, async (p) => {
      const c = rawClient(p.port);
      c.socket.write(HANDSHAKE);
      await until(() => c.data.includes("\r\n\r\n"));
      const lines = c.data.split("\r\n\r\n")[0]!.toLowerCase().split("\r\n");
      expect(lines[0]).toBe("http/1.1 101 switching protocols");
      expect(lines).toContain("x-filter-res: g");
      expect(lines).toContain("upgrade: x-echo");
      const upLines = up.heads[0]!.toLowerCase().split("\r\n");
      expect(upLines).toContain("x-filter: f");
      expect(upLines).toContain("upgrade: x-echo");
      c.socket.write("ping");
      await until(() => c.data.includes("got:ping;"));
      c.socket.destroy();
    }, yaml);
  });

  test("a tunnel quiet for limits.tunnelIdleTimeoutMs is closed on both sides; one with traffic is not", async () => {
    const up = await scripted((_head, socket) => {
      socket.write(SWITCHED);
      socket.on("data", (d: Buffer) => socket.write(d));
    });
    const yaml = simpleConfig(up.port, { top: "limits: { tunnelIdleTimeoutMs: 400 }", routeExtra: "    upgrades: [x-echo]" });
    await through(up, async (p) => {
      const busy = rawClient(p.port);
      const quiet = rawClient(p.port);
      busy.socket.write(HANDSHAKE);
      quiet.socket.write(HANDSHAKE);
      await until(() => busy.data.includes("\r\n\r\n") && quiet.data.includes("\r\n\r\n"));
      const started = Date.now();
      // The busy one talks every 100 ms for 1 s: well past the idle limit in all, never idle for it.
      for (let i = 0; i < 10; i++) {
        busy.socket.write(`m${i};`);
        await sleep(100);
      }
      expect(quiet.ended).toBe(true);
      expect(busy.ended).toBe(false);
      expect(busy.data).toContain("m9;");
      await until(() => up.ended.length === 1); // the quiet one's upstream side
      await until(() => busy.ended, 3000);
      expect(Date.now() - started).toBeGreaterThan(1000);
      await until(() => up.ended.length === 2);
    }, yaml);
  });

  test("the access log has one line per tunnel, written when it ends: status 101, its bytes each way, its whole life", async () => {
    const up = await scripted((_head, socket) => {
      socket.write(SWITCHED);
      socket.on("data", (d: Buffer) => socket.write(Buffer.concat([d, d]))); // twice what it gets
    });
    const log = join(tempDir(), "access.log");
    const config = simpleConfig(up.port, { routeExtra: "    upgrades: [x-echo]" }).replace("accessLog: { enabled: false }", `accessLog: { enabled: true, path: ${JSON.stringify(log)} }`);
    await through(up, async (p) => {
      const c = rawClient(p.port);
      c.socket.write(HANDSHAKE);
      await until(() => c.data.includes("\r\n\r\n"));
      await sleep(300);
      const lines = () => (existsSync(log) ? readFileSync(log, "utf8") : "").split("\n").filter(Boolean).map((l) => JSON.parse(l));
      expect(lines()).toEqual([]); // not at the 101: at the end
      c.socket.write("abc");
      await until(() => c.data.endsWith("abcabc"));
      c.socket.write("defg");
      await until(() => c.data.endsWith("defgdefg"));
      c.socket.end();
      await until(() => lines().length === 1);
      const entry = lines()[0];
      expect(entry).toMatchObject({ method: "GET", path: "/t", status: 101, route: "main", bytesIn: 7, bytesOut: 14, error: null });
      expect(entry.durationMs).toBeGreaterThan(300);
    }, config);
  });

  test("a 101 without an Upgrade header is a 502 upstream_protocol_error", async () => {
    const up = await scripted((_head, socket) => socket.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n"));
    await through(up, async (p) => {
      const c = rawClient(p.port);
      c.socket.write(HANDSHAKE);
      await until(() => c.data.includes("\r\n\r\n") && c.data.endsWith("}"));
      expect(c.data).toStartWith("HTTP/1.1 502 ");
      expect(c.data.toLowerCase()).toContain("x-mesh-error: upstream_protocol_error");
      c.socket.destroy();
    });
  });
});
