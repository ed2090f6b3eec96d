// The HTTP/1.1 upstream client: keep-alive pooling, streamed bodies both ways, errors as ProxyError.
import { ProxyError } from "../../errors.ts";
import type { CancelSignal, Endpoint, ForwardOptions, ResponseReceiver, UpstreamClient, UpstreamRequest, UpstreamResponse } from "../types.ts";
import { Connection, upstreamError, type ConnectionOwner, type PendingRequest } from "./connection.ts";
import * as clock from "../../platform/clock.ts";
import { IdlePool } from "./pool.ts";
import { TimerSignal } from "./timeouts.ts";
import { buildRequestHead, type RequestHead } from "./request-head.ts";
import { ConnectError, connectSocket, type ConnectFn, type Socket } from "../../platform/tcp.ts";

export type { ConnectFn, Socket, SocketEvents } from "../../platform/tcp.ts";
export { ConnectError };

export interface Http1ClientOptions {
  /** Idle keep-alive connections kept per endpoint; 0 turns pooling off. Default 128. */
  maxIdlePerEndpoint?: number;
  /** An idle connection older than this is closed instead of reused. Default 30 000 ms. */
  idleTimeoutMs?: number;
  /** Largest response head (status line and headers) accepted. Default 64 KiB. */
  maxResponseHeadBytes?: number;
  /** How long a body held back by `expect: 100-continue` waits for the 100 before it goes anyway. Default 1000 ms. */
  expectContinueTimeoutMs?: number;
  /** Response body bytes buffered ahead of a slow consumer before reading from the upstream pauses. Default 64 KiB. */
  responseBufferBytes?: number;
  /**
   * A response whose Content-Length is at most this is read whole before request() resolves and is
   * delivered as a Blob (cheaper to send than a stream). Larger or unknown-length bodies stream.
   * Default 128 KiB; 0 streams every body.
   */
  collectBodyBytes?: number;
  /**
   * How long such a body may take to arrive whole: after this the head is delivered anyway and the
   * body streams, so an upstream that trickles its body neither holds the head back nor has the
   * request's timeout (which ends at the head) cover its body. Default 5 ms.
   */
  collectWindowMs?: number;
  /** Opens TCP connections. Default: the runtime's own (socket.ts); tests inject failures here. */
  connect?: ConnectFn;
}

function option(opts: Http1ClientOptions, name: keyof Http1ClientOptions, fallback: number, min: number): number {
  const value = opts[name] ?? fallback;
  if (typeof value !== "number" || !(value >= min) || (value !== Infinity && !Number.isInteger(value))) {
    throw new TypeError(`createHttp1Client: option ${name} must be an integer >= ${min}, got ${String(value)}`);
  }
  return value;
}

const IDEMPOTENT: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

class Http1Client implements UpstreamClient, ConnectionOwner {
  readonly maxHeadBytes: number;
  readonly expectContinueTimeoutMs: number;
  readonly bodyStrategy: QueuingStrategy<Uint8Array>;
  readonly collectBytes: number;
  readonly collectWindowMs: number;
  private readonly pool: IdlePool<Connection>;
  private readonly connect: ConnectFn;
  private readonly sweepEveryMs: number;
  private sweeper: ReturnType<typeof setInterval> | null = null;
  private closed = false;

  constructor(opts: Http1ClientOptions) {
    const maxIdle = option(opts, "maxIdlePerEndpoint", 128, 0);
    const idleTimeoutMs = option(opts, "idleTimeoutMs", 30_000, 1);
    this.maxHeadBytes = option(opts, "maxResponseHeadBytes", 64 * 1024, 64);
    this.expectContinueTimeoutMs = option(opts, "expectContinueTimeoutMs", 1000, 0);
    const highWaterMark = option(opts, "responseBufferBytes", 64 * 1024, 1);
    this.collectBytes = option(opts, "collectBodyBytes", 128 * 1024, 0);
    this.collectWindowMs = option(opts, "collectWindowMs", 5, 1);
    if (opts.connect !== undefined && typeof opts.connect !== "function") throw new TypeError("createHttp1Client: option connect must be a function");
    this.connect = opts.connect ?? connectSocket;
    this.bodyStrategy = new ByteLengthQueuingStrategy({ highWaterMark });
    this.pool = new IdlePool<Connection>(maxIdle, idleTimeoutMs, (conn) => conn.close());
    this.sweepEveryMs = Math.max(10, Math.min(idleTimeoutMs / 2, 5_000));
  }

