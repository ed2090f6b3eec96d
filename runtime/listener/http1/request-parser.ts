// Request heads from downstream clients: the request line, then the header lines (shared with the
// upstream client's response parser), then the checks a proxy must make before it forwards anything.
import { ProxyError, type ErrorCode } from "../../errors.ts";
import { withoutLines } from "../../proxy/headers.ts";
import { HeadFields, ParseError, TOKEN, parseHeaderFields } from "../../upstream/http1/response-parser.ts";

export class RequestHead extends HeadFields {
  /** The request asked for `100 Continue` before sending its body. */
  expectContinue = false;

  constructor(
    text: string,
    readonly method: string,
    /** Origin form ("/p?q"), or "*" for OPTIONS; an absolute-form target is reduced to its path and query. */
    readonly target: string,
    /** 0 for HTTP/1.0, 1 for HTTP/1.1 (and any later 1.x). */
    readonly minor: number,
  ) {
    super(text);
  }

  /** The same head once more, for a request whose head text is this one's (see HeadFields.copyInto). */
  again(): RequestHead {
    const head = this.copyInto(new RequestHead(this.text, this.method, this.target, this.minor));
    head.expectContinue = this.expectContinue;
    return head;
  }
}

/** RFC 9112 section 3.2 / RFC 3986 section 3.2.2: uri-host [ ":" port ]; empty is allowed. */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?$/;

function reject(code: ErrorCode, message: string): ProxyError {
  return new ProxyError("downstream", code, message);
}

/**
 * A target char: visible ASCII (RFC 3986 chars and the odd ones clients send anyway, like `|` and `{`),
 * or a byte above 0x7f (raw UTF-8 that curl and browsers' address bars send unencoded; nginx and
 * Envoy pass it on, and so do we, byte for byte). Controls, space and DEL could split the request line.
 */
function checkTarget(text: string, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) throw reject("bad_request", `request target contains byte 0x${c.toString(16)}`);
    // A fragment is for the client alone (RFC 9110 section 4.2.5): one in a request-target is malformed.
    if (c === 0x23) throw reject("bad_request", "request target contains a fragment (#)");
  }
}

/**
 * Parses a head as returned by HeadReader.push (request line, header lines, empty line). Throws a
 * ProxyError (source "downstream") whose code picks the status: bad_request, http_version_not_supported,
 * unsupported_transfer_encoding, expectation_failed.
 */
