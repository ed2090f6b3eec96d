// The proxy as a real process: config errors, admin API, access log, reload, graceful shutdown.
import { describe, expect, test } from "bun:test";
import net from "node:net";
import { spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BUN, ROOT, buildStandardFilters, closedPort, echoUpstream, rawRequest, simpleConfig, sleep, startReadyProcess, tempDir, upstream } from "./harness.ts";

function twoClusterConfig(a: number, b: number, cluster: "a" | "b", extra = ""): string {
  return `
listeners: [{ address: 127.0.0.1, port: 0 }]
admin: { address: 127.0.0.1, port: 0 }
accessLog: { enabled: false }
${extra}
routes: [{ name: main, cluster: ${cluster} }]
clusters:
  - { name: a, endpoints: ["127.0.0.1:${a}"] }
  - { name: b, endpoints: ["127.0.0.1:${b}"] }
`;
}

describe("startup", () => {
  test("a bad config file exits non-zero listing every error with its field path", () => {
    const dir = tempDir();
    const path = join(dir, "bad.yaml");
    writeFileSync(path, `routes:\n  - name: r\n    cluster: c\n    match: { path: { prefix: api } }\n  - name: s\n    cluster: c\n    timeoutMs: -5\nclusters:\n  - name: c\n    endpoints: ["nohost"]\n`);
    const r = spawnSync(BUN, [join(ROOT, "runtime/main.ts"), "--config", path], { encoding: "utf8", timeout: 15000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`invalid config ${path}`);
    expect(r.stderr).toContain('routes[0].match.path.prefix: expected a string starting with "/"');
    expect(r.stderr).toContain("routes[1].timeoutMs:");
    expect(r.stderr).toContain('clusters[0].endpoints[0]: expected "host:port"');
  });

  test("--check validates without starting", () => {
    const dir = tempDir();
    const path = join(dir, "ok.yaml");
    writeFileSync(path, simpleConfig(1));
    const r = spawnSync(BUN, [join(ROOT, "runtime/main.ts"), "--config", path, "--check"], { encoding: "utf8", timeout: 15000 });
    expect(r.stdout).toContain("valid (1 routes, 1 clusters)");
    expect(r.status).toBe(0);
  });

  test("--check also runs each filter's config checks, as a start would", async () => {
    await buildStandardFilters("fault");
    const dir = tempDir();
    const path = join(dir, "filters.yaml");
    const fault = (percent: number) => `{ name: fault, config: { abort: { percent: ${percent}, status: 503 } } }`;
    const yaml = (percent: number) =>
      simpleConfig(1, { top: `filterDir: ${join(ROOT, "filters/dist")}`, routeExtra: `    filters: [${fault(percent)}]` });
    writeFileSync(path, yaml(150));
    const bad = spawnSync(BUN, [join(ROOT, "runtime/main.ts"), "--config", path, "--check"], { encoding: "utf8", timeout: 30000 });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain("routes[0].filters[0].config");
    writeFileSync(path, yaml(10));
    const good = spawnSync(BUN, [join(ROOT, "runtime/main.ts"), "--config", path, "--check"], { encoding: "utf8", timeout: 30000 });
    expect(good.stdout).toContain("valid (1 routes, 1 clusters)");
    expect(good.status).toBe(0);
  });

  test("a missing config file is a clear error", () => {
    const r = spawnSync(BUN, [join(ROOT, "runtime/main.ts"), "--config", "/nonexistent/mesh.yaml"], { encoding: "utf8", timeout: 15000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("/nonexistent/mesh.yaml");
  });
});

describe("admin API", () => {
  test("/live, /ready, /config and /metrics", async () => {
    const echo = echoUpstream();
    const p = await startReadyProcess(simpleConfig(echo.port));
    try {
      const admin = `http://127.0.0.1:${p.admin}`;
      expect((await fetch(`${admin}/live`)).status).toBe(200);
      expect((await fetch(`${admin}/ready`)).status).toBe(200);
      const cfg = (await (await fetch(`${admin}/config`)).json()) as { version: number; source: string; runtime: string; listener: string; config: { routes: { name: string }[] } };
      expect(cfg.version).toBe(1);
      expect(cfg.source).toEndWith("config.yaml");
      expect(cfg.runtime).toStartWith("bun ");
      expect(cfg.listener).toBe("native");
      expect(cfg.config.routes[0]!.name).toBe("main");

      for (let i = 0; i < 3; i++) await (await fetch(`${p.url}/x`)).text();
      await (await fetch(`${p.url}/x`, { method: "POST", body: "b" })).text();
      const m = await (await fetch(`${admin}/metrics`)).text();
      expect(m).toContain('mesh_requests_total{route="main",cluster="up",code="200"} 4');
      expect(m).toContain('mesh_request_duration_seconds_count{route="main"} 4');
      expect(m).toMatch(/mesh_request_duration_seconds_bucket\{route="main",le="\+Inf"\} 4/);
      expect(m).toContain("# TYPE mesh_requests_in_flight gauge");
      expect(m).toContain("# TYPE mesh_upstream_connect_failures_total counter");
    } finally {
      p.kill("SIGKILL");
      echo.stop();
    }
  });

  test("on loopback, answers only Host localhost or an IP address (DNS rebinding)", async () => {
    const echo = echoUpstream();
    const p = await startReadyProcess(simpleConfig(echo.port));
    try {
      const as = (host: string) => rawRequest(p.admin, `GET /config HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      const refused = await as(`attacker.example:${p.admin}`);
      expect(refused).toStartWith("HTTP/1.1 403");
      expect(refused).toContain("forbidden_host");
      for (const host of [`localhost:${p.admin}`, `127.0.0.1:${p.admin}`, "[::1]"]) expect(await as(host)).toStartWith("HTTP/1.1 200");
    } finally {
      p.kill("SIGKILL");
      echo.stop();
    }
  });
});

describe("access log", () => {
  test("writes one JSON line per request on stdout", async () => {
    const echo = echoUpstream();
    const p = await startReadyProcess(simpleConfig(echo.port).replace("accessLog: { enabled: false }", "accessLog: { enabled: true }"));
    try {
      await (await fetch(`${p.url}/logged?q=1`, { method: "POST", body: "12345", headers: { "x-request-id": "req-42" } })).text();
      await (await fetch(`${p.url}/second`)).text();
      for (let i = 0; i < 50 && p.stdout.length < 2; i++) await sleep(20);
      expect(p.stdout.length).toBe(2);
      const line = JSON.parse(p.stdout[0]!);
      expect(line).toMatchObject({ requestId: "req-42", method: "POST", path: "/logged?q=1", status: 200, route: "main", cluster: "up", upstream: `127.0.0.1:${echo.port}`, bytesIn: 5, client: "127.0.0.1", error: null });
      expect(line.bytesOut).toBeGreaterThan(0);
      expect(typeof line.durationMs).toBe("number");
      expect(Date.parse(line.time)).not.toBeNaN();
    } finally {
      p.kill("SIGKILL");
      echo.stop();
    }
  });

  test("an upload cut short logs the body bytes that arrived, not its Content-Length", async () => {
    const echo = echoUpstream();
    const p = await startReadyProcess(simpleConfig(echo.port).replace("accessLog: { enabled: false }", "accessLog: { enabled: true }"));
    try {
      // A reset (the client gone: 499) and a FIN (the body can never end: 400), each after 1,234 of 100,000 bytes.
      for (const [end, status, error] of [["reset", 499, "downstream_cancelled"], ["fin", 400, "bad_request"]] as const) {
        const socket = net.connect(p.port, "127.0.0.1");
        socket.on("error", () => {});
        await new Promise<void>((resolve) => socket.once("connect", resolve));
        socket.write(`POST /upload-${end} HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n` + "x".repeat(1234));
        await sleep(200);
        const before = p.stdout.length;
        if (end === "reset") socket.resetAndDestroy();
        else socket.end();
        for (let i = 0; i < 100 && p.stdout.length === before; i++) await sleep(20);
        const line = JSON.parse(p.stdout.at(-1)!);
        expect(line).toMatchObject({ method: "POST", path: `/upload-${end}`, status, bytesIn: 1234, error });
        socket.destroy();
      }
    } finally {
      p.kill("SIGKILL");
      echo.stop();
    }
  });

  test("an error's line carries the full message as detail; the client's error body leaves the endpoint out", async () => {
    const port = await closedPort();
    const p = await startReadyProcess(simpleConfig(port).replace("accessLog: { enabled: false }", "accessLog: { enabled: true }"));
    try {
      const res = await fetch(`${p.url}/down`);
      expect(res.status).toBe(503);
      const body = (await res.json()) as { message: string };
      expect(body.message).not.toContain(String(port));
      for (let i = 0; i < 50 && p.stdout.length < 1; i++) await sleep(20);
      const line = JSON.parse(p.stdout[0]!);
      expect(line).toMatchObject({ status: 503, error: "upstream_refused", upstream: `127.0.0.1:${port}` });
      expect(line.detail).toContain("ECONNREFUSED"); // the cause, which the body states only generically
      expect(body.message).not.toContain("ECONNREFUSED");
    } finally {
      p.kill("SIGKILL");
    }
  });

  test("can be turned off", async () => {
    const echo = echoUpstream();
    const p = await startReadyProcess(simpleConfig(echo.port));
    try {
      await (await fetch(`${p.url}/quiet`)).text();
      await sleep(150);
      expect(p.stdout).toEqual([]);
    } finally {
      p.kill("SIGKILL");
      echo.stop();
    }
  });
});

describe("reload", () => {
  test("SIGHUP applies a good file; a bad file keeps the running config and reports the errors", async () => {
    const a = upstream(() => new Response("A"));
    const b = upstream(() => new Response("B"));
    const dir = tempDir();
    const path = join(dir, "mesh.yaml");
    const p = await startReadyProcess(twoClusterConfig(a.port, b.port, "a"), { configPath: path });
    try {
      expect(await (await fetch(p.url)).text()).toBe("A");

      writeFileSync(path, twoClusterConfig(a.port, b.port, "b"));
      p.kill("SIGHUP");
      await p.waitForLog("config applied");
      expect(await (await fetch(p.url)).text()).toBe("B");

      writeFileSync(path, twoClusterConfig(a.port, b.port, "a").replace("cluster: a", "cluster: missing"));
      p.kill("SIGHUP");
      const rejected = await p.waitForLog("config rejected; the running config is unchanged");
      expect(rejected.errors).toEqual(['routes[0].cluster: unknown cluster "missing"']);
      expect(await (await fetch(p.url)).text()).toBe("B");
      const cfg = (await (await fetch(`http://127.0.0.1:${p.admin}/config`)).json()) as { version: number };
      expect(cfg.version).toBe(2);
    } finally {
      p.kill("SIGKILL");
      a.stop();
      b.stop();
    }
  });

  test("POST /reload and PUT /config: 400 with errors for a bad config, 200 with the new version for a good one", async () => {
    const a = upstream(() => new Response("A"));
    const b = upstream(() => new Response("B"));
    const dir = tempDir();
    const path = join(dir, "mesh.yaml");
    const p = await startReadyProcess(twoClusterConfig(a.port, b.port, "a"), { configPath: path });
    const admin = `http://127.0.0.1:${p.admin}`;
    try {
      writeFileSync(path, "routes: [ {name: x");
      let r = await fetch(`${admin}/reload`, { method: "POST" });
      expect(r.status).toBe(400);
      const body = (await r.json()) as { ok: boolean; errors: string[] };
      expect(body.ok).toBe(false);
      expect(body.errors[0]).toStartWith("yaml:");
      expect(await (await fetch(p.url)).text()).toBe("A");

      r = await fetch(`${admin}/config`, { method: "PUT", body: twoClusterConfig(a.port, b.port, "b") });
      expect(await r.json()).toEqual({ ok: true, version: 2 });
      expect(await (await fetch(p.url)).text()).toBe("B");
      const cfg = (await (await fetch(`${admin}/config`)).json()) as { source: string };
      expect(cfg.source).toBe("admin");

      // The admin listener cannot move at run time: refused, and nothing else changes either.
      r = await fetch(`${admin}/config`, { method: "PUT", body: twoClusterConfig(a.port, b.port, "a").replace("admin: { address: 127.0.0.1, port: 0 }", "admin: { address: 127.0.0.1, port: 19999 }") });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { errors: string[] }).errors[0]).toStartWith("admin: the admin listener cannot change at run time");
      expect(await (await fetch(p.url)).text()).toBe("B");

      // A file that has gone is a rejected reload like any other: reported, counted.
      rmSync(path);
      r = await fetch(`${admin}/reload`, { method: "POST" });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { errors: string[] }).errors[0]).toStartWith("(file): cannot read");

      const m = await (await fetch(`${admin}/metrics`)).text();
      expect(m).toContain('mesh_config_reloads_total{result="rejected"} 3');
      expect(m).toContain('mesh_config_reloads_total{result="ok"} 1');
    } finally {
      p.kill("SIGKILL");
      a.stop();
      b.stop();
    }
  });

  test("a request in flight during a reload finishes on the old config", async () => {
    const a = upstream(async () => {
      await sleep(600);
      return new Response("A-slow");
    });
    const b = upstream(() => new Response("B"));
    const dir = tempDir();
    const path = join(dir, "mesh.yaml");
    const p = await startReadyProcess(twoClusterConfig(a.port, b.port, "a"), { configPath: path });
    try {
      const slow = fetch(p.url).then((r) => r.text());
      await sleep(100);
      const r = await fetch(`http://127.0.0.1:${p.admin}/config`, { method: "PUT", body: twoClusterConfig(a.port, b.port, "b") });
      expect(r.status).toBe(200);
      expect(await (await fetch(p.url)).text()).toBe("B");
      expect(await slow).toBe("A-slow");
    } finally {
      p.kill("SIGKILL");
      a.stop();
      b.stop();
    }
  });
});

