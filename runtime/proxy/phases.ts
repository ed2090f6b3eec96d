// The request's phases, in the order they run. Each phase is a method below; read top to bottom.
//
//   1. downstreamChecks   header and body limits                        -> 431 / 413
//   2. route              first matching route of the running snapshot   -> 404
//   3. upstreamRequest    target rewrite, hop-by-hop removal, X-Forwarded-*, x-request-id, header mutations
//   4. requestFilters     the route's WebAssembly chain: continue, respond, delay, fail
//   5. upstreamPeer       weighted cluster, then an endpoint from its balancer    -> 503
//   6. forward            send through the upstream client under the route timeout -> 502 / 503 / 504
//   7. responseFilters    the chain's response phase: continue, respond, retry, fail
//   8. downstreamResponse hop-by-hop removal, header mutations, body streamed back
//   9. logging            access log line and metrics, when the response body ends
//
// Errors from any phase are ProxyErrors; `handle` turns them into the one error response shape.
import { randomUUID } from "node:crypto";
import * as clock from "../platform/clock.ts";
import { ProxyError, errorResponse, toProxyError } from "../errors.ts";
import type { DownstreamRequest, DownstreamResponse } from "../listener/types.ts";
import type { AccessLog } from "../observability/access-log.ts";
import type { Logger } from "../observability/log.ts";
import type { ClientInfo } from "../platform/types.ts";
import { hashKeyOf } from "../upstream/balancers.ts";
import type { CancelSignal, Endpoint, ForwardOptions, HeaderList, ParsedLines, ResponseReceiver, Tunnel, UpstreamClient, UpstreamRequest, UpstreamResponse } from "../upstream/types.ts";
import type { RequestContext } from "./context.ts";
import { LinesHeaders, ListHeaders, type FilterHeaders } from "./filter-headers.ts";
import { HOP_BY_HOP, applyMutation, connectionTokens, getHeader, withoutLines, withoutPairs } from "./headers.ts";
import { hasHiddenDotSegments, removeDotSegments } from "./path.ts";
import { normalizeHost, type MatchInput } from "./router.ts";
import type { ClusterRuntime, RouteRuntime, Snapshot } from "./snapshot.ts";
import type { ProxyStats } from "./stats.ts";
import type { FilterChain } from "../wasm/types.ts";

export interface ProxyDeps {
  readonly client: UpstreamClient;
  readonly stats: ProxyStats;
  accessLog: AccessLog;
  log: Logger;
  /** "http" now; "https" once listeners speak TLS. */
  scheme: string;
}

/** Per-request state that outlives the phase that made it, for logging and the balancer. */
interface Exchange {
  readonly startedAt: number;
  readonly client: ClientInfo;
  readonly method: string;
  requestId: string;
  /** The Host header as sent ("" when absent). */
  host: string;
  target: string;
  route: RouteRuntime | null;
  cluster: ClusterRuntime | null;
  endpoint: Endpoint | null;
  bytesIn: number;
  /** Set by the body counter when the client sends more than the limit. */
  bodyTooLarge: boolean;
  /** The access log line was written (a stream can end, error and be cancelled). */
  logged: boolean;
  /** Response body bytes, when known before the body is sent (in-memory, filter and error bodies). */
  bytesOut: number;
  /** A streamed body will report its end through onBodyEnd: log then, not now. */
  deferred: boolean;
  /** The full message of the error the proxy answered with, for the access log. */
  detail: string | null;
}

/**
 * What goes upstream of the client's headers: all but those at the indices in `drop`, then the
 * forwarding headers (X-Forwarded-For always; the others when not null).
 */
interface UpstreamHeaders {
  readonly drop: readonly number[] | null;
  readonly forwardedFor: string;
  readonly forwardedProto: string | null;
  readonly forwardedHost: string | null;
  readonly requestId: string | null;
  /** A Host header is among those kept. */
  readonly hasHost: boolean;
  /**
   * The client's Upgrade value when it asks to switch protocols and may (the listener can switch, a
   * GET without a body, every protocol offered allowed on the route): sent on with `connection: upgrade`.
   */
  upgrade: string | null;
}

/** The client's headers that go upstream, then the added ones, as one list (for filters and header mutations). */
function headerList(headers: HeaderList, up: UpstreamHeaders): HeaderList {
  const out = withoutPairs(headers, up.drop);
  out.push(["x-forwarded-for", up.forwardedFor]);
  if (up.forwardedProto !== null) out.push(["x-forwarded-proto", up.forwardedProto]);
  if (up.forwardedHost !== null) out.push(["x-forwarded-host", up.forwardedHost]);
  if (up.requestId !== null) out.push(["x-request-id", up.requestId]);
  if (up.upgrade !== null) out.push(["connection", "upgrade"], ["upgrade", up.upgrade]);
  return out;
}

/**
 * The client's header lines that go upstream, then the added ones as lines: our names, and values
 * made of ours (address, scheme, id) and of the client's checked ones (X-Forwarded-For, Host), so the
 * upstream client need not check them again.
 */
function headerLines(lines: string, up: UpstreamHeaders): string {
  let out = (up.drop === null ? lines : withoutLines(lines, up.drop)) + "x-forwarded-for: " + up.forwardedFor + "\r\n";
  if (up.forwardedProto !== null) out += "x-forwarded-proto: " + up.forwardedProto + "\r\n";
  if (up.forwardedHost !== null) out += "x-forwarded-host: " + up.forwardedHost + "\r\n";
  if (up.requestId !== null) out += "x-request-id: " + up.requestId + "\r\n";
  if (up.upgrade !== null) out += "connection: upgrade\r\nupgrade: " + up.upgrade + "\r\n";
  return out;
}

