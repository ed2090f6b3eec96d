// What one request carries through its phases; filters read and change it through the host.
import type { FilterHeaders } from "./filter-headers.ts";

export interface RequestContext {
  readonly requestId: string;
  readonly method: string;
  /** Path and query as they will go upstream (filters and rewrites may change it). */
  target: string;
  /**
   * Request headers as they will go upstream, lower-case names, wire order, duplicates kept. Filters
   * change them in place.
   */
  headers: FilterHeaders;
  readonly clientAddress: string;
  readonly routeName: string;
  /** SPIFFE-style identity of the peer proxy when the listener speaks mTLS; null otherwise. */
  readonly peerIdentity: string | null;
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
  /**
   * Time allowed for each upstream attempt, ms; 0 = only the route timeout applies. A filter (the
   * retry filter) sets it in the request phase. The route's `timeoutMs` still bounds all attempts together.
   */
  perTryTimeoutMs: number;
  /** 1 for the first upstream attempt, 2 for the first retry, and so on. Set by the proxy. */
  attempt: number;
  /**
   * Set by the proxy before the response phase when the attempt got no response at all: the
   * x-mesh-error code (upstream_refused, upstream_connect_timeout, upstream_reset, upstream_timeout,
   * upstream_protocol_error). The response the filter sees is then synthetic: that error's status
   * and an `x-mesh-error` header. null when a real upstream response arrived.
   */
  upstreamError: string | null;
  /**
   * True when the request body can be sent again (no body, or a body buffered whole because a filter
   * asked for it with wantBody). A `retry` outcome on a request that is not replayable is ignored.
   */
  replayable: boolean;
  /**
   * The route's filter set as the request phase ran it, kept by the chain so that the response phase
   * runs the same set across a hot swap. Opaque here; the proxy starts it as null.
   */
  pinned?: unknown;
}
