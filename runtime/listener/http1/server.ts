// Our own HTTP/1.1 server for the data plane, over the platform's callback TCP sockets.
//
// Why not Bun.serve: a proxied request through Bun.serve pays for a Request, a Headers, a URL string
// and a Response per request, and Bun.serve writes a body handed over after the request's own tick
// through a slow path. Measured on the bench box (proxy CPU per request, 100 B, wrk -c32): Bun.serve
// + our client 31-34 us, a bare Bun.listen byte pipe 14.5 us, nginx 16 us. This server keeps the
// request as plain data (DownstreamRequest), writes each response head and an in-memory body with
// one write, and is the listener that will see peer certificates once listeners speak TLS (Bun.serve
// cannot show them).
//
// One ServerConnection per socket; its life, in order:
//   HEAD     reading a request head (idle keep-alive counts here: no bytes yet)
//   ACTIVE   the handler runs; the request body streams in; the response streams out
//   -> HEAD again for keep-alive (pipelined bytes waiting in `pending` are parsed then), or closed.
import { Buffer } from "node:buffer";
import { ProxyError } from "../../errors.ts";
import { platform } from "../../platform/index.ts";
import { listenTcp, type ListenFn, type Socket, type SocketEvents, type TcpServer } from "../../platform/tcp.ts";
import type { ClientInfo } from "../../platform/types.ts";
import { CancelSource } from "../../upstream/cancel.ts";
import { byteString, isLatin1 } from "../../upstream/http1/byte-string.ts";
import type { CancelSignal, HeaderList, Tunnel, TunnelEvents } from "../../upstream/types.ts";
import {
  ChunkedDecoder,
  BareLineFeed,
  HeadReader,
  LastHead,
  LengthDecoder,
  ParseError,
  type BodyDecoder,
  type BodySink,
} from "../../upstream/http1/response-parser.ts";
import type { DownstreamHandler, DownstreamRequest, DownstreamResponse } from "../types.ts";
import { parseRequestHead, type RequestHead } from "./request-parser.ts";
import { reasonPhrase } from "./status.ts";

/** Read again at every use, so a config reload applies to connections already open. */
export interface ListenerLimits {
  /** Largest request head (request line and headers) in bytes; larger gets 431. */
  maxHeadBytes: number;
  /** A keep-alive connection with no request for this long is closed. */
  idleTimeoutMs: number;
  /** A request head not complete this long after its first byte gets 408. */
  requestHeadersTimeoutMs: number;
  /** A request body with nothing arriving for this long, while we read it, gets 408; 0: no limit. */
  requestBodyTimeoutMs: number;
  /** A tunnel (after a 101) with no bytes either way for this long is closed; 0: no limit. */
  tunnelIdleTimeoutMs: number;
}

export interface Http1ServerOptions {
  hostname: string;
  port: number;
  handler: DownstreamHandler;
  limits: () => ListenerLimits;
  /**
   * Makes the error response for a request refused before it reached the handler (malformed head,
   * head too large, head timeout), and accounts for it (metrics, access log).
   */
  refuse: (err: ProxyError, client: ClientInfo, head: { method: string; target: string } | null) => DownstreamResponse;
  /** Default: the platform's TCP listener. */
  listen?: ListenFn;
}

export interface Http1Server {
  readonly hostname: string;
  readonly port: number;
  /** Open connections, for tests and metrics. */
  connections(): number;
  /**
   * Stop accepting. Graceful: idle connections close now, busy ones after their current response
   * (which says `connection: close`); resolves when none is left. Otherwise every connection closes now.
   */
  stop(graceful: boolean): Promise<void>;
}

const HEAD = 0;
const ACTIVE = 1;
const CLOSED = 2;
/** After a 101: bytes go both ways as they are (TunnelRelay), no HTTP any more. */
const TUNNEL = 3;

/** Request body bytes buffered ahead of the consumer before the socket stops reading. */
const BODY_HIGH_WATER = 16 * 1024;
/** Pipelined bytes held while a request is active before the socket stops reading. */
const PENDING_HIGH_WATER = 64 * 1024;

/**
 * Streamed body bytes (both directions, all connections) between two garbage collections. Measured
 * with a 1 GiB upload: without, the proxy's RSS peaked at 97-112 MB (Bun frees the 512 KiB socket
 * read buffers lazily); with a full collection every 64 MiB, 85 MB, for ~4 ms per collection (about
 * 6% of the CPU of streaming at 1 GB/s). Small, in-memory bodies do not count.
 */