/** A header list seen as parsed lines are (names and values by index), for requests that come as a list. */
function listView(list: HeaderList): Pick<ParsedLines, "names" | "value" | "connection"> {
  const connection = list.filter((h) => h[0] === "connection").map((h) => h[1]).join(", ");
  return { names: list.map((h) => h[0]), value: (i) => list[i]![1], connection };
}

/** Request header bytes as counted for limits.maxRequestHeaderBytes when there are no lines: "name: value" and CRLF. */
function listBytes(list: HeaderList): number {
  let bytes = 0;
  for (const h of list) bytes += h[0].length + h[1].length + 4;
  return bytes;
}

/** Whether every protocol an Upgrade value offers ("websocket", "foo/2, bar") is one the route allows. */
function upgradeAllowed(value: string, allowed: ReadonlySet<string>): boolean {
  if (allowed.size === 0) return false;
  for (const part of value.split(",")) {
    const item = part.trim().toLowerCase();
    const slash = item.indexOf("/");
    if (!allowed.has(slash === -1 ? item : item.slice(0, slash))) return false;
  }
  return true;
}

/** Lets go of an upstream response nobody will send: its body, or its switched connection. */
function discard(res: UpstreamResponse | null): void {
  if (res === null) return;
  if (res.body) void res.body.cancel().catch(() => {});
  res.tunnel?.destroy();
}

/** Shared empty list for responses whose headers all travel as lines: never added to. */
const NO_HEADERS = Object.freeze([]) as unknown as HeaderList;

const NO_BODY_STATUS = (s: number) => s === 204 || s === 304 || (s >= 100 && s < 200);

/** Upper bound on upstream attempts per request, whatever a filter asks: protects against a buggy retry filter. */
export const MAX_ATTEMPTS = 10;

/** The client went away before its response: logged (status 499) and counted; nothing is sent. */
function cancelled(): ProxyError {
  return new ProxyError("downstream", "downstream_cancelled", "the client closed the connection before the response");
}

function filterFailure(out: { filter: string; phase: string; reason: string }): ProxyError {
  return new ProxyError("filter", "filter_failed", `filter "${out.filter}" failed in its ${out.phase} phase: ${out.reason}`, {
    detail: { filter: out.filter, phase: out.phase },
  });
}

type Reply = (res: DownstreamResponse) => void;

/**
 * The headers response filters appended to an upstream response's own, when appending is all they
 * did (every original header still there, in order, same value; nothing added that frames the body
 * or is hop-by-hop); null when they did anything else, and the list must be rebuilt.
 */
function appendedHeaders(res: UpstreamResponse): HeaderList | null {
  const wire = res.wire;
  if (wire === undefined) return null;
  const list = wire.listIfMade();
  if (list === null) return NO_HEADERS; // nobody even looked
  const names = wire.names;
  const n = names.length;
  if (list.length < n) return null;
  for (let i = 0; i < n; i++) {
    const h = list[i]!;
    if (h[0] !== names[i] || h[1] !== wire.value(i)) return null;
  }
  return list.length === n ? NO_HEADERS : plainAppends(list.slice(n), wire);
}

/** The client's header lines that go upstream and the forwarding ones, as the upstream client takes them. */
function upstreamWire(wire: ParsedLines, up: UpstreamHeaders): NonNullable<UpstreamRequest["wire"]> {
  return { lines: headerLines(wire.lines, up), high: wire.high, host: up.hasHost };
}

/**
 * A request's headers as its filters see them: the client's lines that go upstream, then the
 * forwarding headers (made as pairs only if a filter asks for one), then what filters append.
 */
class RequestHeaders extends LinesHeaders {
  private forwarded: HeaderList | null = null;
  private sent: UpstreamRequest["wire"] = null;
  constructor(
    private readonly req: DownstreamRequest,
    private readonly up: UpstreamHeaders,
  ) {
    super(req.wire!, req, up.drop, false);
  }
  protected override extra(): HeaderList {
    return (this.forwarded ??= headerList(NO_HEADERS, this.up));
  }
  /** What goes upstream ahead of `appended` while the list is not made (the same for every attempt). */
  upstreamLines(): NonNullable<UpstreamRequest["wire"]> {
    return (this.sent ??= upstreamWire(this.req.wire!, this.up));
  }
}

/**
 * The headers response filters appended after the upstream's own, when that is all they did and none
 * of them frames the body, is hop-by-hop or is Date (those need the list path); null otherwise.
 */
function plainAppends(appended: HeaderList, wire: ParsedLines): HeaderList | null {
  if (appended.length === 0) return NO_HEADERS;
  const extraHop = connectionTokens(wire.connection);
  for (let i = 0; i < appended.length; i++) {
    const name = appended[i]![0];
    if (HOP_BY_HOP.has(name) || extraHop?.has(name) || name === "content-length" || name === "transfer-encoding" || name === "date") return null;
  }
  return appended;
}

// Helpers that make closures live outside the per-request methods: a method that makes a closure
// keeps the variables it captures in a heap scope from its first line, even on paths that never make it.
function hashKeyFor(hashOn: Parameters<typeof hashKeyOf>[0], req: DownstreamRequest, address: string): string | null {
  return hashKeyOf(hashOn, (n) => getHeader(req.headers, n), address);
}

function replySoon(reply: Reply, res: DownstreamResponse): void {
  queueMicrotask(() => reply(res));
}

