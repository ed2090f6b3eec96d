// The admin API (loopback by default): health, the running config, metrics, reload, filter upload.
import { Hono } from "hono";

export interface AdminBackend {
  ready(): boolean;
  config(): { version: number; source: string; loadedAt: string; runtime: string; listener: string; config: unknown };
  metrics(): string;
  /** Re-read the config from where it came from (file). */
  reload(): Promise<{ ok: true; version: number } | { ok: false; errors: string[] }>;
  /** Replace the config with YAML or JSON text. */
  replace(text: string): Promise<{ ok: true; version: number } | { ok: false; errors: string[] }>;
  /** Hot-load a filter module. */
  loadFilter(name: string, bytes: Uint8Array, sha256: string | null): Promise<{ ok: true } | { ok: false; error: string }>;
}

/**
 * Whether a Host header names this machine by address or as localhost. A loopback admin API answers
 * only those: DNS rebinding (a page on attacker.example whose name is made to resolve to 127.0.0.1)
 * reaches loopback with the attacker's name as Host, and this API can replace the config.
 */
function isLocalHost(host: string | undefined): boolean {
  if (host === undefined || host === "") return false;
  if (host.startsWith("[")) return true; // an IPv6 literal
  const colon = host.indexOf(":");
  const name = (colon === -1 ? host : host.slice(0, colon)).toLowerCase();
  return name === "localhost" || /^\d{1,3}(?:\.\d{1,3}){3}$/.test(name);
}

export interface AdminOptions {
  /** The API listens on loopback: refuse requests whose Host is a DNS name other than localhost. */
  loopbackOnly: boolean;
}

export function createAdminApp(b: AdminBackend, opts: AdminOptions = { loopbackOnly: false }): Hono {
  const app = new Hono();
  if (opts.loopbackOnly) {
    app.use("*", async (c, next) => {
      const host = c.req.header("host");
      if (isLocalHost(host)) return next();
      return c.json(
        { error: "forbidden_host", message: `the admin API listens on loopback and answers only Host localhost or an IP address, not ${JSON.stringify(host ?? "")}` },
        403,
      );
    });
  }
  app.get("/live", (c) => c.text("live\n"));
  app.get("/ready", (c) => (b.ready() ? c.text("ready\n") : c.text("draining\n", 503)));
  app.get("/config", (c) => c.json(b.config()));
  app.get("/metrics", (c) => c.body(b.metrics(), 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }));
  app.post("/reload", async (c) => {
    const r = await b.reload();
    return r.ok ? c.json(r) : c.json(r, 400);
  });
  app.put("/config", async (c) => {
    const r = await b.replace(await c.req.text());
    return r.ok ? c.json(r) : c.json(r, 400);
  });
  app.put("/filters/:name", async (c) => {
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    const r = await b.loadFilter(c.req.param("name"), bytes, c.req.header("x-sha256") ?? c.req.query("sha256") ?? null);
    return r.ok ? c.json(r) : c.json(r, 400);
  });
  app.notFound((c) =>
    c.json({ error: "not_found", endpoints: ["GET /live", "GET /ready", "GET /config", "GET /metrics", "POST /reload", "PUT /config", "PUT /filters/:name"] }, 404),
  );
  return app;
}