const STREAMED_BYTES_PER_COLLECTION = 64 * 1024 * 1024;
let streamedSinceCollection = 0;

function countStreamed(bytes: number): void {
  streamedSinceCollection += bytes;
  if (streamedSinceCollection >= STREAMED_BYTES_PER_COLLECTION) {
    streamedSinceCollection = 0;
    platform.collectGarbage();
  }
}

const CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n";
const LAST_CHUNK = "0\r\n\r\n";

// One `date` line per second, as every response needs one.
let dateSecond = -1;
let dateLine = "";
function dateHeader(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateLine = `date: ${new Date(now).toUTCString()}\r\n`;
  }
  return dateLine;
}

// Response heads and in-memory bodies are assembled here and sent with one write (one syscall): the
// socket copies whatever it cannot send at once (writeCopy), so the buffer is free again right after.
let scratch = Buffer.allocUnsafe(256 * 1024);
// Called on plain Uint8Arrays too (the headroom in front of a body): Bun and Deno both accept them.
const latin1Write = Buffer.prototype.latin1Write as (this: Uint8Array, s: string, offset: number, length: number) => number;
const utf8Encoder = new TextEncoder();

/** Below this body size, copying head and body into the scratch buffer costs less than a new view. */
const HEADROOM_MIN = 2048;

function scratchFor(size: number): Buffer {
  if (scratch.length < size) scratch = Buffer.allocUnsafe(Math.max(size, scratch.length * 2));
  return scratch;
}

const noBodyStatus = (s: number) => s === 204 || s === 304 || s < 200;

class RequestBody implements BodySink {
  controller!: ReadableStreamDefaultController<Uint8Array>;
  readonly stream: ReadableStream<Uint8Array>;
  /** The client waits for `100 Continue` before sending; cleared once it is sent or bytes arrive. */
  expectContinue: boolean;
  done = false;
  /** Body bytes the client has sent so far (de-framed). */
  received = 0;

  constructor(
    readonly decoder: BodyDecoder,
    private readonly conn: ServerConnection,
    expectContinue: boolean,
  ) {
    this.expectContinue = expectContinue;
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: () => this.conn.bodyPulled(this),
        cancel: () => this.conn.bodyCancelled(this),
      },
      { highWaterMark: BODY_HIGH_WATER, size: (c) => c!.byteLength },
    );
  }

  onBodyChunk(chunk: Uint8Array): void {
    this.received += chunk.byteLength;
    this.controller.enqueue(chunk);
  }
}

/** A request as the phases see it; its header list is made only if something asks for it. */
class Http1Request implements DownstreamRequest {
  readonly method: string;
  readonly target: string;
  readonly bodyLength: number | null;
  constructor(
    readonly wire: RequestHead,
    readonly body: ReadableStream<Uint8Array> | null,
    readonly client: ClientInfo,
    readonly signal: CancelSignal,
    private readonly counted: RequestBody | null,
  ) {
    this.method = wire.method;
    this.target = wire.target;
    this.bodyLength = wire.contentLength === -1 ? null : wire.contentLength;
  }
  get headers(): HeaderList {
    return this.wire.headers;
  }
  get bodyReceived(): number {
    return this.counted?.received ?? 0;
  }
  /** This listener can switch a connection to a tunnel (a 101 response with `tunnel`). */
  get canSwitch(): boolean {
    return true;
  }
}

/**
 * One client connection. It is also the cancel signal of the request it is answering (one at a time,
 * pipelined ones wait): aborted when the client goes before that response is out, so the upstream
 * request stops too, as Envoy resets the upstream stream when its downstream goes.
 */
class ServerConnection extends CancelSource implements SocketEvents {
  state = HEAD;
  /** Coarse time (server clock) after which the sweep acts on this connection; 0 for none. */
  deadline = 0;
  /** Whether the bytes awaited in HEAD state are a started head (408 on timeout) or nothing (idle close). */
  partial = false;
  socket: Socket;
  readonly client: ClientInfo;
  private reader: HeadReader | null = null;
  private readonly lastHead = new LastHead(parseRequestHead);
  private pending: Uint8Array[] | null = null;
  private pendingBytes = 0;
  private readPaused = false;
  private body: RequestBody | null = null;
  private keepAlive = true;
  private minor = 1;
  private method = "";
  /** The head of the request being answered. */
  private head: RequestHead | null = null;
  /** The last write was queued: wait for onDrain before writing more or closing. */
  private blocked = false;
  private onWritable: (() => void) | null = null;
  private streaming: ReadableStreamDefaultReader<Uint8Array> | null = null;
  /** The client half-closed: after the requests it already sent, close. */
  private peerEnded = false;
  /** In TUNNEL state: the relay to the upstream. */
  private relay: TunnelRelay | null = null;