/** What routing asks of a request: one object, refilled for each (matching is synchronous), not one per request. */
class RouteQuery implements MatchInput {
  host = "";
  path = "";
  method = "";
  req: DownstreamRequest | null = null;
  header(name: string): string | null {
    return getHeader(this.req!.headers, name);
  }
}

function forwardOptions(cluster: ClusterRuntime, timeoutMs: number, signal: CancelSignal | null, staleRetry: boolean): ForwardOptions {
  const opts: ForwardOptions = { timeoutMs, connectTimeoutMs: cluster.config.connectTimeoutMs };
  if (signal !== null) opts.signal = signal;
  if (!staleRetry) opts.staleRetry = false;
  return opts;
}

/** What carries one request to its reply: hands the listener its response once. */
class Replying {
  private replied = false;
  /** Still inside Proxy.handle(): a response now goes out on a microtask (DownstreamHandler). */
  inHandler = false;

  constructor(private readonly reply: Reply) {}

  /** The response for the listener, once: a second one (a bug, or a throw after replying) is dropped. */
  respond(res: DownstreamResponse): void {
    if (this.replied) return;
    this.replied = true;
    if (this.inHandler) replySoon(this.reply, res);
    else this.reply(res);
  }
}

/**
 * One forward of a route without filters, as the client's receiver: the one object that carries the
 * request from the forward to the reply (instead of a promise chain and its closures).
 */
class Forwarding extends Replying implements ResponseReceiver {
  constructor(
    private readonly proxy: Proxy,
    readonly req: DownstreamRequest,
    readonly x: Exchange,
    readonly route: RouteRuntime,
    readonly endpoint: Endpoint,
    /** The clock reading the forward started at. */
    readonly started: number,
    readonly timeoutMs: number,
    reply: Reply,
  ) {
    super(reply);
  }

  onResponse(res: UpstreamResponse): void {
    this.proxy.forwarded(this, res);
  }

  onError(err: unknown): void {
    this.proxy.forwardFailed(this, err);
  }
}

const START = 0;
const ATTEMPT = 1;
const ANSWER = 2;
type Step = typeof START | typeof ATTEMPT | typeof ANSWER;

/**
 * A request on a route with filters, from its request filters to the reply, as the state the steps
 * share (Proxy.requestFilters .. afterAttempt); also the client's receiver for each attempt.
 */
class Filtered extends Replying implements ResponseReceiver {
  ctx: RequestContext | null = null;
  /** The request body held whole for a filter that reads it (and for replays). */
  replayBody: Uint8Array | null = null;
  /** When the route timeout ends (Infinity: none); set once the request filters are done. */
  deadline = Infinity;
  raceResent = false;
  /** The current attempt's endpoint, clock reading and timeout. */
  endpoint: Endpoint | null = null;
  started = 0;
  timeoutMs = 0;
  timeoutKind: "per-try" | "route" = "route";
  /** A filter's own answer, while its delay runs. */
  answer: DownstreamResponse | null = null;
  /** The request asks to switch protocols (UpstreamRequest.upgrade). */
  upgrade = false;

  constructor(
    private readonly proxy: Proxy,
    readonly req: DownstreamRequest,
    readonly x: Exchange,
    readonly route: RouteRuntime,
    readonly chain: FilterChain,
    readonly target: string,
    readonly headers: FilterHeaders,
    readonly body: ReadableStream<Uint8Array> | null,
    readonly bodyLength: number | null,
    reply: Reply,
  ) {
    super(reply);
  }

  onResponse(res: UpstreamResponse): void {
    this.proxy.attemptAnswered(this, res);
  }

  onError(err: unknown): void {
    this.proxy.attemptFailed(this, err);
  }
}

export class Proxy {
  private snapshot: Snapshot;
  private inFlight = 0;
  private readonly query = new RouteQuery();
  /** Requests started since this Proxy was made (the idle collector watches it). */
  served = 0;

  constructor(
    snapshot: Snapshot,
    private readonly deps: ProxyDeps,
  ) {
    this.snapshot = snapshot;
  }

  /** Swap the running config. Requests already in `handle` keep the snapshot they started with. */
  setSnapshot(s: Snapshot): void {
    this.snapshot = s;
  }

  /** Swap the access log (config reload). */
  setAccessLog(log: AccessLog): void {
    this.deps.accessLog = log;
  }

  current(): Snapshot {
    return this.snapshot;
  }

  /** Requests started and not yet finished (response body included); the in-flight gauge reads it at scrape time. */
  active(): number {
    return this.inFlight;
  }

  /** Entry point for every downstream request: `reply` gets its response (an error is one too), once. */
  handle = (req: DownstreamRequest, reply: Reply): void => {
    const snap = this.snapshot;
    const x = this.exchange(req.client, req.method, req.target);
    try {
      this.run(snap, req, x, reply);
    } catch (err) {
      replySoon(reply, this.failed(req, x, err)); // never before handle() returns (DownstreamHandler)
    }
  };

  /** Any phase failed: the one error response, counted and logged. */
  private failed(req: DownstreamRequest, x: Exchange, err: unknown): DownstreamResponse {
    const e = x.bodyTooLarge
      ? new ProxyError("downstream", "request_body_too_large", "request body exceeds limits.maxRequestBodyBytes")
      : req.signal?.aborted
        ? cancelled()
        : toProxyError(err);
    if (e.code === "internal") this.deps.log.error("internal error", { err, requestId: x.requestId, route: x.route?.name });
    this.deps.stats.errors.labels(e.code).inc();
    const res = errorResponse(e, x.route?.name ?? null, x.requestId || randomUUID());
    x.bytesOut = e.code === "downstream_cancelled" ? 0 : res.chunks![0]!.byteLength; // nobody to send it to
    // What arrived, not what Content-Length promised: a cancelled or refused upload may be cut short.
    const received = req.bodyReceived;
    if (received !== undefined) x.bytesIn = received;
    x.detail = e.message;
    return this.finish(x, res, e.code);
  }

