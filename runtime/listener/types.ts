// The contract between a downstream listener and the request phases: plain data, no fetch objects.
//
// Two listeners implement it: our own HTTP/1.1 server (listener/http1, over the platform's TCP
// sockets: no Request, Headers or Response objects on the hot path; the default on Bun and Deno) and
// the fetch adapter (listener/fetch.ts) that runs the same phases behind a Hono app on the runtime's
// fetch-style server.
import type { ClientInfo } from "../platform/types.ts";
import type { CancelSignal, HeaderList, ParsedLines, Tunnel, WireLines } from "../upstream/types.ts";

export interface DownstreamRequest {
  readonly method: string;
  /** Path and query in origin form, byte for byte as the client sent them (absolute-form already reduced). */
  readonly target: string;
  /**
   * Lower-case names, wire order, duplicates kept; framing headers (content-length, transfer-encoding)
   * included as sent. From our own listener a list made on first use: read `wire` where it will do.
   */
  readonly headers: HeaderList;
  /**
   * The same headers as the lines they arrived in (line i is headers[i]), so they can go upstream
   * without being rebuilt; null when the listener does not have them (the fetch listener).
   */
  readonly wire: ParsedLines | null;
  /** The body as it arrives, de-framed; null when the request has none. */
  readonly body: ReadableStream<Uint8Array> | null;
  /** Content-Length when the client sent one, null for a chunked or absent body. */
  readonly bodyLength: number | null;
  readonly client: ClientInfo;
  /** Aborts when the client goes away before this request's response is out; null if the listener cannot tell. */
  readonly signal: CancelSignal | null;
  /** Body bytes the client has sent so far, when the listener counts them (for the log of a failed request). */
  readonly bodyReceived?: number;
  /** The listener can switch this connection to another protocol (a 101 with `tunnel`); absent: it cannot. */
  readonly canSwitch?: boolean;
}

export interface DownstreamResponse {
  status: number;
  /** Reason phrase; "" means the standard one. */
  statusText: string;
  /**
   * Lower-case names. A Content-Length here is kept for a streamed or bodyless response (HEAD, 304
   * answer with the size of the representation); for `chunks` the listener writes the real size.
   */
  headers: HeaderList;
  /**
   * Header lines sent as they are, ahead of `headers` (an upstream's own lines, passed through).
   * They hold no hop-by-hop or Transfer-Encoding line, and at most one Content-Length, a plain number
   * that is the body's length (the size of `chunks`, when there are chunks; the upstream's body was
   * read by it). `date` and `length` say whether they hold a Date and that Content-Length.
   */
  wire?: (WireLines & { readonly date: boolean; readonly length: boolean }) | null;
  /**
   * The whole body, already in memory (proxy-made responses, small upstream responses). The listener
   * takes the array: it empties it once the bytes are written, so whoever else still points at it
   * (the upstream response, settled promises) no longer keeps the buffers alive.
   */
  chunks: Uint8Array[] | null;
  /**
   * The bytes in front of chunks[0] in its buffer are free (UpstreamResponse.headroom): the listener
   * may write the head there instead of copying head and body into one buffer.
   */
  headroom?: boolean;
  /** Or a streamed body. Both null: no body. */
  stream: ReadableStream<Uint8Array> | null;
  /**
   * With status 101: the upstream side of the switched connection. The listener writes the head with
   * `connection: upgrade` and `upgrade: <tunnel.protocol>`, then relays bytes both ways until one side
   * closes. Only for a request whose `canSwitch` is true.
   */
  tunnel?: Tunnel | null;
}

/**
 * Runs the phases for one request and hands its response to `reply`: exactly once, always (errors
 * are responses too), and never before the handler has returned. A callback rather than a promise:
 * the common path then allocates no promise at all between the request's head and its response.
 */
export type DownstreamHandler = (req: DownstreamRequest, reply: (res: DownstreamResponse) => void) => void;