  constructor(
    private readonly server: Server,
    socket: Socket,
    client: ClientInfo,
  ) {
    super();
    this.socket = socket;
    this.client = client;
    this.deadline = server.idleDeadline();
  }

  // SocketEvents

  onData(chunk: Uint8Array): void {
    if (this.state === HEAD) return this.parse(chunk, 0);
    if (this.state !== ACTIVE) {
      if (this.state === TUNNEL) this.relay!.fromClient(chunk);
      return;
    }
    const body = this.body;
    let start = 0;
    if (body !== null && !body.done) {
      start = this.feedBody(body, chunk, 0);
      if (start === -1 || start === chunk.length) return;
    }
    this.stash(start === 0 ? chunk : chunk.subarray(start));
  }

  onDrain(): void {
    this.blocked = false;
    const next = this.onWritable;
    this.onWritable = null;
    next?.();
  }

  /** The client sent FIN: answer what it asked for, then close. */
  onEnd(): void {
    if (this.state === CLOSED) return;
    this.peerEnded = true;
    if (this.state === TUNNEL) return this.relay!.clientEnded();
    if (this.state === HEAD) return this.close(); // a head not complete now never will be
    const body = this.body;
    if (body !== null && !body.done) {
      body.done = true;
      this.keepAlive = false;
      body.controller.error(new ProxyError("downstream", "bad_request", "the client ended the connection before the request body ended"));
    }
  }

  onClose(_error: Error | null): void {
    if (this.state === CLOSED) return;
    if (this.state === TUNNEL) this.relay!.clientClosed();
    const answering = this.state === ACTIVE;
    this.state = CLOSED;
    this.server.forget(this);
    const body = this.body;
    if (body !== null && !body.done) {
      body.done = true;
      body.controller.error(new ProxyError("downstream", "bad_request", "the client closed the connection before the request body ended"));
    }
    this.body = null;
    this.onWritable = null;
    if (this.streaming !== null) void this.streaming.cancel("downstream closed").catch(() => {});
    this.streaming = null;
    if (answering) this.abort(); // the request being answered: its upstream request stops
  }

  // Reading requests

  private parse(chunk: Uint8Array, start: number): void {
    const limits = this.server.limits;
    // One reader per connection, kept between requests (it is empty after each head); a new one only
    // when a reload changed the limit, and never in the middle of a head.
    if (this.reader === null || (!this.partial && this.reader.max !== limits.maxHeadBytes)) this.reader = new HeadReader(limits.maxHeadBytes, "request");
    let text: string | null;
    try {
      text = this.reader.push(chunk, start);
    } catch (err) {
      if (!(err instanceof ParseError)) throw err;
      if (err instanceof BareLineFeed) return this.refuse(new ProxyError("downstream", "bad_request", err.message), null);
      // As nginx does: 414 when the request line alone does not fit, 431 when the headers do not.
      if (!this.reader.sawLineEnd(chunk, start)) {
        return this.refuse(new ProxyError("downstream", "uri_too_long", `request line exceeds limits.maxRequestHeaderBytes (${limits.maxHeadBytes})`), null);
      }
      return this.refuse(new ProxyError("downstream", "request_headers_too_large", `request head exceeds limits.maxRequestHeaderBytes (${limits.maxHeadBytes})`), null);
    }
    if (text === null) {
      if (!this.partial) {
        this.partial = true;
        // A fresh clock here (rare: most heads arrive whole), so the 408 never comes early.
        this.deadline = performance.now() + limits.requestHeadersTimeoutMs;
      }
      return;
    }
    const end = this.reader.end;
    this.partial = false;
    this.deadline = 0;
    let head: RequestHead;
    try {
      // Most clients send one head over and over on a connection: that one is parsed once.
      head = this.lastHead.get(text);
    } catch (err) {
      if (!(err instanceof ProxyError)) throw err;
      return this.refuse(err, null);
    }
    this.begin(head, chunk, end);
  }