  request(endpoint: Endpoint, req: UpstreamRequest, opts: ForwardOptions): Promise<UpstreamResponse> {
    return new Promise<UpstreamResponse>((resolve, reject) => this.send(endpoint, req, opts, { onResponse: resolve, onError: reject }));
  }

  send(endpoint: Endpoint, req: UpstreamRequest, opts: ForwardOptions, receiver: ResponseReceiver): void {
    // One Pending per request, no promise, no async frame: this runs for every proxied request.
    let head: RequestHead;
    try {
      if (this.closed) throw new ProxyError("internal", "internal", "the upstream client is closed");
      head = buildRequestHead(req, endpoint.key);
      if (opts.signal?.aborted) throw aborted();
    } catch (err) {
      failSoon(receiver, err);
      return;
    }
    const p = new Pending(this, endpoint, head, req, opts, receiver);
    const now = clock.now();
    const ms = opts.timeoutMs;
    if (ms !== undefined && ms !== Infinity) p.timeout(ms, now);
    const pooled = this.pool.acquire(endpoint.key, now);
    if (pooled === null) return this.sendFresh(p);
    // The upstream may have closed this idle connection just as we picked it: then once more, on a
    // fresh one, but only for idempotent methods (RFC 9110 9.2.2): a POST the upstream did read
    // before closing must not run twice. Others get upstream_reset, which a retry policy may retry.
    p.canResend = IDEMPOTENT.has(req.method);
    pooled.send(p);
  }

  idleConnections(): number {
    return this.pool.size;
  }

