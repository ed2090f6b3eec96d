// The runtime on Deno: proxying, config errors and the admin API, through real sockets.
// Run: deno test -A test/deno/proxy_deno.ts (npm test runs it).
import { MeshProxy } from "../../runtime/server.ts";
import { createLogger } from "../../runtime/observability/log.ts";

// deno-lint-ignore no-explicit-any
declare const Deno: any;

function assertEquals(actual: unknown, expected: unknown, what = "value"): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}
function assert(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

function startUpstream() {
  const ac = new AbortController();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} }, async (req: Request) => {
    const url = req.url;
    const target = url.slice(url.indexOf("/", url.indexOf("//") + 2));
    const headers: Record<string, string> = {};
    req.headers.forEach((v, k) => (headers[k] = v));
    const body = req.body ? await req.text() : "";
    return new Response(JSON.stringify({ method: req.method, target, headers, body }), {
      headers: [["content-type", "application/json"], ["set-cookie", "a=1"], ["set-cookie", "b=2"]],
    });
  });
  return { port: server.addr.port as number, stop: async () => { ac.abort(); await server.finished; } };
}

function config(upstreamPort: number, cluster = "up"): string {
  return `
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
routes:
  - name: main
    cluster: ${cluster}
    requestHeaders: { set: { x-added: yes } }
clusters:
  - { name: up, endpoints: ["127.0.0.1:${upstreamPort}"] }
  - { name: other, endpoints: ["127.0.0.1:${upstreamPort}"] }
`;
}

Deno.test("proxies a request with its body, path and query, adding forwarding headers", async () => {
  const up = startUpstream();
  const proxy = new MeshProxy({ log: createLogger({ level: "error" }) });
  await proxy.startFromText(config(up.port), "deno-test");
  try {
    const port = proxy.ports().listeners[0];
    const res = await fetch(`http://127.0.0.1:${port}/a%2Fb/c?x=1+2&x=&y`, { method: "POST", body: "payload" });
    assertEquals(res.status, 200, "status");
    assertEquals(res.headers.getSetCookie(), ["a=1", "b=2"], "set-cookie");
    const e = await res.json();
    assertEquals(e.target, "/a%2Fb/c?x=1+2&x=&y", "target");
    assertEquals(e.body, "payload", "body");
    assertEquals(e.headers["x-forwarded-for"], "127.0.0.1", "x-forwarded-for");
    assertEquals(e.headers["x-added"], "yes", "route header mutation");
    assert(/^[0-9a-f-]{36}$/.test(e.headers["x-request-id"]), "x-request-id generated");
  } finally {
    await proxy.shutdown(0);
    await up.stop();
  }
});

Deno.test("proxies a WebSocket: handshake, messages both ways and the close", async () => {
  const ac = new AbortController();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} }, (req: Request) => {
    const greeting = `hello ${new URL(req.url).pathname} ${req.headers.get("x-added")}`; // the request closes at the switch
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => socket.send(greeting);
    socket.onmessage = (e: MessageEvent) => socket.send(typeof e.data === "string" ? `echo ${e.data}` : e.data);
    return response;
  });
  const proxy = new MeshProxy({ log: createLogger({ level: "error" }) });
  await proxy.startFromText(config(server.addr.port), "deno-test");
  try {
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.ports().listeners[0]}/live`);
    const got: string[] = [];
    const closed = new Promise<number>((resolve) => (ws.onclose = (e) => resolve(e.code)));
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => {
      got.push(typeof e.data === "string" ? e.data : `binary ${(e.data as ArrayBuffer).byteLength}`);
      if (got.length === 1) ws.send("ping");
      else if (got.length === 2) ws.send(new Uint8Array(2 * 1024 * 1024).fill(1)); // past every buffer: backpressure both ways
      else ws.close(1000);
    };
    assertEquals(await closed, 1000, "close code");
    assertEquals(got, ["hello /live yes", "echo ping", `binary ${2 * 1024 * 1024}`], "messages");
  } finally {
    await proxy.shutdown(0);
    ac.abort();
    await server.finished;
  }
});

Deno.test("answers 503 upstream_refused with the JSON error body", async () => {
  const up = startUpstream();
  const port0 = up.port;
  await up.stop(); // nothing listens there now
  const proxy = new MeshProxy({ log: createLogger({ level: "error" }) });
  await proxy.startFromText(config(port0), "deno-test");
  try {
    const res = await fetch(`http://127.0.0.1:${proxy.ports().listeners[0]}/`);
    assertEquals(res.status, 503, "status");
    assertEquals(res.headers.get("x-mesh-error"), "upstream_refused", "x-mesh-error");
    assertEquals((await res.json()).route, "main", "route in body");
  } finally {
    await proxy.shutdown(0);
  }
});

Deno.test("admin API: /ready, /config, /metrics and a rejected then accepted PUT /config", async () => {
  const up = startUpstream();
  const proxy = new MeshProxy({ log: createLogger({ level: "error" }) });
  await proxy.startFromText(config(up.port), "deno-test");
  try {
    const { listeners, admin } = proxy.ports();
    const base = `http://127.0.0.1:${admin}`;
    assertEquals((await fetch(`${base}/ready`)).status, 200, "ready");
    const cfg = await (await fetch(`${base}/config`)).json();
    assertEquals([cfg.version, cfg.source], [1, "deno-test"], "config version and source");
    assert(cfg.runtime.startsWith("deno "), `runtime is deno, got ${cfg.runtime}`);
    assertEquals(cfg.listener, "native", "the native listener runs on Deno too");
    await (await fetch(`http://127.0.0.1:${listeners[0]}/x`)).text();
    const m = await (await fetch(`${base}/metrics`)).text();
    assert(m.includes('mesh_requests_total{route="main",cluster="up",code="200"} 1'), "request counted in metrics");

    let r = await fetch(`${base}/config`, { method: "PUT", body: config(up.port, "missing") });
    assertEquals(r.status, 400, "bad config rejected");
    assertEquals((await r.json()).errors, ['routes[0].cluster: unknown cluster "missing"'], "errors");
    r = await fetch(`${base}/config`, { method: "PUT", body: config(up.port, "other") });
    assertEquals(await r.json(), { ok: true, version: 2 }, "good config applied");
    await (await fetch(`http://127.0.0.1:${listeners[0]}/y`)).text();
    const m2 = await (await fetch(`${base}/metrics`)).text();
    assert(m2.includes('mesh_requests_total{route="main",cluster="other",code="200"} 1'), "new config serves");
  } finally {
    await proxy.shutdown(0);
    await up.stop();
  }
});

Deno.test("main.ts on Deno exits 1 and lists config errors with their paths", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/bad.yaml`;
  await Deno.writeTextFile(path, "routes:\n  - { name: r, cluster: c, match: { path: { prefix: nope } } }\nclusters:\n  - { name: c, endpoints: [bad] }\n");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", new URL("../../runtime/main.ts", import.meta.url).pathname, "--config", path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 1, "exit code");
  assert(stderr.includes('routes[0].match.path.prefix: expected a string starting with "/"'), `path error listed: ${stderr}`);
  assert(stderr.includes('clusters[0].endpoints[0]: expected "host:port"'), `endpoint error listed: ${stderr}`);
});