  private begin(head: RequestHead, chunk: Uint8Array, start: number): void {
    this.state = ACTIVE;
    // Whatever the last request's upstream exchange subscribed, it unsubscribed when it ended; this
    // just makes sure nothing can pile up over a long keep-alive connection.
    this.forgetListeners();
    this.minor = head.minor;
    this.method = head.method;
    this.keepAlive = !this.server.draining && (head.minor === 1 ? !head.connectionClose : head.connectionKeepAlive && !head.connectionClose);

    let decoder: BodyDecoder | null = null;
    if (head.transferEncoding === "chunked") decoder = new ChunkedDecoder();
    else if (head.contentLength > 0) decoder = new LengthDecoder(head.contentLength);
    const body = decoder === null ? null : new RequestBody(decoder, this, head.expectContinue);
    this.body = body;

    const req = new Http1Request(head, body === null ? null : body.stream, this.client, this, body);
    // The body's clock runs while we wait for its bytes; not while `Expect: 100-continue` holds it back.
    if (body !== null && !body.expectContinue) this.deadline = this.server.bodyDeadline();
    if (body !== null && start < chunk.length) {
      // A body broken already (-1): the handler still runs and answers; its upstream request fails on the body.
      start = this.feedBody(body, chunk, start);
      if (start === -1) start = chunk.length;
    }
    if (start < chunk.length) this.stash(chunk.subarray(start));
    this.head = head;
    try {
      this.server.handler(req, this.respond);
    } catch (err) {
      // The handler promised never to throw; if it does anyway (a bug), the client still gets an answer.
      this.respondSoon(this.server.options.refuse(new ProxyError("internal", "internal", String(err), { cause: err }), this.client, head));
    }
  }

  /** Feeds request body bytes; returns where the body ended in the chunk, or -1 when the body broke. */
  private feedBody(body: RequestBody, chunk: Uint8Array, start: number): number {
    body.expectContinue = false;
    this.deadline = this.server.bodyDeadline();
    let end: number;
    countStreamed(chunk.length - start);
    try {
      end = body.decoder.push(chunk, start, body);
    } catch (err) {
      // A broken chunked body: the handler's upstream request fails; nothing more is read from this connection.
      body.done = true;
      this.keepAlive = false;
      body.controller.error(new ProxyError("downstream", "bad_request", `malformed request body: ${(err as Error).message}`));
      this.socket.pause();
      this.readPaused = true;
      return -1;
    }
    if (body.decoder.done) {
      body.done = true;
      this.deadline = 0;
      body.controller.close();
    } else if ((body.controller.desiredSize ?? 1) <= 0 && !this.readPaused) {
      this.socket.pause();
      this.readPaused = true;
    }
    return end;
  }

  bodyPulled(body: RequestBody): void {
    if (body !== this.body || this.state !== ACTIVE) return;
    // The stream pulls once by itself when made; `100 Continue` waits for a real reader (a 413 or a
    // filter's answer must not invite the body first).
    if (body.expectContinue && body.stream.locked) {
      body.expectContinue = false;
      this.write(CONTINUE);
      this.deadline = this.server.bodyDeadline();
    }
    if (this.readPaused && this.pendingBytes < PENDING_HIGH_WATER) {
      this.readPaused = false;
      this.socket.resume();
      // The body's clock starts again now: the pause was ours, not the client's.
      if (!body.done) this.deadline = this.server.bodyDeadline();
    }
  }

  bodyCancelled(body: RequestBody): void {
    if (body !== this.body || body.done) return;
    // The rest of the body will never be read, so the next request's start is unknown: close after this response.
    body.done = true;
    this.keepAlive = false;
  }

  /** Bytes after the current request (pipelining): parsed once its response is done. */
  private stash(bytes: Uint8Array): void {
    (this.pending ??= []).push(bytes);
    this.pendingBytes += bytes.length;
    if (this.pendingBytes >= PENDING_HIGH_WATER && !this.readPaused) {
      this.socket.pause();
      this.readPaused = true;
    }
  }

  // Writing responses

  private write(data: string | Uint8Array): void {
    if (this.state === CLOSED) return;
    if (!this.socket.write(data)) this.blocked = true;
  }

  /** Writes scratch[0..length): the shared buffer, so what must wait is copied. */
  private writeScratch(scratch: Uint8Array, length: number): void {
    if (this.state === CLOSED) return;
    if (!this.socket.writeCopy(scratch, length)) this.blocked = true;
  }

