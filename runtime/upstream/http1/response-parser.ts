// Incremental HTTP/1.1 response parsing: finds and parses response heads, and de-frames bodies.
import { Buffer } from "node:buffer";
import type { HeaderList } from "../types.ts";

/** The upstream sent something that is not HTTP/1.1. The message says what. */
export class ParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ParseError";
  }
}

/**
 * A head whose lines end in a bare LF. RFC 9112 section 2.2 lets a recipient accept that, but a proxy
 * that reads lines differently from the peer behind it invites request smuggling, so we refuse it,
 * at once: waiting for a CRLFCRLF that will never come would answer only at the head timeout.
 */
export class BareLineFeed extends ParseError {
  constructor(what: string) {
    super(`${what} head has a line ending in a bare LF (lines must end in CRLF)`);
    this.name = "BareLineFeed";
  }
}

/**
 * The header lines of a head, requests and responses alike, as parseHeaderFields read them: checked,
 * indexed, and kept as the text they came in. Values become strings only when asked for (`value(i)`,
 * or `headers`, the whole list, made on first use): a pass-through request never needs most of them,
 * and each one made was two allocations per header per message.
 */
export class HeadFields {
  /** Lower-case names, line by line: names[i] is the name on line i. */
  readonly names: string[] = [];
  /** Where each value (trimmed) starts and ends in `text`: line i's is spans[2i]..spans[2i+1]. */
  readonly spans: number[] = [];
  /**
   * The header lines as they arrived ("Name: value" each ending in CRLF), for passing them on
   * without rebuilding them. "" when there are none.
   */
  lines = "";
  /** Some header value has a byte above 0x7f (the lines must go out as latin1 bytes, not as an ASCII string). */
  high = false;
  /** -1 when there is no Content-Length. */
  contentLength = -1;
  /** "other" when Transfer-Encoding is present but its last coding is not chunked (the body runs to close). */
  transferEncoding: "none" | "chunked" | "other" = "none";
  connectionClose = false;
  connectionKeepAlive = false;
  /** The Connection header's values as one list ("" without one): the names in it are hop-by-hop too. */
  connection = "";
  private list: HeaderList | null = null;
  private values: string[] | null = null;

  /** `text`: the whole head the spans point into. */
  constructor(readonly text: string) {}

  /**
   * What parsing found, onto `to`, a fresh head of the same text: a connection that receives the same
   * head again (most clients send one head over and over, and an upstream's differ only by the
   * second in Date) gets it without parsing. The arrays are shared: nothing writes them after
   * parsing. The header list is not: consumers may change theirs (response filters add headers).
   */
  protected copyInto<T extends HeadFields>(to: T): T {
    (to as { names: string[] }).names = this.names;
    (to as { spans: number[] }).spans = this.spans;
    to.values = this.values ??= [];
    to.lines = this.lines;
    to.high = this.high;
    to.contentLength = this.contentLength;
    to.transferEncoding = this.transferEncoding;
    to.connectionClose = this.connectionClose;
    to.connectionKeepAlive = this.connectionKeepAlive;
    to.connection = this.connection;
    return to;
  }

  /**
   * Line i's value. Made once per head text: a head received again (again()) shares the strings, so
   * a client's repeated Host is the very same string each time (routing compares it by identity first).
   */
  value(i: number): string {
    const values = (this.values ??= []);
    return (values[i] ??= this.text.slice(this.spans[2 * i]!, this.spans[2 * i + 1]!));
  }

  listIfMade(): HeaderList | null {
    return this.list;
  }

  /** Lower-case names and values, wire order, duplicates kept; made on first use, then the same list. */
  get headers(): HeaderList {
    if (this.list === null) {
      const list: HeaderList = [];
      for (let i = 0; i < this.names.length; i++) list.push([this.names[i]!, this.value(i)]);
      this.list = list;
    }
    return this.list;
  }
}