  /**
   * A request the listener refused before the phases (malformed, head too large or too slow): counted,
   * logged and answered like any other error.
   */
  refuse(err: ProxyError, client: ClientInfo, head: { method: string; target: string } | null): DownstreamResponse {
    const x = this.exchange(client, head?.method ?? "", head?.target ?? "");
    x.requestId = randomUUID();
    this.deps.stats.errors.labels(err.code).inc();
    const res = errorResponse(err, null, x.requestId);
    x.bytesOut = res.chunks![0]!.byteLength;
    x.detail = err.message;
    return this.finish(x, res, err.code);
  }

  /** A new request's bookkeeping; counted in flight until done() logs it. */
  private exchange(client: ClientInfo, method: string, target: string): Exchange {
    this.inFlight++;
    this.served++;
    return {
      startedAt: clock.now(),
      client,
      method,
      requestId: "",
      host: "",
      target,
      route: null,
      cluster: null,
      endpoint: null,
      bytesIn: 0,
      bodyTooLarge: false,
      logged: false,
      bytesOut: 0,
      deferred: false,
      detail: null,
    };
  }

  /**
   * Phases 1-3, then 5, 6 and 8 directly when the route has no filters; filtered() does 4-8 for those
   * that have. Not an async function: in one, every local lives in a heap frame for the awaits'
   * sake, and a route without filters has nothing to wait for before the upstream's answer. May throw.
   */
  private run(snap: Snapshot, req: DownstreamRequest, x: Exchange, reply: Reply): void {
    // 1 + 3 share one pass over the headers: measure them, find the request id, build the upstream list.
    const up = this.upstreamHeaders(snap, req, x);

    // 2. route
    let qi = x.target.indexOf("?");
    let path = qi === -1 ? x.target : x.target.slice(0, qi);
    if (hasHiddenDotSegments(path)) {
      throw new ProxyError("downstream", "bad_request", "the path has a dot segment behind an encoded slash, a backslash or a ';' parameter, which upstreams resolve differently");
    }
    const normal = removeDotSegments(path);
    if (normal !== path) {
      x.target = normal + (qi === -1 ? "" : x.target.slice(qi));
      path = normal;
      qi = qi === -1 ? -1 : normal.length;
    }
    const query = this.query;
    query.host = normalizeHost(x.host);
    query.path = path;
    query.method = x.method;
    query.req = req;
    const matched = snap.router.match(query);
    query.req = null;
    if (matched === null) throw new ProxyError("downstream", "no_route", `no route for ${x.method} ${path}`);
    const route = matched.value;
    x.route = route;
    if (up.upgrade !== null && !upgradeAllowed(up.upgrade, route.upgrades)) up.upgrade = null;

    // 1 (body). The length is known up front when the client sent Content-Length.
    const limit = snap.config.limits.maxRequestBodyBytes;
    const bodyLength = req.bodyLength;
    if (bodyLength !== null && !(bodyLength >= 0)) throw new ProxyError("downstream", "bad_request", "invalid content-length");
    if (limit > 0 && bodyLength !== null && bodyLength > limit) {
      throw new ProxyError("downstream", "request_body_too_large", `request body of ${bodyLength} bytes exceeds limits.maxRequestBodyBytes (${limit})`);
    }
    let body: ReadableStream<Uint8Array> | null = req.body;
    if (body !== null && bodyLength === 0) body = null;
    if (body !== null) body = this.countBody(body, x, bodyLength === null ? limit : 0);
    x.bytesIn = bodyLength ?? 0;

    // 3. upstream request
    let target = x.target;
    if (route.rewrite !== null) target = route.rewrite.to + path.slice(route.rewrite.from.length) + (qi === -1 ? "" : x.target.slice(qi));
    if (target === "" || target[0] === "?") target = "/" + target;
    const chain = route.chain;
    // Headers nobody changes go up as the lines they came in; filters and mutations work on a list.
    let upHeaders: HeaderList = NO_HEADERS;
    let wire: UpstreamRequest["wire"] = null;
    const asLines = req.wire !== null && route.requestHeaders === null;
    if (asLines) {
      if (chain === null) wire = upstreamWire(req.wire, up);
    } else {
      upHeaders = headerList(req.headers, up);
      if (route.requestHeaders !== null) upHeaders = applyMutation(upHeaders, route.requestHeaders);
    }
    if (chain === null) {
      // 5, 6 and 8, once: no filter can ask for another attempt, and nothing has waited since the
      // request arrived but routing and headers (a few microseconds, which the balancer's latency then
      // includes), so its clock reading serves.
      if (req.signal?.aborted) throw cancelled();
      const now = x.startedAt;
      const endpoint = this.pickEndpoint(route, req, x, now);
      const cluster = x.cluster!;
      const timeoutMs = route.timeoutMs > 0 ? route.timeoutMs : Infinity;
      cluster.balancer.onStart(endpoint);
      // No promise from here to the reply: the client tells one Forwarding object how it went.
      this.deps.client.send(
        endpoint,
        { method: x.method, target, headers: upHeaders, wire, body, bodyLength: body === null ? null : bodyLength, upgrade: up.upgrade !== null },
        forwardOptions(cluster, timeoutMs, req.signal, true),
        new Forwarding(this, req, x, route, endpoint, now, timeoutMs, reply),
      );
      return;
    }
    // Filters see the client's lines in place when those can go upstream as lines.
    const headers: FilterHeaders = asLines ? new RequestHeaders(req, up) : new ListHeaders(upHeaders);
    if (chain.wantsBody > 0 && body !== null && bodyLength !== null && bodyLength <= chain.wantsBody) {
      // A filter reads the body: have it whole first (it can then also be sent again on a retry).
      this.bufferBody(body, new Filtered(this, req, x, route, chain, target, headers, null, bodyLength, reply));
      return;
    }
    const f = new Filtered(this, req, x, route, chain, target, headers, body, bodyLength, reply);
    f.upgrade = up.upgrade !== null;
    f.inHandler = true; // a filter may answer right away: the reply must still wait for handle() to return
    this.requestFilters(f, null);
    f.inHandler = false;
  }