  /** Runs `fn` once the socket has taken everything written so far. */
  private whenWritable(fn: () => void): void {
    if (!this.blocked) fn();
    else this.onWritable = fn;
  }

  /** A request refused before the handler: answer, then close (where the next request starts is unknown). */
  private refuse(err: ProxyError, head: RequestHead | null): void {
    this.state = ACTIVE;
    this.keepAlive = false;
    this.minor = head?.minor ?? 1;
    this.method = head?.method ?? "";
    this.reader = null;
    this.partial = false;
    this.deadline = 0;
    this.respond(this.server.options.refuse(err, this.client, head));
  }

  /** The sweep found this connection past its deadline. */
  expire(): void {
    if (this.state === ACTIVE) return this.expireBody();
    if (this.state === TUNNEL) return this.destroy(); // idle past limits.tunnelIdleTimeoutMs: both sides go
    if (this.state !== HEAD) return;
    if (!this.partial) return this.close();
    this.refuse(new ProxyError("downstream", "request_timeout", `request head not complete within limits.requestHeadersTimeoutMs (${this.server.limits.requestHeadersTimeoutMs})`), null);
  }

  // Not inline in begin(): a closure there would give begin() a heap scope on every call.
  private respondSoon(res: DownstreamResponse): void {
    queueMicrotask(() => this.respond(res));
  }

  /** Bound once per connection, as is respond: runs once a response is all out. */
  private readonly afterResponse = (): void => this.responded();

  /** Bound once per connection: the handler calls it for every request. */
  readonly respond = (res: DownstreamResponse): void => {
    if (this.state === CLOSED) {
      if (res.stream !== null) void res.stream.cancel("downstream closed").catch(() => {});
      res.tunnel?.destroy();
      return;
    }
    if (this.server.draining) this.keepAlive = false;
    // A body still arriving that nobody reads leaves the next request's start unknown.
    if (this.body !== null && !this.body.done) this.keepAlive = false;

    const status = res.status;
    const bodyless = this.method === "HEAD" || noBodyStatus(status);
    const chunks = res.chunks;
    let stream = res.stream;
    if (bodyless && stream !== null) {
      void stream.cancel("no body for this response").catch(() => {});
      stream = null;
    }
    let size = 0;
    if (chunks !== null) for (const c of chunks) size += c.byteLength;

    let head = `HTTP/1.1 ${status} ${res.statusText || reasonPhrase(status)}\r\n`;
    let hasDate = false;
    let hasLength = false;
    const wire = res.wire;
    if (wire != null) {
      // An upstream's own lines, passed through: no hop-by-hop or Transfer-Encoding line, at most one
      // Content-Length and that one the body's true length (DownstreamResponse.wire).
      head += wire.lines;
      hasDate = wire.date;
      hasLength = wire.length;
    }
    const headers = res.headers;
    // Only the parts that are not ours or the upstream's passed lines can hold text above latin1 (an
    // upstream's lines and reason phrase are read one char per byte): checking just those, not the
    // whole head with a regex (~130 ns for 200 chars), is what keeps this cheap.
    let latin1 = wire != null || isLatin1(res.statusText);
    for (let i = 0; i < headers.length; i++) {
      const h = headers[i]!;
      const name = h[0];
      // Text above latin1 in a value (a filter's "π €") goes as its UTF-8 bytes; the rest of the head,
      // the upstream's latin1 bytes too, stays one byte per char.
      const value = byteString(h[1]);
      if (latin1 && !isLatin1(name)) latin1 = false;
      if (name === "content-length") {
        // In-memory bodies get their real size below; others keep what the upstream said (HEAD, 304, streams).
        if (chunks !== null || noBodyStatus(status)) continue;
        hasLength = true;
      } else if (name === "date") hasDate = true;
      else if (name === "transfer-encoding" || name === "connection") continue; // framing is ours
      head += `${name}: ${value}\r\n`;
    }
    if (!hasDate) head += dateHeader();
    let chunked = false;
    if (chunks !== null) {
      // A Content-Length among the passed lines is the size of these chunks (see DownstreamResponse.wire).
      if (!noBodyStatus(status) && !hasLength) head += `content-length: ${size}\r\n`;
    } else if (stream !== null) {
      if (!hasLength) {
        if (this.minor === 1) {
          chunked = true;
          head += "transfer-encoding: chunked\r\n";
        } else {
          this.keepAlive = false; // HTTP/1.0: the body ends when the connection does
        }
      }
    } else if (!hasLength && !bodyless) {
      head += "content-length: 0\r\n";
    }
    const tunnel = res.tunnel;
    if (tunnel != null) {
      // The protocol is the upstream's Upgrade value, read one char per byte: latin1 already.
      head += `connection: upgrade\r\nupgrade: ${tunnel.protocol}\r\n`;
    } else if (!this.keepAlive) head += "connection: close\r\n";
    else if (this.minor === 0) head += "connection: keep-alive\r\n";
    head += "\r\n";

    const sendBody = chunks !== null && !bodyless && size > 0;
    if (!latin1) {
      // Non-latin1 text in the status line or a name (neither comes from an upstream, which is read
      // one char per byte): UTF-8 keeps every byte of it above 0x7f, so it can never turn into a CR or LF.
      this.write(utf8Encoder.encode(head));
      if (sendBody) for (const c of chunks!) this.write(c);
    } else if (sendBody && size >= HEADROOM_MIN && res.headroom === true && chunks!.length === 1 && chunks![0]!.byteOffset >= head.length) {
      // The body arrived behind the upstream's head in one buffer of its own: our head takes that
      // head's place and both go out from there, the body not copied (64 KiB: ~3 us less).
      const c = chunks![0]!;
      const out = new Uint8Array(c.buffer, c.byteOffset - head.length, head.length + size);
      latin1Write.call(out, head, 0, head.length);
      this.write(out);
    } else {
      const buf = scratchFor(head.length + (sendBody ? size : 0));
      let at = latin1Write.call(buf, head, 0, head.length);
      if (sendBody) {
        for (const c of chunks!) {
          buf.set(c, at);
          at += c.byteLength;
        }
      }
      this.writeScratch(buf, at);
    }
    // Written (or queued as a copy): let go of the body's buffers now. Objects made when the request
    // began (the promises it settles, the exchange records) are often old by now; pointing at the
    // chunks, even once dead, they made every young collection promote them, and a 64 KiB body per
    // request then forced a full collection every few young ones (9 -> 5 us of GC per request).
    if (chunks !== null) chunks.length = 0;
    if (tunnel != null) return this.switchTo(tunnel);
    if (stream !== null) return this.pump(stream.getReader(), chunked);
    this.whenWritable(this.afterResponse);
  };

