// Serialises an UpstreamRequest into an HTTP/1.1 request head, refusing anything that could split it.
import { ProxyError } from "../../errors.ts";
import type { UpstreamRequest } from "../types.ts";
import { byteString } from "./byte-string.ts";
import { TOKEN } from "./response-parser.ts";

/** How the request body goes on the wire. */
export type BodyFraming = "none" | "length" | "chunked";

export interface RequestHead {
  /** The head: an ASCII string on the fast path, latin1 bytes when some byte is above 0x7f. */
  readonly data: string | Uint8Array;
  readonly framing: BodyFraming;
  /** The caller sent `expect: 100-continue` and there is a body to hold back. */
  readonly expectContinue: boolean;
  /** The caller sent `connection: close`: do not reuse the connection afterwards. */
  readonly close: boolean;
}

const NOT_TOKEN = -1;
const HAS_UPPER = 1;

function bad(message: string): ProxyError {
  // Everything here came through the proxy (a client's bytes were checked by the listener), so a value
  // that would break the request line or a header is our own or a filter's doing.
  return new ProxyError("internal", "internal", message);
}

/** 0 for a lower-case token, HAS_UPPER when it has capitals, NOT_TOKEN when it is not a token. */
function scanToken(s: string): number {
  if (s.length === 0) return NOT_TOKEN;
  let flags = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TOKEN[c] === 0) return NOT_TOKEN;
    if (c >= 65 && c <= 90) flags = HAS_UPPER;
  }
  return flags;
}

/**
 * 0 for ASCII, 1 when some char is in 0x80-0xff (sent as that byte, the ByteString convention of
 * fetch Headers), ABOVE_LATIN1 when some char is above 0xff and `utf8` allows it. Throws on CR, LF,
 * NUL and other controls, and on chars above 0xff unless `utf8`.
 */
const ABOVE_LATIN1 = 2;
function scanValue(s: string, allowSpace: boolean, what: string, utf8 = false): number {
  let high = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c < 0x7f) {
      if (c === 0x20 && !allowSpace) throw bad(`${what} contains a space`);
      continue;
    }
    if (c === 0x09 && allowSpace) continue;
    if (c >= 0x80 && c <= 0xff) {
      if (high === 0) high = 1;
      continue;
    }
    if (c > 0xff) {
      if (!utf8) throw bad(`${what} has a character above 0xff; headers and targets are byte strings`);
      high = ABOVE_LATIN1; // and go on: a control char after it must still be refused
      continue;
    }
    throw bad(`${what} contains control character 0x${c.toString(16).padStart(2, "0")}`);
  }
  return high;
}

// One native scan each says "nothing unusual here"; the loops above then only run when something is.
// Measured on Bun: a char-class test is about twice as fast as the same check as a JS loop.
const PLAIN_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const PLAIN_VALUE = /^[\t\x20-\x7e]*$/;
const PLAIN_TARGET = /^[\x21-\x7e]+$/;

function hasToken(value: string, token: string): boolean {
  // Values like "Close", "keep-alive, close", "100-Continue": compare lower-cased, comma-separated.
  const lower = value.toLowerCase();
  if (lower === token) return true;
  for (const part of lower.split(",")) if (part.trim() === token) return true;
  return false;
}

const COMMON_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);
const BODYLESS_OK = new Set(["GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"]);

/**
 * Builds the head for `req`. The target goes on the request line exactly as given. Headers keep their
 * order; Content-Length and Transfer-Encoding from the caller are dropped because framing is ours;
 * `host: hostKey` is added when the caller gave no Host.
 */
export function buildRequestHead(req: UpstreamRequest, hostKey: string): RequestHead {
  const method = req.method;
  if (!COMMON_METHODS.has(method) && scanToken(method) === NOT_TOKEN) throw bad(`request method ${JSON.stringify(method)} is not a token`);
  if (req.target.length === 0) throw bad("request target is empty");
  let high = PLAIN_TARGET.test(req.target) ? 0 : scanValue(req.target, false, "request target");

  let head = method + " " + req.target + " HTTP/1.1\r\n";
  let hasHost = false;
  let expectContinue = false;
  let close = false;
  const wire = req.wire;
  if (wire != null) {
    // Lines our own parser checked, with nothing in them for us to act on (see UpstreamRequest.wire).
    head += wire.lines;
    if (wire.high) high = 1;
    hasHost = wire.host;
  }
  const headers = req.headers;
  for (let i = 0; i < headers.length; i++) {
    const name = headers[i][0];
    let value = headers[i][1];
    let lower = name;
    if (!PLAIN_NAME.test(name)) {
      const token = scanToken(name);
      if (token === NOT_TOKEN) throw bad(`request header name ${JSON.stringify(name)} is not a token`);
      if (token === HAS_UPPER) lower = name.toLowerCase();
    }
    if (!PLAIN_VALUE.test(value)) {
      const kind = scanValue(value, true, `request header ${name}`, true);
      // Text above latin1 (a filter's "prix 5 €") goes as its UTF-8 bytes, as the listener sends such
      // a response value: one char per byte from here on.
      if (kind === ABOVE_LATIN1) value = byteString(value);
      high = 1;
    }
    switch (lower) {
      case "content-length":
      case "transfer-encoding":
        continue;
      case "host":
        hasHost = true;
        break;
      case "expect":
        if (hasToken(value, "100-continue")) expectContinue = true;
        break;
      case "connection":
        if (hasToken(value, "close")) close = true;
        break;
    }
    head += name + ": " + value + "\r\n";
  }
  if (!hasHost) {
    if (!PLAIN_TARGET.test(hostKey)) high |= scanValue(hostKey, false, "endpoint key");
    head += "host: " + hostKey + "\r\n";
  }

  let framing: BodyFraming;
  if (req.body === null) {
    if (req.bodyLength !== null && req.bodyLength !== 0) throw bad(`bodyLength is ${req.bodyLength} but the body is null`);
    framing = "none";
    // Servers may answer 411 to a POST without a length, so say that it is empty.
    if (!BODYLESS_OK.has(method)) head += "content-length: 0\r\n";
  } else if (req.bodyLength !== null) {
    if (!Number.isSafeInteger(req.bodyLength) || req.bodyLength < 0) throw bad(`bodyLength ${req.bodyLength} is not a length`);
    framing = "length";
    head += "content-length: " + req.bodyLength + "\r\n";
  } else {
    framing = "chunked";
    head += "transfer-encoding: chunked\r\n";
  }
  head += "\r\n";

  return {
    data: high === 0 ? head : Buffer.from(head, "latin1"),
    framing,
    expectContinue: expectContinue && framing !== "none",
    close,
  };
}