export class ResponseHead extends HeadFields {
  constructor(
    text: string,
    readonly status: number,
    readonly statusText: string,
    /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
    readonly minor: number,
  ) {
    super(text);
  }

  /** The same head once more, for a response whose head text is this one's (see copyInto). */
  again(): ResponseHead {
    return this.copyInto(new ResponseHead(this.text, this.status, this.statusText, this.minor));
  }
}

/** Longest head a connection keeps to reuse its parse: typical heads are 50-1000 bytes, and an idle connection must not pin up to the head limit. */
const REUSE_MAX = 1024;

/**
 * The last head a connection received and what it parsed to: the very same text again gives
 * again() of that parse (see HeadFields.copyInto), for requests and responses alike. A head that
 * failed to parse is never kept, nor one longer than REUSE_MAX.
 */
export class LastHead<T extends HeadFields & { again(): T }> {
  private text = "";
  private head: T | null = null;

  constructor(private readonly parse: (text: string) => T) {}

  /** The head `text` parses to; throws what parse() throws. */
  get(text: string): T {
    if (text === this.text) return this.head!.again();
    const head = this.parse(text);
    if (text.length <= REUSE_MAX) {
      this.text = text;
      this.head = head;
    }
    return head;
  }
}

// Bytes to string, one char per byte: lossless (TextDecoder's "latin1" is really windows-1252) and, measured
// on Bun, faster than TextDecoder. Works on any Uint8Array, on Bun and on Deno.
const latin1Slice = Buffer.prototype.latin1Slice as (this: Uint8Array, start: number, end: number) => string;

const bytesIndexOf = Buffer.prototype.indexOf as (this: Uint8Array, value: Uint8Array, from: number) => number;
const HEAD_END = new Uint8Array([13, 10, 13, 10]);

/**
 * Index just past the first CRLFCRLF whose last LF is in b[from..to) and whose first CR is at `floor`
 * or later, or -1. One native search for the four bytes (was an indexOf per line end, in JS).
 */
function findHeadEnd(b: Uint8Array, from: number, to: number, floor: number): number {
  const within = to === b.length ? b : b.subarray(0, to);
  const i = bytesIndexOf.call(within, HEAD_END, Math.max(floor, from - 3));
  return i === -1 ? -1 : i + 4;
}

/**
 * Whether b[from..to) has an LF not preceded by CR within the head that starts at b[head]. Only heads
 * still incomplete are scanned: a complete one ends in CRLFCRLF, and the line parsers reject an LF
 * inside it as a control character in a value.
 */
function hasBareLf(b: Uint8Array, head: number, from: number, to: number): boolean {
  let i = b.indexOf(10, from);
  while (i !== -1 && i < to) {
    if (i === head || b[i - 1] !== 13) return true;
    i = b.indexOf(10, i + 1);
  }
  return false;
}

/**
 * Collects one response head, which may arrive split over many chunks, up to `max` bytes. The usual
 * case, a head inside one chunk, is decoded straight from that chunk without copying.
 */
export class HeadReader {
  /** After push() returned a head: where it ended in the chunk, i.e. where the body or the next head starts. */
  end = 0;
  private buf: Uint8Array | null = null;
  private len = 0;

  /** `what`: "request" or "response", for error messages. */
  constructor(
    readonly max: number,
    private readonly what = "response",
  ) {}

  /** Forget a partial head, e.g. before the next response on the connection. */
  reset(): void {
    this.len = 0;
  }