export function parseRequestHead(text: string): RequestHead {
  // RFC 9112 section 2.2: a server SHOULD ignore empty lines before the request line.
  let start = 0;
  while (text.startsWith("\r\n", start)) start += 2;
  const eol = text.indexOf("\r\n", start);
  const sp1 = text.indexOf(" ", start);
  const sp2 = sp1 === -1 ? -1 : text.indexOf(" ", sp1 + 1);
  if (sp1 <= start || sp2 === -1 || sp2 > eol || sp2 === sp1 + 1 || eol - sp2 !== 9 || !text.startsWith("HTTP/", sp2 + 1) || text.charCodeAt(sp2 + 7) !== 0x2e) {
    throw reject("bad_request", `malformed request line ${JSON.stringify(text.slice(start, Math.min(eol, start + 64)))}`);
  }
  for (let i = start; i < sp1; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || TOKEN[c] === 0) throw reject("bad_request", `invalid method ${JSON.stringify(text.slice(start, sp1))}`);
  }
  const major = text.charCodeAt(sp2 + 6) - 0x30;
  const minorDigit = text.charCodeAt(sp2 + 8) - 0x30;
  if (major < 0 || major > 9 || minorDigit < 0 || minorDigit > 9) {
    throw reject("bad_request", `malformed HTTP version ${JSON.stringify(text.slice(sp2 + 1, eol))}`);
  }
  if (major !== 1) throw reject("http_version_not_supported", `HTTP/${major}.${minorDigit} is not supported; this listener speaks HTTP/1.1`);
  checkTarget(text, sp1 + 1, sp2);
  const method = text.slice(start, sp1);
  let target = text.slice(sp1 + 1, sp2);
  let authority: string | null = null;

  if (target.charCodeAt(0) !== 0x2f /* "/" */) {
    if (target === "*" && method === "OPTIONS") {
      // asterisk form: forwarded as is
    } else if (/^https?:\/\//i.test(target)) {
      // absolute form (RFC 9112 section 3.2.2): forward the path and query; a missing path is "/".
      // Its authority replaces any Host the client sent (section 3.2.2: a proxy MUST ignore Host here).
      const from = target.indexOf("//") + 2;
      const slash = target.indexOf("/", from);
      const query = target.indexOf("?", from);
      const end = slash === -1 ? (query === -1 ? target.length : query) : query !== -1 && query < slash ? query : slash;
      authority = target.slice(from, end);
      if (authority === "" || authority.includes("@") || !HOST.test(authority)) {
        throw reject("bad_request", `invalid authority ${JSON.stringify(authority.slice(0, 64))} in the request target`);
      }
      target = slash === -1 || (query !== -1 && query < slash) ? "/" + (query === -1 ? "" : target.slice(query)) : target.slice(slash);
    } else {
      throw reject("bad_request", `request target ${JSON.stringify(target.slice(0, 64))} is not a path`);
    }
  }

  const head = new RequestHead(text, method, target, minorDigit === 0 ? 0 : 1);
  try {
    parseHeaderFields(text, eol + 2, head);
  } catch (err) {
    if (err instanceof ParseError) throw reject("bad_request", err.message);
    throw err;
  }

  if (authority !== null) {
    // The target's authority is the Host: the head again, in origin form, with that Host line (the
    // rest was checked just now, and is checked again as an ordinary request).
    // The Host lines it replaces must still be well-formed (RFC 9112 section 3.2: more than one, or
    // an invalid one, is a 400 whatever the target says).
    const hosts: number[] = [];
    for (let i = 0; i < head.names.length; i++) {
      if (head.names[i] !== "host") continue;
      const value = head.value(i);
      if (!HOST.test(value)) throw reject("bad_request", `invalid Host header ${JSON.stringify(value.slice(0, 64))}`);
      hosts.push(i);
    }
    if (hosts.length > 1) throw reject("bad_request", "more than one Host header");
    return parseRequestHead(`${method} ${target} HTTP/1.${minorDigit}\r\n${withoutLines(head.lines, hosts)}host: ${authority}\r\n\r\n`);
  }
  let host = 0;
  let codings = "";
  const names = head.names;
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    if (name === "host") {
      host++;
      const value = head.value(i);
      if (!HOST.test(value)) throw reject("bad_request", `invalid Host header ${JSON.stringify(value.slice(0, 64))}`);
    } else if (name === "expect") {
      const value = head.value(i);
      if (value.toLowerCase() !== "100-continue") throw reject("expectation_failed", `unsupported expectation ${JSON.stringify(value.slice(0, 64))}`);
      head.expectContinue = head.minor === 1;
    } else if (name === "transfer-encoding") {
      const value = head.value(i);
      codings = codings === "" ? value : `${codings}, ${value}`;
    }
  }
  if (codings !== "") {
    // RFC 9112 section 6.3: a request whose final coding is not chunked has no knowable length (400);
    // codings under chunked (gzip, chunked) we do not decode, and the upstream would never learn of them (501).
    const list = codings.toLowerCase().split(",").map((c) => c.trim());
    if (list[list.length - 1] !== "chunked") throw reject("bad_request", `transfer-encoding ${JSON.stringify(codings.slice(0, 64))} does not end in chunked`);
    // Chunked applied twice is malformed, not an unsupported coding (section 6.1: a sender MUST NOT).
    if (list.indexOf("chunked") !== list.length - 1) throw reject("bad_request", `transfer-encoding ${JSON.stringify(codings.slice(0, 64))} applies chunked more than once`);
    if (list.length > 1) throw reject("unsupported_transfer_encoding", `transfer-encoding ${JSON.stringify(codings.slice(0, 64))} is not supported; only chunked is`);
  }
  // RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message means its framing may be faulty;
  // it is read as chunked, answered, and the connection closed after.
  if (head.minor === 0 && codings !== "") head.connectionClose = true;
  // RFC 9112 section 3.2: exactly one Host in HTTP/1.1; at most one in HTTP/1.0.
  if (host === 0 && head.minor === 1) throw reject("bad_request", "HTTP/1.1 request without a Host header");
  if (host > 1) throw reject("bad_request", "more than one Host header");
  // Both framings at once is how request smuggling starts (RFC 9112 section 6.3): refuse rather than guess.
  if (head.transferEncoding !== "none" && head.contentLength !== -1) {
    throw reject("bad_request", "request has both Transfer-Encoding and Content-Length");
  }
  return head;
}
