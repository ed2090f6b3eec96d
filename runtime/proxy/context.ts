// What one request carries through its phases; filters read and change it through the host.
import type { HeaderList } from "../upstream/types.ts";

export interface RequestContext {
  readonly requestId: string;
  readonly method: string;
  /** Path and query as they will go upstream (filters and rewrites may change it). */
  target: string;
  /** Request headers as they will go upstream, lower-case names, wire order, duplicates kept. */
  headers: HeaderList;
  readonly clientAddress: string;
  readonly routeName: string;
  /** SPIFFE-style identity of the peer proxy when the listener speaks mTLS; null otherwise. */
  readonly peerIdentity: string | null;
  /** performance.now() when the request arrived. */
  readonly startedAt: number;
}