  /** Feeds chunk[start..]. Returns the head's text (ending in CRLFCRLF), or null when more bytes are needed. */
  push(chunk: Uint8Array, start: number): string | null {
    const available = chunk.length - start;
    if (this.len === 0) {
      const limit = start + Math.min(available, this.max);
      const end = findHeadEnd(chunk, start, limit, start);
      if (end !== -1) {
        this.end = end;
        return latin1Slice.call(chunk, start, end);
      }
      if (available >= this.max) throw new ParseError(`response head is larger than ${this.max} bytes`);
      if (hasBareLf(chunk, start, start, start + available)) throw new BareLineFeed(this.what);
    }
    if (available === 0) return null;

    const take = Math.min(available, this.max - this.len);
    const prev = this.len;
    this.append(chunk.subarray(start, start + take));
    const buf = this.buf!;
    // The LF that ends the head is in the new bytes (else it was found last time); the CR/LF/CR before it may not be.
    const end = findHeadEnd(buf, prev, this.len, 0);
    if (end !== -1) {
      this.len = 0;
      this.end = start + (end - prev);
      // Readers live as long as their connection: the buffer of a rare split head goes with the head.
      this.buf = null;
      return latin1Slice.call(buf, 0, end);
    }
    if (this.len >= this.max) throw new ParseError(`response head is larger than ${this.max} bytes`);
    if (hasBareLf(buf, 0, Math.max(0, prev - 1), this.len)) throw new BareLineFeed(this.what);
    this.end = chunk.length;
    return null;
  }

  /** After push() threw for size: whether the bytes seen had a line end, i.e. the first line fit. */
  sawLineEnd(chunk: Uint8Array, start: number): boolean {
    // Held bytes are the first `max` of the head; else they were all in this chunk.
    if (this.len > 0 && this.buf !== null) return this.buf.subarray(0, this.len).indexOf(10) !== -1;
    const lf = chunk.indexOf(10, start);
    return lf !== -1 && lf < start + this.max;
  }

  private append(bytes: Uint8Array): void {
    const need = this.len + bytes.length;
    if (this.buf === null || this.buf.length < need) {
      const grown = new Uint8Array(Math.min(this.max, Math.max(need, (this.buf?.length ?? 1024) * 2)));
      if (this.buf !== null) grown.set(this.buf.subarray(0, this.len));
      this.buf = grown;
    }
    this.buf.set(bytes, this.len);
    this.len = need;
  }
}

/** tchar from RFC 9110 section 5.6.2, by code unit: the one table header names and methods are checked against. */
export const TOKEN = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TOKEN[c.charCodeAt(0)] = 1;

// Heads repeat the same few names ("Content-Type", "host") on every message. Each name is looked up
// as written in a direct-mapped table keyed by a hash computed in the loop that checks its chars, and
// a hit (one native startsWith) gives its lower-case form: no slice, no toLowerCase and no Map hashing
// of a new string (that Map cost 5-7% of the proxy's JavaScript per request in CPU profiles; comparing
// char by char in JS instead of startsWith, 8% of a response head's parse).
const NAME_SLOTS = 1024;
const NAME_MAX = 64;
const RAW_NAMES: (string | undefined)[] = new Array(NAME_SLOTS);
const LOWER_NAMES: (string | undefined)[] = new Array(NAME_SLOTS);

// Two slots per hash (the second is its neighbour), so two names of one message that collide do not
// evict each other on every message: "x-api-key" and "ratelimit-reset" shared a slot of the filters'
// table and missed twice per request.
function internName(text: string, from: number, to: number, hash: number): string {
  const len = to - from;
  const first = (hash ^ (hash >>> 11)) & (NAME_SLOTS - 1);
  let raw = RAW_NAMES[first];
  if (raw !== undefined && raw.length === len && text.startsWith(raw, from)) return LOWER_NAMES[first]!;
  const second = first ^ 1;
  raw = RAW_NAMES[second];
  if (raw !== undefined && raw.length === len && text.startsWith(raw, from)) return LOWER_NAMES[second]!;
  const name = text.slice(from, to);
  const lower = name.toLowerCase();
  if (len <= NAME_MAX) {
    const slot = RAW_NAMES[first] === undefined ? first : second;
    RAW_NAMES[slot] = name;
    LOWER_NAMES[slot] = lower;
  }
  return lower;
}