  /** 6 and 8 for a forward on the common path: the upstream answered. */
  forwarded(f: Forwarding, res: UpstreamResponse): void {
    const x = f.x;
    let out: DownstreamResponse;
    try {
      this.answered(x.cluster!, f.endpoint, f.started, res);
      out = this.downstreamResponse(f.route, x, res, null);
    } catch (err) {
      res.tunnel?.destroy();
      return f.respond(this.failed(f.req, x, err));
    }
    f.respond(this.finish(x, out, null));
  }

  /** 6 for a forward on the common path: it failed; the error response goes back. */
  forwardFailed(f: Forwarding, err: unknown): void {
    const e = this.unanswered(f.x.cluster!, f.endpoint, f.started, f.req.signal, f.timeoutMs, "route", err);
    f.respond(this.failed(f.req, f.x, e));
  }

  // Its own method: the closures would give run() a heap scope on every call (see hashKeyFor).
  private bufferBody(body: ReadableStream<Uint8Array>, f: Filtered): void {
    new Response(body).arrayBuffer().then(
      (buf) => this.requestFilters(f, new Uint8Array(buf)),
      (err: unknown) => f.respond(this.failed(f.req, f.x, err)),
    );
  }

  /**
   * 4. request filters, for a route with filters; then the attempts (attempt(), afterAttempt()) until
   * the response filters are content. Callbacks, not an async function: no suspended frame and no
   * promise per step. Every step replies, once, whatever it throws.
   */
  private requestFilters(f: Filtered, replayBody: Uint8Array | null): void {
    try {
      const x = f.x;
      const ctx: RequestContext = {
        requestId: x.requestId,
        method: x.method,
        target: f.target,
        headers: f.headers,
        clientAddress: x.client.address,
        routeName: f.route.name,
        peerIdentity: null,
        startedAt: x.startedAt,
        perTryTimeoutMs: 0,
        attempt: 1,
        upstreamError: null,
        replayable: f.body === null,
        pinned: null,
      };
      f.ctx = ctx;
      f.replayBody = replayBody;
      const first = f.chain.onRequest(ctx, replayBody);
      if (first.kind === "respond") {
        x.bytesOut = first.body.byteLength;
        return this.filterAnswered(f, first);
      }
      if (first.kind === "fail") throw filterFailure(first);
      // The route timeout starts once the request filters are done (as Envoy's router timeout does), so
      // a fault-injected delay or a slow auth check does not eat the upstream's time.
      if (first.kind === "delay") return this.later(first.ms, f, START);
      this.startAttempts(f);
    } catch (err) {
      f.respond(this.failed(f.req, f.x, err));
    }
  }

  private startAttempts(f: Filtered): void {
    f.deadline = f.route.timeoutMs > 0 ? clock.now() + f.route.timeoutMs : Infinity;
    this.attempt(f);
  }

  /** 5 and 6 for one attempt: pick an endpoint, forward under the per-try timeout and what is left of the route's. */
  private attempt(f: Filtered): void {
    try {
      const { req, x } = f;
      const ctx = f.ctx!;
      // The client left during a filter's delay or a retry's backoff: no (further) attempt.
      if (req.signal?.aborted) throw cancelled();
      const now = clock.now();
      const replay = f.replayBody;
      let body = f.body;
      if (replay !== null) body = replay.byteLength === 0 ? null : new Response(replay as Uint8Array<ArrayBuffer>).body;
      const endpoint = this.pickEndpoint(f.route, req, x, now);
      const cluster = x.cluster!;
      const perTry = ctx.perTryTimeoutMs > 0 ? ctx.perTryTimeoutMs : Infinity;
      const left = f.deadline - now;
      f.endpoint = endpoint;
      f.started = now;
      f.timeoutMs = Math.min(perTry, left);
      f.timeoutKind = perTry <= left ? "per-try" : "route";
      if (f.timeoutMs <= 0) {
        return this.afterAttempt(f, null, new ProxyError("upstream", "upstream_timeout", `the route timeout (${f.route.timeoutMs} ms) elapsed before attempt ${ctx.attempt}`));
      }
      const bodyLength = body === null ? null : replay !== null ? replay.byteLength : f.bodyLength;
      // Headers filters only appended go after the client's lines as they came; any other change
      // made the whole list, which goes instead (rebuilt and checked header by header).
      const h = ctx.headers;
      let headers: HeaderList;
      let wire: UpstreamRequest["wire"] = null;
      if (h instanceof RequestHeaders && !h.made) {
        wire = h.upstreamLines();
        headers = h.appended;
      } else headers = h.list();
      cluster.balancer.onStart(endpoint);
      // With response filters, every upstream request is an attempt they see (a retry filter counts
      // them); the client's own resend of a keep-alive race is then done in afterAttempt, once.
      this.deps.client.send(
        endpoint,
        { method: x.method, target: ctx.target, headers, wire, body, bodyLength, upgrade: f.upgrade },
        forwardOptions(cluster, f.timeoutMs, req.signal, !f.chain.hasResponsePhase),
        f,
      );
    } catch (err) {
      f.respond(this.failed(f.req, f.x, err));
    }
  }

