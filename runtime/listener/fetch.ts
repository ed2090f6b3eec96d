// The fetch listener: the request phases behind a Hono app on the runtime's fetch-style server
// (Bun.serve, Deno.serve), with MESHWASM_LISTENER=fetch or on a runtime without a TCP listener. Converts between fetch objects and the plain
// DownstreamRequest / DownstreamResponse the phases use.
import { Hono } from "hono";
import { ProxyError } from "../errors.ts";
import { platform, type ClientInfo } from "../platform/index.ts";
import { byteString, isLatin1 } from "../upstream/http1/byte-string.ts";
import type { HeaderList } from "../upstream/types.ts";
import { linePairs } from "../proxy/headers.ts";
import type { DownstreamHandler, DownstreamRequest, DownstreamResponse } from "./types.ts";

/** Path and query of a request URL: absolute ("http://host/p?q") normally, just "/p?q" when the request had no Host (Bun). */
function targetOf(url: string): string {
  if (url.charCodeAt(0) === 0x2f /* "/" */) return url;
  const slash = url.indexOf("/", url.indexOf("//") + 2);
  return slash === -1 ? "/" : url.slice(slash);
}

export function fromRequest(req: Request, client: ClientInfo): DownstreamRequest {
  const url = req.url;
  const headers: HeaderList = [];
  req.headers.forEach((value, name) => {
    headers.push([name, value]);
  });
  const cl = req.headers.get("content-length");
  return {
    method: req.method,
    target: targetOf(url),
    headers,
    wire: null,
    body: req.body,
    // NaN for a malformed value: the phases answer 400.
    bodyLength: cl === null ? null : cl.trim() === "" ? Number.NaN : Number(cl),
    client,
    // Not Request.signal: Bun aborts it for pipelined and half-closed requests whose client is still
    // there, and Deno (legacy behaviour) when a response succeeds. Only the native listener cancels.
    signal: null,
  };
}

export function toResponse(res: DownstreamResponse): Response {
  let body: BodyInit | null = res.stream;
  if (res.chunks !== null) {
    let size = 0;
    for (const c of res.chunks) size += c.byteLength;
    body = size === 0 ? null : platform.bufferedBody(res.chunks, size);
  }
  // fetch's Headers take byte strings: a filter's "π €" goes as its UTF-8 bytes, as on the native listener.
  // A new list only in that rare case: this runs for every response.
  const own = res.headers.every(([, value]) => isLatin1(value)) ? res.headers : res.headers.map(([name, value]): [string, string] => [name, byteString(value)]);
  const headers = res.wire ? [...linePairs(res.wire.lines), ...own] : own;
  return new Response(body, { status: res.status, statusText: res.statusText, headers });
}

/** Answers a request the listener refuses before the phases: counted and logged like any other error. */
export type Refuse = (err: ProxyError, client: ClientInfo, head: { method: string; target: string }) => DownstreamResponse;

/**
 * What the runtime's server lets through, checked here as the native listener does it: it joins
 * repeated Host headers into one and passes any Expect on.
 */
function refusal(req: Request): ProxyError | null {
  const host = req.headers.get("host");
  if (host !== null && host.includes(",")) return new ProxyError("downstream", "bad_request", "more than one Host header");
  const expect = req.headers.get("expect");
  if (expect !== null && expect.toLowerCase() !== "100-continue") return new ProxyError("downstream", "expectation_failed", `unsupported expectation ${JSON.stringify(expect.slice(0, 64))}`);
  return null;
}

/** A fetch handler running `handle` for every request, through one catch-all Hono route. */
export function fetchHandler(handle: () => DownstreamHandler, refuse: () => Refuse): (req: Request, client: ClientInfo) => Promise<Response> {
  const app = new Hono<{ Bindings: { client: ClientInfo } }>();
  app.all("*", async (c) => {
    const req = c.req.raw;
    const err = refusal(req);
    if (err !== null) return toResponse(refuse()(err, c.env.client, { method: req.method, target: targetOf(req.url) }));
    const handler = handle();
    return toResponse(await new Promise<DownstreamResponse>((reply) => handler(fromRequest(req, c.env.client), reply)));
  });
  return (req, client) => Promise.resolve(app.fetch(req, { client }));
}
