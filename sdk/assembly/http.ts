// The request and response as a filter sees them. Every accessor asks the host when it is called,
// so a filter pays only for what it reads.
import {
  FIELD_ATTEMPT, FIELD_CLIENT_ADDRESS, FIELD_METHOD, FIELD_PATH, FIELD_PEER_IDENTITY, FIELD_PER_TRY_TIMEOUT_MS, FIELD_QUERY,
  FIELD_REPLAYABLE, FIELD_REQUEST_ID, FIELD_ROUTE, FIELD_TARGET, FIELD_UPSTREAM_ERROR, MAP_REQUEST, MAP_RESPONSE,
  mesh_body, mesh_get_int, mesh_header_add, mesh_header_list, mesh_header_remove, mesh_header_set, mesh_set, mesh_set_int,
} from "./abi";
import { getField, getHeader, ptr, reserve, bytes } from "./scratch";

/** One header: a lower-case name and its value. */
export class Header {
  constructor(public name: string, public value: string) {}
}

/** The headers of the request (as they go upstream) or of the response (as they go downstream). */
export class Headers {
  constructor(private map: i32) {}

  /** The first value of `name` (case-insensitive), or null. */
  get(name: string): string | null {
    return getHeader(this.map, name);
  }

  has(name: string): bool {
    return getHeader(this.map, name) !== null;
  }

  /** Replaces every value of `name` with `value`. False when the name or value is not valid in HTTP. */
  set(name: string, value: string): bool {
    return mesh_header_set(this.map, changetype<usize>(name), name.length, changetype<usize>(value), value.length) == 0;
  }

  /** Adds a value, keeping existing ones. */
  add(name: string, value: string): bool {
    return mesh_header_add(this.map, changetype<usize>(name), name.length, changetype<usize>(value), value.length) == 0;
  }

  /** Removes every value of `name`; returns how many were removed. */
  remove(name: string): i32 {
    return mesh_header_remove(this.map, changetype<usize>(name), name.length);
  }

  /** All headers in wire order, duplicates kept. */
  list(): Header[] {
    let need = mesh_header_list(this.map, ptr(), bytes());
    if (need > bytes()) {
      reserve(need);
      need = mesh_header_list(this.map, ptr(), bytes());
    }
    const base = ptr();
    const count = load<u32>(base);
    const out = new Array<Header>(count);
    let text = base + 4 + (<usize>count << 3);
    for (let i: u32 = 0; i < count; i++) {
      const nameLen = <usize>load<u32>(base + 4 + (<usize>i << 3));
      const valueLen = <usize>load<u32>(base + 8 + (<usize>i << 3));
      const name = String.UTF16.decodeUnsafe(text, nameLen << 1);
      text += nameLen << 1;
      const value = String.UTF16.decodeUnsafe(text, valueLen << 1);
      text += valueLen << 1;
      out[i] = new Header(name, value);
    }
    return out;
  }
}

/** The request being proxied. One instance, reused for every call; read it inside the handler only. */
/** Copies the request body into the scratch buffer (growing it if needed); its length, or -1 when there is none. */
function loadBody(): i32 {
  let n = mesh_body(ptr(), bytes());
  if (n < 0 || n <= bytes()) return n;
  reserve(n);
  n = mesh_body(ptr(), bytes());
  return n;
}

export class Request {
  readonly headers: Headers = new Headers(MAP_REQUEST);

  get method(): string {
    return getField(FIELD_METHOD)!;
  }

  /** The path as it goes upstream, without the query. */
  get path(): string {
    return getField(FIELD_PATH)!;
  }

  /** Changes the path sent upstream; the query is kept. False when `p` does not start with "/". */
  setPath(p: string): bool {
    return mesh_set(FIELD_PATH, changetype<usize>(p), p.length) == 0;
  }

  /** The query string without the "?", "" when there is none. */
  get query(): string {
    return getField(FIELD_QUERY)!;
  }