function isOws(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/**
 * Header value chars: anything but controls (HTAB is fine) and DEL. Returns whether some byte is above
 * 0x7f. `what` and `name` make the error message (only then: no string is built per header).
 */
function checkValueChars(text: string, from: number, to: number, what: string, name: string): boolean {
  let high = false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) high = true;
    else if ((c < 0x20 && c !== 0x09) || c === 0x7f) throw new ParseError(`${what}${name} contains control character 0x${c.toString(16)}`);
  }
  return high;
}

/** text[from..to) as a decimal number when it is 1-15 digits and nothing else (the usual Content-Length), else -1. */
function digitsAt(text: string, from: number, to: number): number {
  if (to <= from || to - from > 15) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const d = text.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/** What digitsAt did not take: "42, 42" (repeated identical values are allowed, RFC 9110 section 8.6), or an error. */
function parseContentLength(value: string): number {
  let result = -1;
  for (const part of value.split(",")) {
    const p = part.trim();
    // 15 digits stay below 2^53.
    if (p.length === 0 || p.length > 15 || !/^[0-9]+$/.test(p)) throw new ParseError(`invalid content-length ${JSON.stringify(value)}`);
    const n = Number(p);
    if (result !== -1 && n !== result) throw new ParseError(`conflicting content-length values ${JSON.stringify(value)}`);
    result = n;
  }
  return result;
}

function lastListElement(value: string): string {
  const comma = value.lastIndexOf(",");
  return (comma === -1 ? value : value.slice(comma + 1)).trim().toLowerCase();
}

function listHas(value: string, token: string): boolean {
  const lower = value.toLowerCase();
  if (lower === token) return true;
  for (const part of lower.split(",")) if (part.trim() === token) return true;
  return false;
}

/**
 * Parses the header lines of a head (requests and responses alike) from `pos` to the final empty
 * line: names checked and lower-cased, values trimmed and checked, framing headers interpreted.
 * `text` is head.text.
 */
export function parseHeaderFields(text: string, pos: number, head: HeadFields): void {
  let eol: number;
  const last = text.length - 2; // where the final empty line starts
  head.lines = pos < last ? text.slice(pos, last) : "";
  const names = head.names;
  const spans = head.spans;
  while (pos < last) {
    eol = text.indexOf("\r\n", pos);
    const first = text.charCodeAt(pos);
    if (isOws(first)) throw new ParseError("obsolete line folding in headers");
    const colon = text.indexOf(":", pos);
    if (colon === -1 || colon > eol) throw new ParseError(`header line without a colon ${JSON.stringify(text.slice(pos, Math.min(eol, pos + 64)))}`);
    if (colon === pos) throw new ParseError("header with an empty name");

    let hash = 0;
    for (let i = pos; i < colon; i++) {
      const c = text.charCodeAt(i);
      if (c >= 128 || TOKEN[c] === 0) throw new ParseError(`invalid header name ${JSON.stringify(text.slice(pos, colon))}`);
      hash = (Math.imul(hash, 31) + c) | 0;
    }
    const name = internName(text, pos, colon, hash);

    let vs = colon + 1;
    let ve = eol;
    while (vs < ve && isOws(text.charCodeAt(vs))) vs++;
    while (ve > vs && isOws(text.charCodeAt(ve - 1))) ve--;
    if (checkValueChars(text, vs, ve, "header ", name)) head.high = true;

    switch (name) {
      case "content-length": {
        let n = digitsAt(text, vs, ve);
        if (n === -1) n = parseContentLength(text.slice(vs, ve));
        if (head.contentLength !== -1 && head.contentLength !== n) throw new ParseError("conflicting content-length headers");
        head.contentLength = n;
        break;
      }
      case "transfer-encoding":
        // Only the last coding of the last header decides the framing (RFC 9112 section 6.3).
        head.transferEncoding = lastListElement(text.slice(vs, ve)) === "chunked" ? "chunked" : "other";
        break;
      case "connection": {
        const value = text.slice(vs, ve);
        if (listHas(value, "close")) head.connectionClose = true;
        if (listHas(value, "keep-alive")) head.connectionKeepAlive = true;
        head.connection = head.connection === "" ? value : `${head.connection}, ${value}`;
        break;
      }
    }
    names.push(name);
    spans.push(vs, ve);
    pos = eol + 2;
  }
}

/** Parses a head as returned by HeadReader.push (status line, header lines, empty line). */
export function parseResponseHead(text: string): ResponseHead {
  let eol = text.indexOf("\r\n");
  // "HTTP/1.1 200" is the shortest status line; the reason phrase may be empty and so may its space.
  if (
    eol < 12 ||
    !text.startsWith("HTTP/1.") ||
    (text.charCodeAt(7) !== 0x30 && text.charCodeAt(7) !== 0x31) ||
    text.charCodeAt(8) !== 0x20 ||
    (eol > 12 && text.charCodeAt(12) !== 0x20)
  ) {
    throw new ParseError(`malformed status line ${JSON.stringify(text.slice(0, Math.min(eol === -1 ? 64 : eol, 64)))}`);
  }
  let status = 0;
  for (let i = 9; i < 12; i++) {
    const d = text.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) throw new ParseError(`malformed status code ${JSON.stringify(text.slice(9, 12))}`);
    status = status * 10 + d;
  }
  if (status < 100) throw new ParseError(`status code ${status} is out of range`);
  checkValueChars(text, 13, eol, "reason phrase", "");

  const head = new ResponseHead(text, status, eol > 13 ? text.slice(13, eol) : "", text.charCodeAt(7) - 0x30);

  parseHeaderFields(text, eol + 2, head);
  return head;
}

