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

export function createAdminApp(b: AdminBackend): Hono {
  const app = new Hono();
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