  /**
   * Settled requests wait here for one microtask that tells them all: no closure per request. One
   * receiver that throws (a bug above us) does not keep the others from hearing.
   */
  private settledQueue: Pending[] = [];
  private readonly deliverSettled = (): void => {
    const queue = this.settledQueue;
    clock.beginTurn();
    // A receiver may settle another request as it runs: the loop reaches it too.
    for (let i = 0; i < queue.length; i++) {
      try {
        queue[i]!.deliver();
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    clock.endTurn();
    queue.length = 0;
  };

  deliverSoon(p: Pending): void {
    if (this.settledQueue.push(p) === 1) queueMicrotask(this.deliverSettled);
  }

  /** Closes idle connections now and busy ones as their exchanges end; later requests fail. */
  close(): void {
    this.closed = true;
    this.pool.clear();
    this.stopSweeper();
  }

  // ConnectionOwner

  release(conn: Connection): void {
    if (this.closed || !this.pool.release(conn, clock.now())) {
      conn.close();
      return;
    }
    if (this.sweeper === null) this.sweeper = setInterval(() => this.sweep(), this.sweepEveryMs);
  }

  forget(conn: Connection): void {
    this.pool.remove(conn);
  }

  private sweep(): void {
    this.pool.sweep(performance.now());
    if (this.pool.size === 0) this.stopSweeper();
  }

  private stopSweeper(): void {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
  }

  sendFresh(p: Pending): void {
    p.canResend = false;
    this.open(p.endpoint, p.opts.connectTimeoutMs, p.signal).then(
      (conn) => conn.send(p),
      (err: unknown) => p.fail(err),
    );
  }

  /** Connects, bounded by connectTimeoutMs and the request's signal. */
  private open(endpoint: Endpoint, connectTimeoutMs: number, signal: CancelSignal | undefined): Promise<Connection> {
    const conn = new Connection(endpoint.key, this);
    return new Promise<Connection>((resolve, reject) => {
      let settled = false;
      let timer: ReturnType<typeof setTimeout> | null = null;
      const onAbort = () => settle(aborted());
      const settle = (err: unknown) => {
        if (settled) return;
        settled = true;
        if (timer !== null) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (err === null) resolve(conn);
        else reject(err);
      };
      const ms = connectTimeoutMs;
      if (ms > 0 && ms !== Infinity) {
        timer = setTimeout(
          () => settle(upstreamError("upstream_connect_timeout", `connecting to the upstream took longer than ${ms} ms`, true)),
          ms,
        );
      }
      signal?.addEventListener("abort", onAbort);
      let connecting: Promise<Socket>;
      try {
        connecting = this.connect(endpoint.host, endpoint.port, conn);
      } catch (err) {
        connecting = Promise.reject(err);
      }
      connecting.then(
        (socket) => {
          // Too late: whoever asked has gone. The socket was never used, so just close it.
          if (settled) return socket.destroy();
          conn.attach(socket);
          settle(null);
        },
        (err) => {
          // The message may reach the client, so it names the reason but not the address; the cause has both.
          const reason = err instanceof ConnectError ? err.reason : "unknown";
          settle(
            err instanceof ConnectError && err.kind === "timeout"
              ? upstreamError("upstream_connect_timeout", `connecting to the upstream timed out (${reason})`, true, err)
              : upstreamError("upstream_refused", `could not connect to the upstream (${reason})`, true, err),
          );
        },
      );
    });
  }
}

/** A request in the client: settles its promise once, clearing its timeout; resends itself after a stale connection. */
class Pending implements PendingRequest {
  signal: CancelSignal | undefined;
  canResend = false;
  private timer: TimerSignal | null = null;
  private settled = false;
  private res: UpstreamResponse | null = null;
  private err: unknown = undefined;

  constructor(
    private readonly client: Http1Client,
    readonly endpoint: Endpoint,
    readonly head: RequestHead,
    readonly req: UpstreamRequest,
    readonly opts: ForwardOptions,
    private readonly receiver: ResponseReceiver,
  ) {
    this.signal = opts.signal;
  }

  /** From now on the request's signal also aborts after `ms` (the timeout covers connecting too). */
  timeout(ms: number, now: number): void {
    this.timer = new TimerSignal(ms, this.signal, now);
    this.signal = this.timer;
  }

  // Once only, as a promise settles once. The receiver hears on a microtask, as a promise's reaction
  // would: never from inside the connection's own event handling, which goes on after settling
  // (completing, pooling the connection).
  settle(res: UpstreamResponse): void {
    if (this.settled) return;
    this.settled = true;
    this.timer?.clear();
    this.res = res;
    this.client.deliverSoon(this);
  }

  fail(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    this.timer?.clear();
    this.err = err;
    this.client.deliverSoon(this);
  }

  /** Tells the receiver (from the client's microtask); lets go of the response. */
  deliver(): void {
    const res = this.res;
    this.res = null;
    if (res !== null) this.receiver.onResponse(res);
    else this.receiver.onError(this.err);
    this.err = undefined;
  }

  resend(): void {
    if (this.opts.staleRetry === false) {
      this.fail(upstreamError("upstream_reset", "upstream closed a reused connection before answering; nothing was received", true));
    } else {
      this.client.sendFresh(this);
    }
  }
}

// Its own function: a closure in send() would give send() a heap scope on every call.
function failSoon(receiver: ResponseReceiver, err: unknown): void {
  queueMicrotask(() => receiver.onError(err));
}

function aborted(): ProxyError {
  return upstreamError("upstream_timeout", "the request was aborted before the upstream responded");
}

/**
 * An HTTP/1.1 client with keep-alive pooling per endpoint, implementing UpstreamClient.
 *
 * @example
 * ```ts
 * const client = createHttp1Client({ maxIdlePerEndpoint: 64 });
 * const endpoint = { host: "127.0.0.1", port: 8080, key: "127.0.0.1:8080", weight: 1 };
 * const res = await client.request(
 *   endpoint,
 *   { method: "GET", target: "/items?page=2", headers: [["accept", "application/json"]], body: null, bodyLength: null },
 *   { connectTimeoutMs: 1000, signal: AbortSignal.timeout(15_000) },
 * );
 * for await (const chunk of res.body ?? []) console.log(chunk.length);
 * ```
 */
export function createHttp1Client(opts: Http1ClientOptions = {}): UpstreamClient {
  return new Http1Client(opts);
}