// ---------------------------------------------------------------------------------------------------
// Body framing. A decoder takes raw bytes and hands the body's bytes, unframed, to a sink.

/**
 * chunk[start..end) for a sink that may keep it. Small chunks are copied: the runtime keeps a typed
 * array of up to ~1000 bytes inline, and the first view into one moves its bytes out to a separate
 * buffer first (measured on Bun: 190 ns for a view of a fresh 250-byte chunk, 80 ns for a copy).
 */
function part(chunk: Uint8Array, start: number, end: number): Uint8Array {
  return chunk.length <= 1000 ? chunk.slice(start, end) : chunk.subarray(start, end);
}

export interface BodySink {
  /** A view into the received chunk; the sink may keep it. */
  onBodyChunk(chunk: Uint8Array): void;
}

export interface BodyDecoder {
  /** The body is complete. */
  readonly done: boolean;
  /** Consumes from chunk[start..]; returns where the body ended (chunk.length while it wants more). */
  push(chunk: Uint8Array, start: number, sink: BodySink): number;
  /** Whether the connection closing cleanly now ends the body (true only for read-until-close). */
  readonly endsAtClose: boolean;
}

/** A body of `Content-Length` bytes. */
export class LengthDecoder implements BodyDecoder {
  readonly endsAtClose = false;
  done: boolean;
  private remaining: number;

  constructor(length: number) {
    this.remaining = length;
    this.done = length === 0;
  }

  push(chunk: Uint8Array, start: number, sink: BodySink): number {
    const take = Math.min(this.remaining, chunk.length - start);
    if (take > 0) {
      sink.onBodyChunk(start === 0 && take === chunk.length ? chunk : part(chunk, start, start + take));
      this.remaining -= take;
      if (this.remaining === 0) this.done = true;
    }
    return start + take;
  }
}

/** A body that runs until the upstream closes the connection. */
export class CloseDecoder implements BodyDecoder {
  readonly endsAtClose = true;
  readonly done = false;

  push(chunk: Uint8Array, start: number, sink: BodySink): number {
    if (start < chunk.length) sink.onBodyChunk(start === 0 ? chunk : part(chunk, start, chunk.length));
    return chunk.length;
  }
}

