// Header handling on the hot path: hop-by-hop removal, forwarding headers, route mutations.
import type { HeaderMutationConfig } from "../config/schema.ts";
import { byteString } from "../upstream/http1/byte-string.ts";
import { HeadFields, parseHeaderFields } from "../upstream/http1/response-parser.ts";
import type { HeaderList } from "../upstream/types.ts";

/** RFC 9110 §7.6.1 connection-specific headers, plus the de-facto ones proxies strip. */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** Names listed in a Connection header value ("close, x-foo") other than the keep-alive tokens. */
export function connectionTokens(value: string | null): Set<string> | null {
  if (value === null || value === "") return null;
  let out: Set<string> | null = null;
  for (const part of value.split(",")) {
    const t = part.trim().toLowerCase();
    // Host is never hop-by-hop: "Connection: host" must not take the Host routing reads away.
    if (t === "" || t === "close" || t === "keep-alive" || t === "host") continue;
    (out ??= new Set()).add(t);
  }
  return out;
}

/** A route's header mutation, flattened for a fast apply. */
export interface HeaderMutation {
  readonly set: readonly [string, string][];
  readonly add: readonly [string, string][];
  /** Names removed or replaced: dropped before `set` and `add` apply. */
  readonly drop: ReadonlySet<string>;
}

export function compileMutation(m: HeaderMutationConfig | undefined): HeaderMutation | null {
  if (!m) return null;
  // Values as bytes once, here: a route's "prix 5 €" never makes a head switch encodings per request.
  const set = Object.entries(m.set).map(([k, v]): [string, string] => [k, byteString(v)]);
  const add = Object.entries(m.add).map(([k, v]): [string, string] => [k, byteString(v)]);
  if (set.length === 0 && add.length === 0 && m.remove.length === 0) return null;
  return { set, add, drop: new Set([...m.remove, ...set.map(([k]) => k)]) };
}

/** Apply a mutation to a header list in place. */
export function applyMutation(headers: HeaderList, m: HeaderMutation): HeaderList {
  let out = headers;
  if (m.drop.size > 0) out = headers.filter(([k]) => !m.drop.has(k));
  for (const h of m.set) out.push([h[0], h[1]]);
  for (const h of m.add) out.push([h[0], h[1]]);
  return out;
}

/** First value of a header in a list, or null. */
export function getHeader(headers: HeaderList, name: string): string | null {
  for (let i = 0; i < headers.length; i++) if (headers[i]![0] === name) return headers[i]![1];
  return null;
}

/** A new list of `headers` without the pairs at the indices in `drop` (ascending; null: none). */
export function withoutPairs(headers: HeaderList, drop: readonly number[] | null): HeaderList {
  const out: HeaderList = [];
  for (let i = 0, d = 0; i < headers.length; i++) {
    if (drop !== null && drop[d] === i) d++;
    else out.push(headers[i]!);
  }
  return out;
}

/** `lines` (header lines in wire form, each ending in CRLF) without the lines at the indices in `drop` (ascending). */
export function withoutLines(lines: string, drop: readonly number[]): string {
  let out = "";
  let keepFrom = 0;
  let pos = 0;
  let line = 0;
  for (let d = 0; d < drop.length; d++) {
    const target = drop[d]!;
    for (; line < target; line++) pos = lines.indexOf("\r\n", pos) + 2;
    const next = lines.indexOf("\r\n", pos) + 2;
    if (pos > keepFrom) out += lines.slice(keepFrom, pos);
    keepFrom = next;
    pos = next;
    line++;
  }
  return keepFrom === 0 ? lines : out + lines.slice(keepFrom);
}

/**
 * Header lines in wire form as a HeaderList (names lower-cased, values trimmed of spaces and tabs),
 * for consumers that need pairs: read by the one header parser, on lines it already checked once.
 */
export function linePairs(lines: string): HeaderList {
  const head = new HeadFields(lines + "\r\n");
  parseHeaderFields(head.text, 0, head);
  return head.headers;
}
