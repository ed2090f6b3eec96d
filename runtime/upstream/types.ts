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

export interface UpstreamRequest {
  method: string;
  /** Path and query exactly as they go on the request line (byte for byte what the client sent, after rewrites). */
  target: string;
  /** Headers to send, already free of hop-by-hop headers. The client adds Host if absent, and framing headers. */
  headers: HeaderList;
  /** Request body, streamed; null for none. */
  body: ReadableStream<Uint8Array> | null;
  /** Body length when known (from the client's Content-Length); null means send chunked. */
  bodyLength: number | null;
}

export interface UpstreamResponse {
  status: number;
  statusText: string;
  headers: HeaderList;
  /** Streamed body; null when the response has none (HEAD, 204, 304, 1xx). */
  body: ReadableStream<Uint8Array> | null;
}

export interface ForwardOptions {
  /** Aborting it before the response head arrives rejects with upstream_timeout; after, it errors the body stream. */
  signal?: AbortSignal;
  connectTimeoutMs: number;
}

/**
 * Sends one request to one endpoint and resolves with the response head when it arrives; the body
 * streams after. Rejects with a ProxyError (source "upstream") whose code says what went wrong:
 * upstream_refused, upstream_connect_timeout, upstream_reset, upstream_protocol_error, upstream_timeout.
 */
export interface UpstreamClient {
  request(endpoint: Endpoint, req: UpstreamRequest, opts: ForwardOptions): Promise<UpstreamResponse>;
  /** Idle pooled connections right now, for metrics and tests. */
  idleConnections(): number;
  close(): void;
}