  /**
   * The 101 is written: from here the connection carries the new protocol, relayed as bytes both ways.
   * Bytes the client sent behind its request head were held as pipelined: they go first.
   */
  private switchTo(tunnel: Tunnel): void {
    this.state = TUNNEL;
    this.deadline = this.server.tunnelDeadline();
    this.body = null;
    this.head = null;
    const relay = new TunnelRelay(this, tunnel);
    this.relay = relay;
    const pending = this.takePending();
    tunnel.start(relay);
    if (pending !== null) for (const chunk of pending) if (this.state === TUNNEL) relay.fromClient(chunk);
    if (this.peerEnded && this.state === TUNNEL) relay.clientEnded();
  }

  /** Bytes held while a request was answered, handed over; reading goes on if it was paused for them. */
  private takePending(): Uint8Array[] | null {
    const pending = this.pending;
    this.pending = null;
    this.pendingBytes = 0;
    if (this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
    return pending;
  }

  /** For the relay: bytes went one way or the other, so the tunnel's idle clock starts again. */
  active(): void {
    this.deadline = this.server.tunnelDeadline();
  }

  /** For the relay: sends to the client; false when queued (`then` runs once it drained). */
  sendToClient(chunk: Uint8Array, then: () => void): boolean {
    this.write(chunk);
    if (!this.blocked) return true;
    this.whenWritable(then);
    return false;
  }

  /** Streams a response body to the client, one chunk at a time, waiting for the socket between chunks. */
  private pump(reader: ReadableStreamDefaultReader<Uint8Array>, chunked: boolean): void {
    this.streaming = reader;
    const next = (): void => {
      reader.read().then(
        ({ done, value }) => {
          if (this.state === CLOSED) return;
          if (done) {
            this.streaming = null;
            if (chunked) this.write(LAST_CHUNK);
            return this.whenWritable(this.afterResponse);
          }
          if (value.byteLength > 0) {
            countStreamed(value.byteLength);
            if (chunked) {
              this.write(`${value.byteLength.toString(16)}\r\n`);
              this.write(value);
              this.write("\r\n");
            } else {
              this.write(value);
            }
          }
          this.whenWritable(next);
        },
        () => {
          // The upstream failed mid-body: abort, so the client never takes a truncated body for a whole one.
          this.streaming = null;
          this.destroy();
        },
      );
    };
    next();
  }

  /** Nothing of the request body arrived for limits.requestBodyTimeoutMs: the request fails with 408. */
  private expireBody(): void {
    const body = this.body;
    if (body === null || body.done) {
      this.deadline = 0;
      return;
    }
    if (this.readPaused || body.expectContinue) {
      // We are the ones not reading (the upstream is slow to take it, or the body is not invited yet).
      this.deadline = this.server.bodyDeadline();
      return;
    }
    this.deadline = 0;
    body.done = true;
    this.keepAlive = false; // the rest of the body may still come: where the next request starts is unknown
    const ms = this.server.limits.requestBodyTimeoutMs;
    body.controller.error(new ProxyError("downstream", "request_timeout", `no request body bytes for limits.requestBodyTimeoutMs (${ms} ms)`));
  }

  /** The response is out: next request on this connection, or close. */
  private responded(): void {
    if (this.state !== ACTIVE) return;
    this.body = null;
    this.head = null;
    if (!this.keepAlive) return this.close();
    this.state = HEAD;
    this.partial = false;
    this.deadline = this.server.idleDeadline();
    const pending = this.takePending();
    if (pending === null) {
      if (this.peerEnded) this.close();
      return;
    }
    // Pipelined requests: one at a time; what follows the next head waits in `pending` again.
    for (let i = 0; i < pending.length; i++) {
      if (this.state === HEAD) this.parse(pending[i]!, 0);
      else if (this.state === ACTIVE) this.onData(pending[i]!);
    }
    if (this.peerEnded) {
      if (this.state === HEAD) this.close();
      else this.onEnd(); // a request still reading its body: that body can no longer complete
    }
  }

  /** Graceful close: FIN once everything written is out. */
  close(): void {
    if (this.state === CLOSED) return;
    this.whenWritable(() => {
      if (this.state === CLOSED) return;
      this.socket.close();
      this.onClose(null);
    });
  }

  destroy(): void {
    if (this.state === CLOSED) return;
    this.socket.destroy();
    this.onClose(null);
  }

  /** Idle between requests: safe to close without cutting anything off. */
  get idle(): boolean {
    return this.state === HEAD && !this.partial;
  }
}

class Server implements Http1Server {
  readonly hostname: string;
  readonly port: number;
  readonly handler: DownstreamHandler;
  /** Coarse time in ms, advanced by the sweep: what deadlines are measured in. */
  clock = performance.now();
  draining = false;
  limits: ListenerLimits;
  private readonly open = new Set<ServerConnection>();
  private readonly tcp: TcpServer;
  private sweeper: ReturnType<typeof setInterval> | null = null;
  private tick = 0;
  private emptied: (() => void)[] = [];