  /** The client's answer to an attempt (a Filtered is the client's receiver). */
  attemptAnswered(f: Filtered, res: UpstreamResponse): void {
    try {
      this.answered(f.x.cluster!, f.endpoint!, f.started, res);
    } catch (err) {
      return f.respond(this.failed(f.req, f.x, err));
    }
    this.afterAttempt(f, res, null);
  }

  /** The client's failure of an attempt. */
  attemptFailed(f: Filtered, err: unknown): void {
    let failure: ProxyError;
    try {
      failure = this.unanswered(f.x.cluster!, f.endpoint!, f.started, f.req.signal, f.timeoutMs, f.timeoutKind, err);
    } catch (e) {
      return f.respond(this.failed(f.req, f.x, e));
    }
    if (failure.source !== "upstream" || f.x.bodyTooLarge) return f.respond(this.failed(f.req, f.x, failure));
    this.afterAttempt(f, null, failure);
  }

  /**
   * 7. response filters after an attempt that answered (`res`) or failed (`failure`, an upstream
   * error); then another attempt, or 8.
   */
  private afterAttempt(f: Filtered, res: UpstreamResponse | null, failure: ProxyError | null): void {
    const { chain, x, route } = f;
    const ctx = f.ctx!;
    try {
      if (!chain.hasResponsePhase) {
        if (failure !== null) throw failure;
        return f.respond(this.finish(x, this.downstreamResponse(route, x, res!, null), null));
      }
      ctx.upstreamError = failure?.code ?? null;
      // Over the upstream's parsed lines when there are some; a failed attempt shows its error.
      const headers =
        res === null ? new ListHeaders([["x-mesh-error", failure!.code]]) : res.wire !== undefined ? new LinesHeaders(res.wire, res, null, true) : new ListHeaders(res.headers);
      const out = chain.onResponse(ctx, { status: res === null ? failure!.status : res.status, headers });
      if (out.kind === "retry" && ctx.replayable && ctx.attempt < MAX_ATTEMPTS && f.deadline - clock.now() > out.delayMs) {
        discard(res);
        ctx.attempt++;
        if (out.delayMs > 0) return this.later(out.delayMs, f, ATTEMPT);
        return this.attempt(f);
      }
      if (out.kind === "respond" || out.kind === "fail") {
        discard(res);
        if (out.kind === "fail") throw filterFailure(out);
        x.bytesOut = out.body.byteLength;
        return this.filterAnswered(f, out);
      }
      // A reused connection the upstream had just closed, nothing received, and no filter took it
      // up: send the first attempt once more, as the client does on routes without response filters.
      if (failure !== null && failure.code === "upstream_reset" && failure.retryable && ctx.attempt === 1 && !f.raceResent) {
        f.raceResent = true;
        return this.attempt(f);
      }
      if (failure !== null) throw failure;
      // 8. downstream response
      f.respond(this.finish(x, this.downstreamResponse(route, x, res!, headers), null));
    } catch (err) {
      res?.tunnel?.destroy();
      f.respond(this.failed(f.req, x, err));
    }
  }

  /** A filter answered the request itself (after the delay a fault filter may have asked for). */
  private filterAnswered(f: Filtered, out: { status: number; headers: HeaderList; body: Uint8Array; delayMs?: number }): void {
    f.answer = { status: out.status, statusText: "", headers: out.headers, chunks: [out.body], stream: null };
    if (out.delayMs !== undefined && out.delayMs > 0) return this.later(out.delayMs, f, ANSWER);
    f.respond(this.finish(f.x, f.answer, null));
  }

  /** Runs a step of `f` after `ms` (a filter's delay, a retry's backoff). */
  private later(ms: number, f: Filtered, step: Step): void {
    setTimeout(() => {
      if (step === START) this.startAttempts(f);
      else if (step === ATTEMPT) this.attempt(f);
      else f.respond(this.finish(f.x, f.answer!, null));
    }, ms);
  }

  /** 5. upstream peer: a cluster by weight, then an endpoint from its balancer. */
  private pickEndpoint(route: RouteRuntime, req: DownstreamRequest, x: Exchange, now: number): Endpoint {
    const cluster = route.pickCluster(Math.random());
    x.cluster = cluster;
    const hashOn = cluster.config.lb.hashOn;
    const key = hashOn === undefined ? null : hashKeyFor(hashOn, req, x.client.address);
    const endpoint = cluster.balancer.pick(key, now);
    if (endpoint === null) throw new ProxyError("upstream", "no_endpoint", `cluster "${cluster.name}" has no endpoints`);
    x.endpoint = endpoint;
    return endpoint;
  }