const SIZE = 0;
const SIZE_WS = 1;
const EXT = 2;
const SIZE_LF = 3;
const DATA = 4;
const DATA_CR = 5;
const DATA_LF = 6;
const TRAILER_START = 7;
const TRAILER = 8;
const TRAILER_LF = 9;
const END_LF = 10;

/** Hex value of an ASCII digit, or -1. */
function hex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

/** Caps on what a chunked body may carry besides data: extensions per chunk line, and all trailers. */
const MAX_EXTENSION_BYTES = 4096;
const MAX_TRAILER_BYTES = 64 * 1024;

/**
 * `Transfer-Encoding: chunked` (RFC 9112 section 7.1). Data goes to the sink as views of the input;
 * chunk extensions and trailers are checked for size and dropped.
 */
export class ChunkedDecoder implements BodyDecoder {
  readonly endsAtClose = false;
  done = false;
  private state = SIZE;
  private size = 0;
  private digits = 0;
  private remaining = 0;
  private extra = 0;

  push(chunk: Uint8Array, start: number, sink: BodySink): number {
    const n = chunk.length;
    let i = start;
    while (i < n) {
      const state = this.state;
      if (state === DATA) {
        const take = Math.min(this.remaining, n - i);
        sink.onBodyChunk(part(chunk, i, i + take));
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = DATA_CR;
        continue;
      }
      const c = chunk[i++];
      switch (state) {
        case SIZE: {
          const d = hex(c);
          if (d !== -1) {
            // 13 hex digits stay below 2^53; nobody sends a chunk that large.
            if (++this.digits > 13) throw new ParseError("chunk size is too large");
            this.size = this.size * 16 + d;
          } else if (this.digits === 0) {
            throw new ParseError("chunk size line does not start with a hex digit");
          } else if (c === 13) {
            this.state = SIZE_LF;
          } else if (c === 0x3b) {
            this.state = EXT;
          } else if (isOws(c)) {
            this.state = SIZE_WS;
          } else {
            throw new ParseError("invalid character in chunk size");
          }
          break;
        }
        case SIZE_WS:
          if (c === 13) this.state = SIZE_LF;
          else if (c === 0x3b) this.state = EXT;
          else if (!isOws(c)) throw new ParseError("invalid character after chunk size");
          break;
        case EXT:
          if (c === 13) this.state = SIZE_LF;
          else if (c === 10) throw new ParseError("bare LF in chunk extension");
          else if (++this.extra > MAX_EXTENSION_BYTES) throw new ParseError("chunk extension is too long");
          break;
        case SIZE_LF:
          if (c !== 10) throw new ParseError("chunk size line not ended by CRLF");
          this.extra = 0;
          if (this.size === 0) {
            this.state = TRAILER_START;
          } else {
            this.remaining = this.size;
            this.state = DATA;
          }
          this.size = 0;
          this.digits = 0;
          break;
        case DATA_CR:
          if (c !== 13) throw new ParseError("chunk data longer than its size");
          this.state = DATA_LF;
          break;
        case DATA_LF:
          if (c !== 10) throw new ParseError("chunk data not ended by CRLF");
          this.state = SIZE;
          break;
        case TRAILER_START:
          if (c === 13) {
            this.state = END_LF;
            break;
          }
          this.state = TRAILER;
        // falls through: the byte belongs to a trailer line
        case TRAILER:
          if (++this.extra > MAX_TRAILER_BYTES) throw new ParseError("chunked trailers are too large");
          if (c === 13) this.state = TRAILER_LF;
          else if (c === 10) throw new ParseError("bare LF in chunked trailers");
          break;
        case TRAILER_LF:
          if (c !== 10) throw new ParseError("trailer line not ended by CRLF");
          this.state = TRAILER_START;
          break;
        case END_LF:
          if (c !== 10) throw new ParseError("chunked body not ended by CRLF");
          this.done = true;
          return i;
      }
    }
    return n;
  }
}