  constructor(readonly options: Http1ServerOptions, listen: ListenFn) {
    this.hostname = options.hostname;
    this.handler = options.handler;
    this.limits = options.limits();
    this.tcp = listen(options.hostname, options.port, (socket, remote) => {
      const conn = new ServerConnection(this, socket, remote);
      this.open.add(conn);
      return conn;
    });
    this.port = this.tcp.port;
    this.schedule();
  }

  connections(): number {
    return this.open.size;
  }

  /**
   * When a connection idle from now may be closed. The clock lags real time by up to a tick, so a
   * tick is added: the close comes at most two ticks late, never early, and costs no clock read.
   */
  idleDeadline(): number {
    return this.clock + this.limits.idleTimeoutMs + this.tick;
  }

  /** The same for a tunnel: 0 (none) when limits.tunnelIdleTimeoutMs is 0. */
  tunnelDeadline(): number {
    const ms = this.limits.tunnelIdleTimeoutMs;
    return ms > 0 ? this.clock + ms + this.tick : 0;
  }

  /** The same for a request body being read: 0 (none) when limits.requestBodyTimeoutMs is 0. */
  bodyDeadline(): number {
    const ms = this.limits.requestBodyTimeoutMs;
    return ms > 0 ? this.clock + ms + this.tick : 0;
  }

