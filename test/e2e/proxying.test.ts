// Proxying done right: headers, bodies, paths, streaming, reuse — through real sockets.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { buildStandardFilters, eachRequestHead, echoUpstream, rawRequest, rawUpstream, simpleConfig, sleep, startInProcess, upstream, type InProcessProxy } from "./harness.ts";

type Echo = { method: string; target: string; headers: [string, string][]; body: string };
const header = (e: Echo, name: string) => e.headers.filter(([k]) => k === name).map(([, v]) => v);

describe("proxying", () => {
  const echo = echoUpstream();
  let p: InProcessProxy;
  beforeAll(async () => {
    p = await startInProcess(simpleConfig(echo.port));
  });
  afterAll(async () => {
    await p.stop();
    echo.stop();
  });

  test("forwards method, path, query and body to the upstream", async () => {
    const res = await fetch(`${p.url}/items/7?x=1`, { method: "POST", body: "hello", headers: { "content-type": "text/plain" } });
    expect(res.status).toBe(200);
    const e = (await res.json()) as Echo;
    expect(e.method).toBe("POST");
    expect(e.target).toBe("/items/7?x=1");
    expect(e.body).toBe("hello");
    expect(header(e, "content-type")).toEqual(["text/plain"]);
  });

  test("removes hop-by-hop request headers, including those named in Connection", async () => {
    const raw = await rawRequest(
      p.port,
      "GET /h HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\n" +
        // A second Connection line is part of the same list (RFC 9110 section 5.3).
        "Connection: X-Second\r\nX-Second: 2\r\nX-Kept: k\r\n\r\n",
    );
    const e = JSON.parse(raw.slice(raw.indexOf("\r\n\r\n") + 4)) as Echo;
    const names = e.headers.map(([k]) => k);
    for (const h of ["x-secret", "x-second", "keep-alive", "te", "proxy-authorization"]) expect(names).not.toContain(h);
    expect(header(e, "x-kept")).toEqual(["k"]);
  });

  test("sets X-Forwarded-For/-Proto/-Host and appends to an existing X-Forwarded-For", async () => {
    let e = (await (await fetch(`${p.url}/x`, { headers: { host: "shop.test:8080" } })).json()) as Echo;
    expect(header(e, "x-forwarded-for")).toEqual(["127.0.0.1"]);
    expect(header(e, "x-forwarded-proto")).toEqual(["http"]);
    expect(header(e, "x-forwarded-host")).toEqual(["shop.test:8080"]);
    e = (await (await fetch(`${p.url}/x`, { headers: { "x-forwarded-for": "203.0.113.9" } })).json()) as Echo;
    expect(header(e, "x-forwarded-for")).toEqual(["203.0.113.9, 127.0.0.1"]);
  });

  test("generates an x-request-id when absent and keeps the client's when present", async () => {
    let e = (await (await fetch(`${p.url}/x`)).json()) as Echo;
    const [id] = header(e, "x-request-id");
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    e = (await (await fetch(`${p.url}/x`, { headers: { "x-request-id": "abc-123" } })).json()) as Echo;
    expect(header(e, "x-request-id")).toEqual(["abc-123"]);
  });

  test("passes path and query byte for byte: %2F, %20, +, repeated keys, empty values", async () => {
    const seen: string[] = [];
    const up = await rawUpstream((s) => {
      s.once("data", (d) => {
        seen.push(d.toString("latin1").split("\r\n")[0]!);
        s.end("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
      });
    });
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const target = "/a%2Fb/c%20d+e/%7E?q=a+b&q=&q=%2F%26&empty=&flag&x=%zz";
      const raw = await rawRequest(q.port, `GET ${target} HTTP/1.1\r\nHost: t\r\n\r\n`);
      expect(raw.startsWith("HTTP/1.1 200")).toBe(true);
      // Raw UTF-8 in the path (curl sends "/héllo" unencoded) goes on as the same bytes.
      const utf8 = Buffer.from("/h\u00e9llo/\u6f22?k=\u00fc", "utf8");
      const raw2 = await rawRequest(q.port, Buffer.concat([Buffer.from("GET "), utf8, Buffer.from(" HTTP/1.1\r\nHost: t\r\n\r\n")]));
      expect(raw2.startsWith("HTTP/1.1 200")).toBe(true);
      expect(seen).toEqual([`GET ${target} HTTP/1.1`, `GET ${utf8.toString("latin1")} HTTP/1.1`]);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("returns several Set-Cookie headers as several headers", async () => {
    const up = upstream(() => new Response("ok", { headers: [["set-cookie", "a=1; Path=/"], ["set-cookie", "b=2, c; HttpOnly"], ["set-cookie", "d=4"]] }));
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const raw = await rawRequest(q.port, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
      const cookies = raw.split("\r\n").filter((l) => l.toLowerCase().startsWith("set-cookie:"));
      expect(cookies.map((l) => l.slice(l.indexOf(":") + 1).trim())).toEqual(["a=1; Path=/", "b=2, c; HttpOnly", "d=4"]);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("removes hop-by-hop response headers, including those named in Connection", async () => {
    const up = await rawUpstream((s) => {
      s.once("data", () => {
        s.write("HTTP/1.1 200 OK\r\nConnection: x-internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nConnection: x-other\r\nX-Other: 3\r\nX-Public: 2\r\nContent-Length: 2\r\n\r\nok");
      });
    });
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const res = await fetch(`${q.url}/`);
      expect(await res.text()).toBe("ok");
      expect(res.headers.get("x-internal")).toBeNull();
      expect(res.headers.get("x-other")).toBeNull();
      expect(res.headers.get("keep-alive")).toBeNull();
      expect(res.headers.get("x-public")).toBe("2");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("passes request header lines on as they came (case, spacing, latin1 bytes), minus hop-by-hop, forwarding headers last", async () => {
    const heads: string[] = [];
    const up = await rawUpstream((s) =>
      eachRequestHead(s, (head) => {
        heads.push(head);
        s.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
      }),
    );
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const req =
        "GET /w HTTP/1.1\r\nHost: w.test\r\nX-Mixed-Case:  v1 \r\nConnection: X-Gone\r\nX-Gone: 1\r\nX-Forwarded-For: 198.51.100.1\r\n" +
        "X-Latin: caf\xe9\r\nX-Forwarded-For: 198.51.100.2\r\nX-Last: z\r\n\r\n";
      expect((await rawRequest(q.port, Buffer.from(req, "latin1"), 200)).slice(9, 12)).toBe("200");
      const lines = heads[0]!.split("\r\n");
      const id = lines.find((l) => l.startsWith("x-request-id: "));
      expect(lines).toEqual([
        "GET /w HTTP/1.1",
        "Host: w.test",
        "X-Mixed-Case:  v1 ",
        "X-Latin: caf\xe9",
        "X-Last: z",
        "x-forwarded-for: 198.51.100.1, 198.51.100.2, 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: w.test",
        id!,
      ]);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("passes response header lines on as they came, minus hop-by-hop; a Date when missing; one Content-Length, none on a 204", async () => {
    const up = await rawUpstream((s) =>
      eachRequestHead(s, (head) => {
        if (head.startsWith("GET /204")) s.write("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Kind: 204\r\n\r\n");
        else if (head.startsWith("GET /dup")) s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
        else s.write(Buffer.from("HTTP/1.1 200 OK\r\nX-Resp-Case: A\r\nConnection: keep-alive, X-Hop\r\nX-Hop: h\r\nX-Latin: caf\xe9\r\nContent-Length: 2\r\n\r\nok", "latin1"));
      }),
    );
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const raw = await rawRequest(q.port, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n", 200);
      const [head, body] = raw.split("\r\n\r\n") as [string, string];
      const lines = head.split("\r\n");
      expect(lines[0]).toBe("HTTP/1.1 200 OK");
      expect(lines).toContain("X-Resp-Case: A");
      expect(lines).toContain("X-Latin: caf\xe9");
      expect(lines.filter((l) => /^content-length:/i.test(l))).toHaveLength(1);
      expect(lines.filter((l) => /^date: /i.test(l))).toHaveLength(1);
      expect(lines.some((l) => /^(x-hop|connection: keep-alive)/i.test(l))).toBe(false);
      expect(body).toBe("ok");
      const dup = (await rawRequest(q.port, "GET /dup HTTP/1.1\r\nHost: t\r\n\r\n", 200)).split("\r\n");
      expect(dup.filter((l) => /^content-length:/i.test(l))).toEqual(["content-length: 2"]);
      const raw204 = await rawRequest(q.port, "GET /204 HTTP/1.1\r\nHost: t\r\n\r\n", 200);
      expect(raw204.slice(9, 12)).toBe("204");
      expect(raw204).toContain("X-Kind: 204");
      expect(raw204.toLowerCase()).not.toContain("content-length");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("a response's Content-Length says the length the client gets: dropped beside Transfer-Encoding, one plain number otherwise", async () => {
    const big = "z".repeat(200_000); // over the 128 KiB collected whole: streamed
    const up = await rawUpstream((s) =>
      eachRequestHead(s, (head) => {
        const path = head.slice(4, head.indexOf(" ", 4));
        if (path === "/te") s.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n26\r\nHELLO WORLD, this is the body and more\r\n0\r\n\r\n");
        else if (path === "/te-big") s.write(`HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`);
        else if (path === "/list") s.write("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok");
        else s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\nContent-Length: ${big.length}\r\n\r\n${big}`);
      }),
    );
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const lengths = (raw: string) => raw.slice(0, raw.indexOf("\r\n\r\n")).split("\r\n").filter((l) => /^content-length:/i.test(l));
      const te = await rawRequest(q.port, "GET /te HTTP/1.1\r\nHost: t\r\n\r\n", 200);
      expect(lengths(te)).toEqual(["content-length: 38"]);
      expect(te.slice(te.indexOf("\r\n\r\n") + 4)).toBe("HELLO WORLD, this is the body and more");
      const teBig = await rawRequest(q.port, "GET /te-big HTTP/1.1\r\nHost: t\r\n\r\n", 300);
      expect(lengths(teBig)).toEqual([]);
      expect(teBig.toLowerCase()).toContain("transfer-encoding: chunked");
      for (const c of ["/list", "/dup-big"] as const) {
        const res = await fetch(`${q.url}${c}`);
        expect(res.headers.get("content-length")).toBe(c === "/list" ? "2" : String(big.length));
        expect((await res.text()).length).toBe(c === "/list" ? 2 : big.length);
      }
      const dupBig = await rawRequest(q.port, "GET /dup-big HTTP/1.1\r\nHost: t\r\n\r\n", 300);
      expect(lengths(dupBig)).toEqual([`content-length: ${big.length}`]);
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("HEAD, 204 and 304 responses carry no body", async () => {
    const up = await rawUpstream((s) => {
      let buf = "";
      s.on("data", (d) => {
        buf += d.toString("latin1");
        let i: number;
        while ((i = buf.indexOf("\r\n\r\n")) !== -1) {
          const line = buf.slice(0, buf.indexOf("\r\n"));
          buf = buf.slice(i + 4);
          if (line.startsWith("HEAD")) s.write("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Kind: head\r\n\r\n");
          else if (line.includes("/204")) s.write("HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n");
          else s.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n');
        }
      });
    });
    const q = await startInProcess(simpleConfig(up.port));
    try {
      for (const [req, kind] of [
        ["HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n", "200"],
        ["GET /204 HTTP/1.1\r\nHost: t\r\n\r\n", "204"],
        ['GET /304 HTTP/1.1\r\nHost: t\r\nIf-None-Match: "v1"\r\n\r\n', "304"],
      ] as const) {
        const raw = await rawRequest(q.port, req, 300);
        expect(raw.slice(9, 12)).toBe(kind);
        expect(raw.endsWith("\r\n\r\n")).toBe(true); // nothing after the head
        if (kind === "200") expect(raw.toLowerCase()).toContain("content-length: 1234");
      }
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("Expect: 100-continue gets an interim 100 and the body reaches the upstream", async () => {
    const raw = await new Promise<string>((resolve, reject) => {
      const s = net.connect(p.port, "127.0.0.1", () => {
        s.write("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
      });
      let out = "";
      let sentBody = false;
      s.on("data", (d) => {
        out += d.toString("latin1");
        if (!sentBody && out.startsWith("HTTP/1.1 100")) {
          sentBody = true;
          s.write("hello");
        }
        if (out.includes('"body":"hello"')) {
          s.destroy();
          resolve(out);
        }
      });
      s.on("error", reject);
      setTimeout(() => resolve(out), 3000);
    });
    expect(raw.startsWith("HTTP/1.1 100 Continue\r\n\r\n")).toBe(true);
    expect(raw).toContain("HTTP/1.1 200");
    expect(raw).toContain('"body":"hello"');
  });

  test("reuses upstream connections across requests", async () => {
    let connections = 0;
    const up = await rawUpstream((s) => {
      connections++;
      let buf = "";
      s.on("data", (d) => {
        buf += d.toString("latin1");
        let i: number;
        while ((i = buf.indexOf("\r\n\r\n")) !== -1) {
          buf = buf.slice(i + 4);
          s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
      });
    });
    const q = await startInProcess(simpleConfig(up.port));
    try {
      for (let i = 0; i < 20; i++) expect(await (await fetch(`${q.url}/${i}`)).text()).toBe("ok");
      expect(connections).toBe(1);
    } finally {
      await q.stop();
      up.stop();
    }
  });
});

describe("streaming", () => {
  test("streams a response body: the client reads the first chunk before the upstream sends the rest", async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const up = upstream(
      () =>
        new Response(
          new ReadableStream({
            async start(c) {
              c.enqueue(new TextEncoder().encode("first|"));
              await released; // only sent once the client proved it got the first chunk
              c.enqueue(new TextEncoder().encode("second"));
              c.close();
            },
          }),
        ),
    );
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const res = await fetch(`${q.url}/`);
      const reader = res.body!.getReader();
      const first = await Promise.race([reader.read(), sleep(3000).then(() => null)]);
      expect(first).not.toBeNull(); // a buffering proxy would wait for "second" forever
      expect(new TextDecoder().decode(first!.value)).toBe("first|");
      release();
      let rest = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        rest += new TextDecoder().decode(value);
      }
      expect(rest).toBe("second");
    } finally {
      await q.stop();
      up.stop();
    }
  });

  test("streams a request body: the upstream sees the first chunk before the client sends the rest", async () => {
    let gotFirst!: () => void;
    const firstSeen = new Promise<void>((r) => (gotFirst = r));
    const up = upstream(async (req) => {
      const reader = req.body!.getReader();
      let text = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
        if (text.includes("first|")) gotFirst();
      }
      return new Response(text);
    });
    const q = await startInProcess(simpleConfig(up.port));
    try {
      const body = new ReadableStream({
        async start(c) {
          c.enqueue(new TextEncoder().encode("first|"));
          const ok = await Promise.race([firstSeen.then(() => true), sleep(3000).then(() => false)]);
          c.enqueue(new TextEncoder().encode(ok ? "second" : "TIMEOUT"));
          c.close();
        },
      });
      const res = await fetch(`${q.url}/up`, { method: "POST", body, duplex: "half" } as RequestInit);
      expect(await res.text()).toBe("first|second");
    } finally {
      await q.stop();
      up.stop();
    }
  });
  test("a whole body arriving with its head goes out byte for byte, whether our head fits where the upstream's was or not", async () => {
    // The listener writes its head into the bytes the upstream's head arrived in when there is room
    // (longer upstream head), and copies otherwise (shorter one: we add Date; a body in two writes).
    const body = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) % 251);
    const up = await rawUpstream((s) =>
      eachRequestHead(s, (head) => {
        const path = head.split(" ")[1]!;
        const b = body(path === "/split" ? 40_000 : 10_000, path.length);
        if (path === "/long") {
          const pad = "x".repeat(300);
          s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nX-Pad: ${pad}\r\nDate: Wed, 25 Nov 2026 10:00:00 GMT\r\nContent-Length: ${b.length}\r\n\r\n`), b]));
        } else if (path === "/short") {
          s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${b.length}\r\n\r\n`), b]));
        } else {
          s.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${b.length}\r\n\r\n`), b.subarray(0, 15_000)]));
          setTimeout(() => s.write(b.subarray(15_000)), 20);
        }
      }),
    );
    const q = await startInProcess(simpleConfig(up.port));
    try {
      for (let round = 0; round < 3; round++) {
        for (const path of ["/long", "/short", "/split", "/long"]) {
          const res = await fetch(`${q.url}${path}`);
          expect(res.status).toBe(200);
          const got = new Uint8Array(await res.arrayBuffer());
          expect(got).toEqual(body(path === "/split" ? 40_000 : 10_000, path.length));
          if (path === "/long") {
            expect(res.headers.get("x-pad")).toBe("x".repeat(300));
            expect(res.headers.get("keep-alive")).toBeNull();
            expect(res.headers.get("date")).toBe("Wed, 25 Nov 2026 10:00:00 GMT");
          } else {
            expect(res.headers.get("date")).not.toBeNull();
          }
        }
      }
    } finally {
      await q.stop();
      up.stop();
    }
  });
  test("the same heads again on one connection (parsed once, reused): each request and response is whole, with its own request id and mutations applied once", async () => {
    await buildStandardFilters("add-header");
    const seen: string[] = [];
    // One fixed response head; the body echoes the request's x-tag and x-request-id.
    const up = await rawUpstream((s) =>
      eachRequestHead(s, (head) => {
        seen.push(head);
        const tag = /\r\nx-tag: ([^\r]*)/i.exec(head)?.[1] ?? "-";
        const id = /\r\nx-request-id: ([^\r]*)/i.exec(head)?.[1] ?? "-";
        const body = `${tag} ${id}`;
        s.write(`HTTP/1.1 200 OK\r\nDate: Wed, 25 Nov 2026 10:00:00 GMT\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      }),
    );
    const q = await startInProcess(
      simpleConfig(up.port, {
        top: "filterDir: filters/dist",
        routeExtra: `    responseHeaders: { add: { x-route: r } }
    filters:
      - { name: add-header, config: { request: { x-filter: f }, response: { x-filter-res: g } } }`,
      }),
    );
    const socket = net.connect(q.port, "127.0.0.1");
    socket.setEncoding("latin1");
    let buf = "";
    const waiting: (() => void)[] = [];
    socket.on("data", (d: string) => {
      buf += d;
      waiting.shift()?.();
    });
    /** Sends one request on the kept-alive connection and reads its whole response. */
    const exchange = async (tag: string) => {
      socket.write(`GET /same HTTP/1.1\r\nHost: t\r\nX-Tag: ${tag}\r\n\r\n`);
      for (;;) {
        const end = buf.indexOf("\r\n\r\n");
        const m = /content-length: (\d+)/i.exec(buf);
        if (end !== -1 && m !== null && buf.length >= end + 4 + Number(m[1])) {
          const res = buf.slice(0, end + 4 + Number(m[1]));
          buf = buf.slice(res.length);
          return res;
        }
        await new Promise<void>((r) => waiting.push(r));
      }
    };
    try {
      const responses = [];
      for (const tag of ["a", "a", "a", "b", "b"]) responses.push(await exchange(tag));
      const ids = new Set<string>();
      responses.forEach((res, i) => {
        const lines = res.split("\r\n");
        const count = (name: string) => lines.filter((l) => l.toLowerCase().startsWith(`${name}:`)).length;
        expect(lines[0]).toBe("HTTP/1.1 200 OK");
        expect(count("x-route")).toBe(1);
        expect(count("x-filter-res")).toBe(1);
        expect(count("content-length")).toBe(1);
        const [tag, id] = res.slice(res.indexOf("\r\n\r\n") + 4).split(" ");
        expect(tag).toBe(i < 3 ? "a" : "b");
        ids.add(id!);
      });
      expect(ids.size).toBe(5);
      expect(seen.length).toBe(5);
      for (const head of seen) expect(head.match(/\r\nx-filter: f/gi)?.length).toBe(1);
    } finally {
      socket.destroy();
      await q.stop();
      up.stop();
    }
  });
  test("a filter's header value above U+00FF goes as its UTF-8 bytes both ways; latin1 values, the upstream's too, one byte per char", async () => {
    await buildStandardFilters("add-header");
    const heads: string[] = [];
    const up = await rawUpstream((s) =>
      eachRequestHead(s, (head) => {
        heads.push(head);
        s.write(Buffer.from("HTTP/1.1 200 OK\r\nX-Up: caf\xe9\r\nContent-Length: 2\r\n\r\nok", "latin1"));
      }),
    );
    const config = (request: string, response: string) =>
      simpleConfig(up.port, { top: "filterDir: filters/dist", routeExtra: `    filters:\n      - { name: add-header, config: { request: ${request}, response: ${response} } }` });
    // rawRequest and the upstream read latin1: one char per byte, so UTF-8 shows as its bytes.
    const utf8 = (t: string) => Buffer.from(t, "utf8").toString("latin1");
    let q = await startInProcess(config('{ x-g: "d\u00e9j\u00e0" }', '{ x-f: "d\u00e9j\u00e0" }'));
    try {
      const raw = await rawRequest(q.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
      expect(raw).toContain("x-f: d\xe9j\xe0\r\n");
      expect(raw).toContain("X-Up: caf\xe9\r\n");
      expect(heads.at(-1)!.split("\r\n")).toContain("x-g: d\xe9j\xe0");
    } finally {
      await q.stop();
    }
    q = await startInProcess(config('{ x-g: "prix 5 \u20ac" }', '{ x-f: "\u03c0 \u20ac" }'));
    try {
      const raw = await rawRequest(q.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
      expect(raw).toStartWith("HTTP/1.1 200 "); // was a 500: the request head refused the char
      expect(raw).toContain(`x-f: ${utf8("\u03c0 \u20ac")}\r\n`);
      // Only that value: the upstream's latin1 byte beside it is not re-encoded.
      expect(raw).toContain("X-Up: caf\xe9\r\n");
      expect(raw.endsWith("\r\n\r\nok")).toBe(true);
      expect(heads.at(-1)!.split("\r\n")).toContain(`x-g: prix 5 ${utf8("\u20ac")}`);
    } finally {
      await q.stop();
      up.stop();
    }
  });
  test("a route's header value above U+00FF goes as its UTF-8 bytes both ways; the upstream's latin1 bytes beside it stay as they are", async () => {
    const heads: string[] = [];
    const up = await rawUpstream((s) =>
      eachRequestHead(s, (head) => {
        heads.push(head);
        s.write(Buffer.from("HTTP/1.1 200 OK\r\nX-Up: caf\xe9\r\nContent-Length: 2\r\n\r\nok", "latin1"));
      }),
    );
    // Once with the value set (list path), once added (the same), once with a latin1-only value.
    const q = await startInProcess(
      simpleConfig(up.port, { routeExtra: '    requestHeaders: { set: { x-req: "prix 5 \u20ac" }, add: { x-lat: "d\u00e9j\u00e0" } }\n    responseHeaders: { add: { x-res: "\u03c0 \u20ac" } }' }),
    );
    try {
      const raw = await rawRequest(q.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
      // rawRequest and the upstream read latin1: one char per byte, so UTF-8 shows as its bytes.
      const utf8 = (t: string) => Buffer.from(t, "utf8").toString("latin1");
      expect(raw).toStartWith("HTTP/1.1 200 ");
      expect(raw).toContain(`x-res: ${utf8("\u03c0 \u20ac")}\r\n`);
      expect(raw.toLowerCase()).toContain("x-up: caf\xe9\r\n"); // not re-encoded (a route with mutations rebuilds the head: names lower-cased)
      expect(raw.endsWith("\r\n\r\nok")).toBe(true);
      const lines = heads[0]!.split("\r\n");
      expect(lines).toContain(`x-req: prix 5 ${utf8("\u20ac")}`);
      expect(lines).toContain("x-lat: d\xe9j\xe0"); // latin1 text: one byte per char, as before
    } finally {
      await q.stop();
      up.stop();
    }
  });
  test("headers a request filter only appends follow the client's lines as they came; one it changes sends the rebuilt list", async () => {
    await buildStandardFilters("add-header");
    const heads: string[] = [];
    const up = await rawUpstream((s) =>
      eachRequestHead(s, (h) => {
        heads.push(h);
        s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      }),
    );
    const config = (request: string) =>
      simpleConfig(up.port, { top: "filterDir: filters/dist", routeExtra: `    filters:\n      - { name: add-header, config: { request: ${request} } }` });
    const client = "GET /p?q=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: Case/1\r\nX-Client-Case: v\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-Request-Id: rid-1\r\n\r\n";
    const lines = () => heads.shift()!.split("\r\n");
    let q = await startInProcess(config("{ x-filter-req: g }"));
    try {
      expect(await rawRequest(q.port, client)).toContain("\r\n\r\nok");
      const sent = lines();
      expect(sent[0]).toBe("GET /p?q=1 HTTP/1.1");
      // The client's own lines, in their case, then the forwarding ones, then the filter's.
      expect(sent.slice(1, 5)).toEqual(["Host: t", "User-Agent: Case/1", "X-Client-Case: v", "X-Request-Id: rid-1"]);
      expect(sent.indexOf("x-filter-req: g")).toBeGreaterThan(sent.indexOf("x-forwarded-for: 127.0.0.1"));
      expect(sent.filter((l) => /^(x-hop|connection):/i.test(l))).toEqual([]);
    } finally {
      await q.stop();
    }
    q = await startInProcess(config("{ user-agent: mesh }"));
    try {
      expect(await rawRequest(q.port, client)).toContain("\r\n\r\nok");
      const sent = lines();
      expect(sent).toContain("user-agent: mesh");
      expect(sent).toContain("x-client-case: v");
      expect(sent.filter((l) => /^user-agent:/i.test(l))).toEqual(["user-agent: mesh"]);
      expect(sent.filter((l) => /^(x-hop|connection):/i.test(l))).toEqual([]);
    } finally {
      await q.stop();
      up.stop();
    }
  });
  test("headers a response filter only appends follow the upstream's lines as they came; one it changes sends the rebuilt list", async () => {
    await buildStandardFilters("add-header");
    const up = await rawUpstream((s) =>
      eachRequestHead(s, () => {
        s.write("HTTP/1.1 200 OK\r\nServer: up\r\nX-Up-Case: v\r\nConnection: x-hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok");
      }),
    );
    const config = (response: string) =>
      simpleConfig(up.port, { top: "filterDir: filters/dist", routeExtra: `    filters:\n      - { name: add-header, config: { request: {}, response: ${response} } }` });
    const head = (raw: string) => raw.slice(0, raw.indexOf("\r\n\r\n")).split("\r\n").slice(1);
    let q = await startInProcess(config("{ x-filter-res: g }"));
    try {
      const raw = await rawRequest(q.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
      const lines = head(raw);
      expect(lines).toContain("Server: up");
      expect(lines).toContain("X-Up-Case: v");
      expect(lines).toContain("x-filter-res: g");
      expect(lines.findIndex((l) => l === "x-filter-res: g")).toBeGreaterThan(lines.findIndex((l) => l === "X-Up-Case: v"));
      expect(lines.filter((l) => /^x-hop:/i.test(l) || /^connection: x-hop/i.test(l))).toEqual([]);
      expect(raw.endsWith("\r\n\r\nok")).toBe(true);
    } finally {
      await q.stop();
    }
    q = await startInProcess(config("{ server: mesh }"));
    try {
      const raw = await rawRequest(q.port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
      const lines = head(raw);
      expect(lines).toContain("server: mesh");
      expect(lines).toContain("x-up-case: v");
      expect(lines.filter((l) => /^server:/i.test(l))).toEqual(["server: mesh"]);
      expect(lines.filter((l) => /^x-hop:/i.test(l))).toEqual([]);
    } finally {
      await q.stop();
      up.stop();
    }
  });
});
