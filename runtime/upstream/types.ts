// The contract between the request phases and whatever talks HTTP to upstreams.

/** One upstream address. `key` is "host:port" and identifies the endpoint in pools, metrics and logs. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  readonly key: string;
  readonly weight: number;
}

/**
 * Headers as a flat list of [name, value] pairs in wire order. Duplicates are kept (Set-Cookie);
 * names are lower-case.
 */
export type HeaderList = [string, string][];

/**
 * Header lines in wire form, "Name: value" each ending in CRLF, as our own parser read and checked
 * them: how a head's lines go on to the other side without being taken apart and rebuilt (that
 * rebuilding was a third of the proxy's JavaScript per request). Names keep the sender's case.
 */
export interface WireLines {
  readonly lines: string;
  /** Some byte is above 0x7f: the lines are latin1 text and must go out as bytes, not as an ASCII string. */
  readonly high: boolean;
}

/** Wire lines as our own parser indexed them: each line's name, and its value when asked for. */
export interface ParsedLines extends WireLines {
  /** Lower-case names: names[i] is the name on line i. */
  readonly names: readonly string[];
  /** Line i's value, trimmed. */
  value(i: number): string;
  /** The Connection header's values as one list, "" without one. */
  readonly connection: string;
  /** The message's length as its Content-Length lines say it (one number), -1 without one. */
  readonly contentLength: number;
  /** "none" unless a Transfer-Encoding line frames the message (it then overrides Content-Length). */
  readonly transferEncoding: "none" | "chunked" | "other";
  /** The header list, if something asked for it already (and may have changed it); null if not. */
  listIfMade(): HeaderList | null;
}

export interface UpstreamRequest {
  method: string;
  /** Path and query exactly as they go on the request line (byte for byte what the client sent, after rewrites). */
  target: string;
  /** Headers to send, already free of hop-by-hop headers. The client adds Host if absent, and framing headers. */
  headers: HeaderList;
  /**
   * Header lines to send as they are, ahead of `headers` (the proxy passes a client's own lines on
   * this way). The caller vouches that they are checked and hold no hop-by-hop, framing or Expect
   * line; `host` says whether one of them is Host.
   */
  wire?: (WireLines & { readonly host: boolean }) | null;
  /** Request body, streamed; null for none. */
  body: ReadableStream<Uint8Array> | null;
  /** Body length when known (from the client's Content-Length); null means send chunked. */
  bodyLength: number | null;
  /**
   * The request asks to switch protocols (its headers carry `connection: upgrade` and `upgrade`):
   * a `101 Switching Protocols` answer then resolves with a `tunnel` instead of failing as a
   * protocol error, and the connection leaves the pool for good.
   */
  upgrade?: boolean;
}

/**
 * The upstream side of a switched connection (after a 101): raw bytes both ways. Bytes that arrive
 * before start() are held and handed over first.
 */
export interface Tunnel {
  /** The protocol the upstream switched to: its Upgrade header, as sent. */
  readonly protocol: string;
  /** From now on the upstream's bytes, its drain and its close go to `events`. Call once. */
  start(events: TunnelEvents): void;
  /** Sends bytes to the upstream; false when they were queued (wait for onDrain). */
  write(data: Uint8Array): boolean;
  pause(): void;
  resume(): void;
  /** FIN once queued bytes are out. */
  close(): void;
  /** Close now (RST where the runtime allows). */
  destroy(): void;
  /**
   * Set by the consumer to learn when the tunnel ends, whichever side ends it: bytes sent to the
   * upstream (`up`) and received from it (`down`), and the upstream's error when it failed (null for
   * a clean end or one our side made). Called once.
   */
  onEnd: ((up: number, down: number, error: Error | null) => void) | null;
}

/** What a tunnel's upstream side reports; onClose at most once, never after close()/destroy(). */
export interface TunnelEvents {
  onData(chunk: Uint8Array): void;
  onDrain(): void;
  onClose(error: Error | null): void;
}