  forget(conn: ServerConnection): void {
    this.open.delete(conn);
    if (this.open.size === 0 && this.emptied.length > 0) {
      if (this.sweeper !== null) clearInterval(this.sweeper);
      this.sweeper = null;
      for (const resolve of this.emptied.splice(0)) resolve();
    }
  }

  /** One timer per listener checks every connection's deadline; no timer per request. */
  private schedule(): void {
    const l = this.limits;
    const shortest = Math.min(
      l.idleTimeoutMs,
      l.requestHeadersTimeoutMs,
      l.requestBodyTimeoutMs > 0 ? l.requestBodyTimeoutMs : Infinity,
      l.tunnelIdleTimeoutMs > 0 ? l.tunnelIdleTimeoutMs : Infinity,
    );
    const tick = Math.max(10, Math.min(1000, Math.floor(shortest / 4)));
    if (tick === this.tick && this.sweeper !== null) return;
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.tick = tick;
    this.sweeper = setInterval(() => this.sweep(), tick);
  }

  private sweep(): void {
    this.clock = performance.now();
    const limits = this.options.limits();
    if (limits !== this.limits) {
      this.limits = limits;
      this.schedule();
    }
    const now = this.clock;
    for (const conn of this.open) if (conn.deadline !== 0 && conn.deadline <= now) conn.expire();
  }

  stop(graceful: boolean): Promise<void> {
    this.tcp.stop();
    this.draining = true;
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const conn of [...this.open]) {
      if (!graceful) conn.destroy();
      else if (conn.idle) conn.close();
    }
    if (this.open.size === 0) return Promise.resolve();
    // Connections still answering close after their response; keep their head timeouts running meanwhile.
    this.sweeper = setInterval(() => this.sweep(), this.tick);
    return new Promise<void>((resolve) => this.emptied.push(resolve));
  }
}

/**
 * Both directions of a switched connection (a WebSocket, say): what one side sends goes to the
 * other; a side that cannot take more pauses reading from the other until it drains. An end on one
 * side ends the other once what was queued for it is out; a reset resets it.
 */
class TunnelRelay implements TunnelEvents {
  /** Bytes to the upstream are queued: the client's side is paused until the upstream drains. */
  private upstreamBlocked = false;
  /** The client ended while bytes to the upstream were queued: close the upstream once they are out. */
  private closeUpstreamAfterDrain = false;
  /** The client ended: its side closing is ours, not a reset to pass on. */
  private clientEnding = false;
  private readonly resumeUpstream = (): void => this.tunnel.resume();

  constructor(
    private readonly conn: ServerConnection,
    private readonly tunnel: Tunnel,
  ) {}

  fromClient(chunk: Uint8Array): void {
    countStreamed(chunk.byteLength);
    this.conn.active();
    if (!this.tunnel.write(chunk) && !this.upstreamBlocked) {
      this.upstreamBlocked = true;
      this.conn.socket.pause();
    }
  }

  /** The client sent FIN. Half-closed tunnels are not kept: the upstream gets its FIN, and the client's side closes. */
  clientEnded(): void {
    this.clientEnding = true;
    if (this.upstreamBlocked) this.closeUpstreamAfterDrain = true;
    else this.tunnel.close();
    this.conn.close();
  }

  clientClosed(): void {
    // After the client's FIN, bytes still queued for the upstream go before its close (onDrain).
    if (!this.clientEnding) this.tunnel.destroy();
  }

  // TunnelEvents: the upstream side

  onData(chunk: Uint8Array): void {
    countStreamed(chunk.byteLength);
    this.conn.active();
    if (!this.conn.sendToClient(chunk, this.resumeUpstream)) this.tunnel.pause();
  }

  onDrain(): void {
    if (!this.upstreamBlocked) return;
    this.upstreamBlocked = false;
    if (this.closeUpstreamAfterDrain) this.tunnel.close();
    else this.conn.socket.resume();
  }

  onClose(error: Error | null): void {
    if (error !== null) this.conn.destroy();
    else this.conn.close(); // after what is queued for the client
  }
}

/** Whether this runtime can run the native listener (it needs the platform's TCP listener: Bun and Deno). */
export const nativeListenerAvailable = listenTcp !== undefined;

export function createHttp1Server(options: Http1ServerOptions): Http1Server {
  const listen = options.listen ?? listenTcp;
  if (listen === undefined) throw new Error("this runtime has no callback TCP listener; use the fetch listener");
  return new Server(options, listen);
}