  setQuery(q: string): bool {
    return mesh_set(FIELD_QUERY, changetype<usize>(q), q.length) == 0;
  }

  /** Path and query, as on the request line. */
  get target(): string {
    return getField(FIELD_TARGET)!;
  }

  /** The value of query parameter `name` (percent-decoding is left to the filter), or null. */
  queryParam(name: string): string | null {
    const q = this.query;
    let start = 0;
    while (start <= q.length) {
      let end = q.indexOf("&", start);
      if (end < 0) end = q.length;
      const eq = q.indexOf("=", start);
      const keyEnd = eq >= 0 && eq < end ? eq : end;
      if (q.substring(start, keyEnd) == name) return keyEnd < end ? q.substring(keyEnd + 1, end) : "";
      start = end + 1;
    }
    return null;
  }

  get clientAddress(): string {
    return getField(FIELD_CLIENT_ADDRESS)!;
  }

  get routeName(): string {
    return getField(FIELD_ROUTE)!;
  }

  /** SPIFFE-style identity of the calling proxy under mTLS; null when unknown. */
  get peerIdentity(): string | null {
    return getField(FIELD_PEER_IDENTITY);
  }

  get id(): string {
    return getField(FIELD_REQUEST_ID)!;
  }

  /**
   * The request body, when the filter asked for it with wantBody() and the request has one; at most
   * the smaller of wantBody's limit and the route's maxBodyBytes. Null otherwise.
   */
  body(): Uint8Array | null {
    const n = loadBody();
    if (n < 0) return null;
    const out = new Uint8Array(n);
    memory.copy(out.dataStart, ptr(), <usize>n);
    return out;
  }

  /** Which upstream attempt this is: 1 for the first, 2 for the first retry, and so on. */
  get attempt(): i32 {
    return mesh_get_int(FIELD_ATTEMPT);
  }

  /**
   * Whether the proxy can send this request again: it has no body, or its body was buffered whole
   * because a filter asked for it with wantBody(). Outcome.retry() on a request that is not
   * replayable is ignored.
   */
  get replayable(): bool {
    return mesh_get_int(FIELD_REPLAYABLE) == 1;
  }

  /** Time allowed for each upstream attempt, ms; 0 when only the route's timeoutMs applies. */
  get perTryTimeoutMs(): i32 {
    return mesh_get_int(FIELD_PER_TRY_TIMEOUT_MS);
  }

  /**
   * Bounds each upstream attempt to `ms` (0 = only the route timeout). The route's timeoutMs still
   * bounds all attempts together. An attempt that runs out answers the response phase with a
   * synthetic 504 and `upstreamError` "upstream_timeout". False for a negative value.
   */
  setPerTryTimeout(ms: i32): bool {
    return mesh_set_int(FIELD_PER_TRY_TIMEOUT_MS, ms) == 0;
  }

  /** The body decoded as UTF-8, or null. */
  bodyText(): string | null {
    const n = loadBody();
    if (n < 0) return null;
    return String.UTF8.decodeUnsafe(ptr(), <usize>n);
  }
}

/** The upstream response, before it goes to the client. The response phase runs once per upstream attempt. */
export class Response {
  status: i32 = 0;
  readonly headers: Headers = new Headers(MAP_RESPONSE);
  /** The request this response answers (method, path, request headers as sent upstream). */
  readonly request: Request;
  constructor(request: Request) {
    this.request = request;
  }

  /**
   * Null when the upstream answered. When the attempt got no response at all, the x-mesh-error code
   * (`upstream_refused`, `upstream_connect_timeout`, `upstream_reset`, `upstream_timeout`,
   * `upstream_protocol_error`): `status` and `headers` are then the proxy's synthetic error response
   * (503, 503, 502, 504, 502 and an `x-mesh-error` header).
   */
  get upstreamError(): string | null {
    return getField(FIELD_UPSTREAM_ERROR);
  }
}
