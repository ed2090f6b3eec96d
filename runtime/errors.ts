// The one error type of the data plane, and the one place that maps it to a status and a body.
import type { DownstreamResponse } from "./listener/types.ts";

/** Who caused the error: the client, the upstream, a filter, or the proxy itself. */
export type ErrorSource = "downstream" | "upstream" | "filter" | "internal";

/**
 * Short, stable codes. They appear in the `x-mesh-error` response header, in the JSON error body,
 * in access logs and in metrics, so treat them as API: add codes, never rename.
 */
export type ErrorCode =
  | "no_route" // 404: no route matched host/path/method/headers
  | "no_endpoint" // 503: the chosen cluster has no endpoints
  | "upstream_refused" // 503: connect refused or unreachable
  | "upstream_connect_timeout" // 503: TCP connect did not finish in time
  | "upstream_timeout" // 504: the route timeout elapsed before the response headers
  | "upstream_reset" // 502: the connection closed or reset before a full response head
  | "upstream_protocol_error" // 502: the upstream sent something that is not HTTP/1.1
  | "request_body_too_large" // 413
  | "request_headers_too_large" // 431
  | "uri_too_long" // 414: the request line alone is over the head limit
  | "bad_request" // 400: the client sent something we cannot forward
  | "request_timeout" // 408: the client did not finish its request head in time
  | "expectation_failed" // 417: an Expect other than 100-continue
  | "unsupported_transfer_encoding" // 501: a request transfer coding other than chunked
  | "http_version_not_supported" // 505: not HTTP/1.x
  | "downstream_cancelled" // 499 (nginx's "client closed request"), logged only: the client left before its response
  | "filter_failed" // 500: a fail-closed filter trapped, ran out of budget or memory
  | "internal"; // 500: a bug in the proxy

const STATUS: Record<ErrorCode, number> = {
  no_route: 404,
  no_endpoint: 503,
  upstream_refused: 503,
  upstream_connect_timeout: 503,
  upstream_timeout: 504,
  upstream_reset: 502,
  upstream_protocol_error: 502,
  request_body_too_large: 413,
  request_headers_too_large: 431,
  uri_too_long: 414,
  bad_request: 400,
  request_timeout: 408,
  expectation_failed: 417,
  unsupported_transfer_encoding: 501,
  http_version_not_supported: 505,
  downstream_cancelled: 499,
  filter_failed: 500,
  internal: 500,
};

export interface ProxyErrorOptions {
  /** Whether the request may be sent again (to another endpoint) without harm. */
  retryable?: boolean;
  cause?: unknown;
  /** Extra fields for the JSON body, e.g. { filter, phase }. */
  detail?: Record<string, string | number>;
}

export class ProxyError extends Error {
  readonly source: ErrorSource;
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly detail: Record<string, string | number> | undefined;

  constructor(source: ErrorSource, code: ErrorCode, message: string, opts: ProxyErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "ProxyError";
    this.source = source;
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.detail = opts.detail;
  }

  get status(): number {
    return STATUS[this.code];
  }
}

/** Status code for an error code; the only mapping in the proxy. */
export function statusOf(code: ErrorCode): number {
  return STATUS[code];
}

/** Wrap anything thrown into a ProxyError; unknown errors are the proxy's own fault. */
export function toProxyError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ProxyError("internal", "internal", message, { cause: err });
}

const encoder = new TextEncoder();

/**
 * What a client is told about an upstream failure. The full message (which endpoint, what bytes it
 * sent back) goes to the access log's `detail` instead: the client needs the cause, not the mesh's
 * addresses or another service's output (Envoy's local replies keep those out too).
 */
const PUBLIC_MESSAGE: Partial<Record<ErrorCode, string>> = {
  no_endpoint: "the route's cluster has no endpoints",
  upstream_refused: "the upstream refused the connection or could not be reached",
  upstream_connect_timeout: "connecting to the upstream timed out",
  upstream_timeout: "the upstream did not send a response head in time",
  upstream_reset: "the upstream closed the connection before a complete response",
  upstream_protocol_error: "the upstream's response was not valid HTTP/1.1",
};

/** The message an error response's body carries. */
function publicMessage(err: ProxyError): string {
  return err.source === "upstream" ? (PUBLIC_MESSAGE[err.code] ?? err.message) : err.message;
}

/**
 * The response the proxy sends for an error it made itself: a small JSON body naming the cause and
 * the route, and an `x-mesh-error` header with the short code.
 */
export function errorResponse(err: ProxyError, route: string | null, requestId: string): DownstreamResponse {
  const body = JSON.stringify({
    error: err.code,
    message: publicMessage(err),
    source: err.source,
    route,
    requestId,
    ...err.detail,
  });
  const bytes = encoder.encode(body);
  return {
    status: err.status,
    statusText: "",
    headers: [
      ["content-type", "application/json"],
      ["content-length", String(bytes.byteLength)],
      ["x-mesh-error", err.code],
      ["x-request-id", requestId],
    ],
    chunks: [bytes],
    stream: null,
  };
}