describe("graceful shutdown", () => {
  test("SIGTERM lets in-flight requests finish, refuses new ones and exits 0", async () => {
    const slowUp = upstream(async () => {
      await sleep(800);
      return new Response("done");
    });
    const p = await startReadyProcess(simpleConfig(slowUp.port, { top: "drainTimeoutMs: 5000" }));
    try {
      const inflight = [1, 2, 3].map(() => fetch(p.url).then(async (r) => [r.status, await r.text()]));
      await sleep(200);
      p.kill("SIGTERM");
      await sleep(100);
      const refused = await fetch(p.url).then(
        () => "accepted",
        () => "refused",
      );
      expect(refused).toBe("refused");
      expect(await Promise.all(inflight)).toEqual([
        [200, "done"],
        [200, "done"],
        [200, "done"],
      ]);
      expect(await p.exited).toBe(0);
    } finally {
      p.kill("SIGKILL");
      slowUp.stop();
    }
  });

  test("SIGTERM gives up after drainTimeoutMs and still exits 0", async () => {
    const hung = upstream(async () => {
      await sleep(10_000);
      return new Response("never");
    });
    const p = await startReadyProcess(simpleConfig(hung.port, { top: "drainTimeoutMs: 300", routeExtra: "    timeoutMs: 0" }));
    try {
      const inflight = fetch(p.url).then(
        (r) => r.status,
        () => "aborted",
      );
      await sleep(150);
      const t0 = performance.now();
      p.kill("SIGTERM");
      expect(await p.exited).toBe(0);
      expect(performance.now() - t0).toBeLessThan(3000);
      expect(await inflight).toBe("aborted");
    } finally {
      p.kill("SIGKILL");
      hung.stop();
    }
  });
});
