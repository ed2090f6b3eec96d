// The fetch listener: the request phases behind a Hono app on the runtime's fetch-style server
// (Bun.serve, Deno.serve), with MESHWASM_LISTENER=fetch or on a runtime without a TCP listener. Converts between fetch objects and the plain
// DownstreamRequest / DownstreamResponse the phases use.
import { Hono } from "hono";
import { platform, type ClientInfo } from "../platform/index.ts";
import type { HeaderList } from "../upstream/types.ts";
import type { DownstreamHandler, DownstreamRequest, DownstreamResponse } from "./types.ts";

export function fromRequest(req: Request, client: ClientInfo): DownstreamRequest {
  const url = req.url;
  const headers: HeaderList = [];
  req.headers.forEach((value, name) => {
    headers.push([name, value]);
  });
  const cl = req.headers.get("content-length");
  return {
    method: req.method,
    target: url.slice(url.indexOf("/", url.indexOf("//") + 2)),
    headers,
    body: req.body,
    // NaN for a malformed value: the phases answer 400.
    bodyLength: cl === null ? null : cl.trim() === "" ? Number.NaN : Number(cl),
    client,
    signal: req.signal,
  };
}

export function toResponse(res: DownstreamResponse): Response {
  let body: BodyInit | null = res.stream;
  if (res.chunks !== null) {
    let size = 0;
    for (const c of res.chunks) size += c.byteLength;
    body = size === 0 ? null : platform.bufferedBody(res.chunks, size);
  }
  return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** A fetch handler running `handle` for every request, through one catch-all Hono route. */
export function fetchHandler(handle: () => DownstreamHandler): (req: Request, client: ClientInfo) => Promise<Response> {
  const app = new Hono<{ Bindings: { client: ClientInfo } }>();
  app.all("*", async (c) => toResponse(await handle()(fromRequest(c.req.raw, c.env.client))));
  return (req, client) => Promise.resolve(app.fetch(req, { client }));
}