  /**
   * One pass over the request headers: enforce the size limit, and say which go upstream (all but
   * hop-by-hop, framing, Expect and X-Forwarded-For, by index in `drop`) and what is added after them
   * (X-Forwarded-*, x-request-id).
   */
  private upstreamHeaders(snap: Snapshot, req: DownstreamRequest, x: Exchange): UpstreamHeaders {
    // By index over the parsed lines: only the values looked at below become strings.
    const view = req.wire ?? listView(req.headers);
    const names = view.names;
    const extraHop = connectionTokens(view.connection);
    let drop: number[] | null = null;
    let hasHost = false;
    let bytes = x.method.length + x.target.length + 12 + (req.wire !== null ? req.wire.lines.length : listBytes(req.headers));
    let xff: string | null = null;
    let hasProto = false;
    let hasFwdHost = false;
    let requestId = "";
    let host = "";
    let upgrade: string | null = null;
    for (let i = 0; i < names.length; i++) {
      const name = names[i]!;
      if (HOP_BY_HOP.has(name) || (extraHop !== null && extraHop.has(name))) {
        (drop ??= []).push(i);
        if (name === "upgrade" && upgrade === null) upgrade = view.value(i);
        continue;
      }
      switch (name) {
        case "content-length": // the client sets framing from bodyLength
        case "expect": // the listener answers 100 Continue itself
          (drop ??= []).push(i);
          continue;
        case "x-forwarded-for": {
          // Several X-Forwarded-For lines are one list (RFC 9110 section 5.3), sent as one, last.
          const value = view.value(i);
          xff = xff === null ? value : `${xff}, ${value}`;
          (drop ??= []).push(i);
          continue;
        }
        case "x-forwarded-proto":
          hasProto = true;
          break;
        case "x-forwarded-host":
          hasFwdHost = true;
          break;
        case "x-request-id":
          if (requestId === "") requestId = view.value(i);
          break;
        case "host":
          host = view.value(i);
          hasHost = true;
          break;
      }
    }
    x.host = host;
    x.requestId = requestId || randomUUID();
    const limit = snap.config.limits.maxRequestHeaderBytes;
    if (bytes > limit) {
      throw new ProxyError("downstream", "request_headers_too_large", `request headers of ${bytes} bytes exceed limits.maxRequestHeaderBytes (${limit})`);
    }
    return {
      drop,
      forwardedFor: xff === null ? x.client.address : `${xff}, ${x.client.address}`,
      forwardedProto: hasProto ? null : this.deps.scheme,
      forwardedHost: hasFwdHost || host === "" ? null : host,
      requestId: requestId === "" ? x.requestId : null,
      hasHost,
      // Checked against the route once there is one (run()).
      upgrade: upgrade !== null && upgrade !== "" && req.canSwitch === true && extraHop?.has("upgrade") === true && x.method === "GET" && req.body === null ? upgrade : null,
    };
  }