export interface UpstreamResponse {
  status: number;
  statusText: string;
  headers: HeaderList;
  /** The same headers as the lines they arrived in (line i is headers[i]), when the client has them. */
  readonly wire?: ParsedLines;
  /** Streamed body; null when the response has none (HEAD, 204, 304, 1xx). */
  readonly body: ReadableStream<Uint8Array> | null;
  /**
   * The whole body, when it had all arrived with the head (small responses). Send it rather than
   * `body`: a runtime writes a Blob without any stream machinery, which is most of the cost of a
   * small proxied response. `body` then streams the same bytes, made only if asked for.
   */
  readonly blob?: Blob;
  /**
   * With `blob`: the same bytes as the chunks they arrived in, for writers that take bytes
   * synchronously. Whoever sends them may empty the array (the listener does, see DownstreamResponse.chunks);
   * read `blob` or `body` before handing the chunks on, not after.
   */
  readonly chunks?: Uint8Array[];
  /**
   * With `chunks`: the bytes in front of chunks[0] in its buffer (the head it arrived behind) are
   * free, so a writer may put its own head there and send head and body without copying the body.
   */
  readonly headroom?: boolean;
  /**
   * Set by the consumer to learn when a streamed body ends: `error` is null when it completed, the
   * upstream's error when it failed mid-body, or "cancelled" when the consumer cancelled it; `bytes`
   * is how many body bytes were delivered. Called at most once, never for `blob` or bodyless responses.
   */
  onBodyEnd?: ((bytes: number, error: unknown) => void) | null;
  /** A 101 to a request sent with `upgrade`: the switched connection. Whoever gets it must start or destroy it. */
  readonly tunnel?: Tunnel | null;
}

/** The part of AbortSignal the client uses; an AbortSignal is one. */
/** A function, or an object whose handleEvent() runs (as with EventTarget): one allocation less per subscriber. */
export type CancelListener = (() => void) | { handleEvent(): void };

export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener(type: "abort", fn: CancelListener): void;
  removeEventListener(type: "abort", fn: CancelListener): void;
}

export interface ForwardOptions {
  /** Aborting it before the response head arrives rejects with upstream_timeout; after, it errors the body stream. */
  signal?: CancelSignal;
  /**
   * Time for the whole exchange up to the response head (the whole response when its body is read
   * before request() resolves): then as if `signal` aborted. Cheaper than an AbortController with a
   * timer, which cost ~2.5 us of CPU per proxied request (bench/README.md).
   */
  timeoutMs?: number;
  connectTimeoutMs: number;
  /**
   * When a reused keep-alive connection closes before any byte of the response (the upstream timed
   * it out just as we picked it), send an idempotent request once more on a fresh connection.
   * Default true. False: reject with upstream_reset marked retryable instead, for a caller that
   * counts attempts itself (a route with a retry filter must not see attempts it did not make).
   */
  staleRetry?: boolean;
}

/** Hears how a request given to UpstreamClient.send ended: exactly one of the two is called. */
export interface ResponseReceiver {
  onResponse(res: UpstreamResponse): void;
  /** The same errors request() rejects with. */
  onError(err: unknown): void;
}

/**
 * Sends one request to one endpoint and resolves with the response head when it arrives; the body
 * streams after. Rejects with a ProxyError (source "upstream") whose code says what went wrong:
 * upstream_refused, upstream_connect_timeout, upstream_reset, upstream_protocol_error, upstream_timeout.
 */
export interface UpstreamClient {
  request(endpoint: Endpoint, req: UpstreamRequest, opts: ForwardOptions): Promise<UpstreamResponse>;
  /**
   * request() without a promise: the response or the error goes to `receiver`, once, and never
   * before send() has returned. For the proxy's common path, where the promise, its reactions and
   * their closures were a third of the objects a request allocated.
   */
  send(endpoint: Endpoint, req: UpstreamRequest, opts: ForwardOptions, receiver: ResponseReceiver): void;
  /** Idle pooled connections right now, for metrics and tests. */
  idleConnections(): number;
  close(): void;
}