  /** Count request body bytes for the log, and stop a body of unknown length at the limit. */
  private countBody(body: ReadableStream<Uint8Array>, x: Exchange, limit: number): ReadableStream<Uint8Array> {
    if (limit === 0) return body; // length known from Content-Length: nothing to count
    const reader = body.getReader();
    let seen = 0;
    return new ReadableStream<Uint8Array>(
      {
        async pull(ctrl) {
          const { done, value } = await reader.read();
          if (done) return ctrl.close();
          seen += value.byteLength;
          x.bytesIn = seen;
          if (seen > limit) {
            x.bodyTooLarge = true;
            const err = new ProxyError("downstream", "request_body_too_large", "request body exceeds limits.maxRequestBodyBytes");
            ctrl.error(err);
            void reader.cancel(err).catch(() => {});
            return;
          }
          ctrl.enqueue(value);
        },
        cancel(reason) {
          return reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
  }

  /** The balancer learns how long the endpoint took and whether it answered well. */
  private answered(cluster: ClusterRuntime, endpoint: Endpoint, started: number, res: UpstreamResponse): void {
    const now = clock.now();
    cluster.balancer.onEnd(endpoint, now - started, now, res.status < 500);
  }

  /** The balancer and the metrics learn of a failed forward; returns the error to answer with. */
  private unanswered(
    cluster: ClusterRuntime,
    endpoint: Endpoint,
    started: number,
    signal: CancelSignal | null,
    timeoutMs: number,
    timeoutKind: "per-try" | "route",
    err: unknown,
  ): ProxyError {
    const now = clock.now();
    // A request the client walked away from says nothing about the endpoint: no failure recorded.
    cluster.balancer.onEnd(endpoint, now - started, now, signal?.aborted ? null : false);
    const e = toProxyError(err);
    if (e.code === "upstream_refused" || e.code === "upstream_connect_timeout") {
      this.deps.stats.connectFailures.labels(cluster.name, endpoint.key).inc();
    }
    if (signal?.aborted) return cancelled();
    if (e.code === "upstream_timeout") {
      return new ProxyError("upstream", "upstream_timeout", `upstream ${endpoint.key} did not answer within the ${timeoutKind} timeout (${Math.round(timeoutMs)} ms)`, { cause: e });
    }
    return e;
  }

  /** `filtered`: the headers as the response filters left them, when the route has any. */
  private downstreamResponse(route: RouteRuntime, x: Exchange, res: UpstreamResponse, filtered: FilterHeaders | null): DownstreamResponse {
    const out: DownstreamResponse = { status: res.status, statusText: res.statusText, headers: NO_HEADERS, wire: null, chunks: null, headroom: false, stream: null };
    if (res.tunnel != null) {
      // Logged when the tunnel ends, with the bytes it carried and its whole life as the duration.
      out.tunnel = res.tunnel;
      x.deferred = true;
      this.logAtTunnelEnd(res.tunnel, x);
    }
    // Response filters may have changed the headers (rate-limit adds its own). When all they did was
    // append headers, the upstream's lines still go as they came, with those after them.
    let appended: HeaderList | null = NO_HEADERS;
    if (filtered instanceof LinesHeaders && !filtered.made) appended = plainAppends(filtered.appended, res.wire!);
    else if (filtered !== null) appended = appendedHeaders(res);
    const listOnly = route.responseHeaders !== null || appended === null;
    if (res.wire === undefined || listOnly || !this.passLines(res, out)) {
      // The list path: whatever the filters appended joins the upstream's list first.
      if (filtered instanceof LinesHeaders) filtered.list();
      const extraHop = connectionTokens(getHeader(res.headers, "connection"));
      const wire = res.wire;
      let headers: HeaderList = [];
      let length = false;
      for (const h of res.headers) {
        if (HOP_BY_HOP.has(h[0]) || (extraHop !== null && extraHop.has(h[0]))) continue;
        if (h[0] === "content-length" && wire !== undefined) {
          // One Content-Length, as a plain number; none when Transfer-Encoding framed the body
          // (RFC 9112 section 6.3: a proxy removes it, the listener frames the body itself).
          if (length || wire.transferEncoding !== "none") continue;
          length = true;
          const plain = String(wire.contentLength);
          if (h[1] !== plain) {
            headers.push(["content-length", plain]);
            continue;
          }
        }
        headers.push(h);
      }
      if (route.responseHeaders !== null) headers = applyMutation(headers, route.responseHeaders);
      out.headers = headers;
    } else out.headers = appended!;
    if (x.method === "HEAD" || NO_BODY_STATUS(res.status)) {
      if (res.chunks === undefined && res.body !== null) void res.body.cancel().catch(() => {});
      return out;
    }
    if (res.chunks !== undefined) {
      // The whole body is here: no stream through JS, and the request is complete once it is handed over.
      let size = 0;
      for (const c of res.chunks) size += c.byteLength;
      x.bytesOut = size;
      out.chunks = res.chunks;
      out.headroom = res.headroom === true;
      return out;
    }
    if (res.body === null) return out;
    // 9 (deferred): the log line and metrics wait for the end of the streamed body.
    x.deferred = true;
    this.logAtBodyEnd(res, x);
    out.stream = res.body;
    return out;
  }

  private logAtTunnelEnd(tunnel: Tunnel, x: Exchange): void {
    tunnel.onEnd = (up, down, error) => {
      x.bytesIn = up;
      const code = error === null ? null : "upstream_reset";
      if (code !== null) x.detail = `the upstream side of the tunnel failed: ${error!.message}`;
      this.done(x, 101, down, code);
    };
  }

  // Its own method: the closure in downstreamResponse() would give that a heap scope on every call.
  private logAtBodyEnd(res: UpstreamResponse, x: Exchange): void {
    const status = res.status;
    res.onBodyEnd = (bytes, error) => {
      let code: string | null = null;
      if (error === "cancelled") code = "downstream_cancelled";
      else if (error !== null) {
        // The upstream died mid-body; the listener aborts the client stream so truncation never looks complete.
        code = toProxyError(error).code;
        this.deps.stats.errors.labels(code).inc();
      }
      this.done(x, status, bytes, code);
    };
  }

  /**
   * The upstream's header lines go to the client as they came, minus hop-by-hop ones and a
   * Content-Length that does not say the body's length (on a status without a body, or beside a
   * Transfer-Encoding, which frames the body instead: RFC 9112 section 6.3). Not when Content-Length
   * is anything but one line with one plain number ("2, 2", two lines): the list path writes it once.
   */
  private passLines(res: UpstreamResponse, out: DownstreamResponse): boolean {
    const wire = res.wire!;
    const names = wire.names;
    const extraHop = connectionTokens(wire.connection);
    const dropLength = NO_BODY_STATUS(res.status) || wire.transferEncoding !== "none";
    let drop: number[] | null = null;
    let date = false;
    let lengths = 0;
    for (let i = 0; i < names.length; i++) {
      const name = names[i]!;
      if (HOP_BY_HOP.has(name) || (extraHop !== null && extraHop.has(name))) (drop ??= []).push(i);
      else if (name === "content-length") {
        if (dropLength) (drop ??= []).push(i);
        else if (++lengths > 1 || wire.value(i) !== String(wire.contentLength)) return false;
      } else if (name === "date") date = true;
    }
    out.wire = { lines: drop === null ? wire.lines : withoutLines(wire.lines, drop), high: wire.high, date, length: lengths === 1 };
    return true;
  }

  /** 9. logging, for every response not streamed from an upstream (those log when their body ends). */
  private finish(x: Exchange, res: DownstreamResponse, error: string | null): DownstreamResponse {
    if (!x.deferred) this.done(x, res.status, x.bytesOut, error);
    return res;
  }

  private done(x: Exchange, status: number, bytesOut: number, error: string | null): void {
    if (x.logged) return;
    x.logged = true;
    this.inFlight--;
    const { stats, accessLog } = this.deps;
    const seconds = (clock.now() - x.startedAt) / 1000;
    const routeName = x.route?.name ?? "";
    stats.countRequest(routeName, x.cluster?.name ?? "", status);
    stats.observeDuration(routeName, seconds);
    if (!accessLog.enabled) return;
    accessLog.write({
      time: new Date().toISOString(),
      requestId: x.requestId,
      method: x.method,
      path: x.target,
      status,
      durationMs: Math.round(seconds * 1e6) / 1e3,
      route: x.route?.name ?? null,
      cluster: x.cluster?.name ?? null,
      upstream: x.endpoint?.key ?? null,
      bytesIn: x.bytesIn,
      bytesOut,
      client: x.client.address,
      error,
      ...(error !== null && x.detail !== null ? { detail: x.detail } : null),
    });
  }
}
