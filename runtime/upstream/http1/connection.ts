// One keep-alive HTTP/1.1 connection to one endpoint, carrying one request/response exchange at a time.
import { ProxyError, type ErrorCode } from "../../errors.ts";
import type { CancelSignal, HeaderList, Tunnel, TunnelEvents, UpstreamRequest, UpstreamResponse } from "../types.ts";
import type { BodyFraming, RequestHead } from "./request-head.ts";
import {
  ChunkedDecoder,
  CloseDecoder,
  HeadReader,
  LastHead,
  LengthDecoder,
  ParseError,
  parseResponseHead,
  type BodyDecoder,
  type BodySink,
  type ResponseHead,
} from "./response-parser.ts";
import type { Socket, SocketEvents } from "../../platform/tcp.ts";
import { TimerSignal } from "./timeouts.ts";

export function upstreamError(code: ErrorCode, message: string, retryable = false, cause?: unknown): ProxyError {
  return new ProxyError("upstream", code, message, { retryable, cause });
}

/**
 * One request as the client hands it to a connection: what to send, and how it ends. It outlives a
 * connection that turns out stale (the client then sends it again on a fresh one).
 */
export interface PendingRequest {
  readonly head: RequestHead;
  readonly req: UpstreamRequest;
  readonly signal: CancelSignal | undefined;
  /** The response head is in. */
  settle(res: UpstreamResponse): void;
  /** No response head: the request failed. */
  fail(err: unknown): void;
  /** Set by the client on a pooled connection: the request may go again on a fresh one (resend). */
  canResend: boolean;
  resend(): void;
}

/** What a connection needs from the client that owns it. */
export interface ConnectionOwner {
  /** The exchange finished and the connection may carry another: pool it (or close it). */
  release(conn: Connection): void;
  /** The connection closed; drop it from the pool if it is there. */
  forget(conn: Connection): void;
  readonly maxHeadBytes: number;
  readonly expectContinueTimeoutMs: number;
  readonly bodyStrategy: QueuingStrategy<Uint8Array>;
  /** A body with a Content-Length up to this is collected whole and delivered as a Blob... */
  readonly collectBytes: number;
  /** ...if it is all there within this many ms of the head; else the head goes and the body streams. */
  readonly collectWindowMs: number;
}

const HEAD = 0; // waiting for the final response head
const BODY = 1; // head delivered, body streaming
const DONE = 2; // response complete
const COLLECT = 3; // head parsed, a small body being collected whole before anything is delivered

/** The state of one request on a connection; also the underlying source of the response body stream. */
class Exchange implements UnderlyingDefaultSource<Uint8Array> {
  phase = HEAD;
  /** The connection no longer belongs to this exchange (released, closed, aborted). */
  ended = false;
  /** Response bytes received, interim responses included. */
  received = 0;
  /** The request body stream has been read from (so it cannot be sent again). */
  bodyTouched = false;
  requestDone: boolean;
  keepAlive = true;
  /** The final head, between parsing and delivery. */
  final: ResponseHead | null = null;
  decoder: BodyDecoder | null = null;
  /** Body bytes that came with the head, before there is a stream to put them in. */
  readonly early: Uint8Array[] = [];
  controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  paused = false;
  /** Subscribed to the request's signal (as its listener object: handleEvent). */
  listening = false;
  /** Set while the body waits for `100 Continue`: starts it. */
  continueTimer: ReturnType<typeof setTimeout> | null = null;
  /** Set in COLLECT: ends the collecting window. */
  collectTimer: TimerSignal | null = null;
  reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  /** The response handed out with a streamed body, for its onBodyEnd hook. */
  response: UpstreamResponse | null = null;
  bodyBytes = 0;

  readonly req: UpstreamRequest;
  readonly head: RequestHead;
  readonly signal: CancelSignal | undefined;

  constructor(
    readonly conn: Connection,
    readonly pending: PendingRequest,
  ) {
    this.req = pending.req;
    this.head = pending.head;
    this.signal = pending.signal;
    this.requestDone = pending.head.framing === "none";
  }

  start(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.controller = controller;
  }

  pull(): void {
    if (this.paused && !this.ended) {
      this.paused = false;
      this.conn.socket?.resume();
    }
  }

  /** The request's signal aborted. */
  handleEvent(): void {
    this.listening = false;
    this.conn.aborted(this);
  }

  cancel(): void {
    // The consumer walked away mid-body: the rest of the response is unread, so the connection cannot be reused.
    this.bodyEnded("cancelled");
    this.conn.abandon(this);
  }

  /** Tell the consumer, once, that the streamed body ended (null error: complete). */
  bodyEnded(error: unknown): void {
    const res = this.response;
    if (res === null) return;
    this.response = null;
    res.onBodyEnd?.(this.bodyBytes, error);
  }
}

/** A response with a streamed body or none: its headers are the parsed head's, made into a list only if asked for. */
class StreamedResponse implements UpstreamResponse {
  readonly status: number;
  readonly statusText: string;
  onBodyEnd: ((bytes: number, error: unknown) => void) | null = null;
  constructor(
    readonly wire: ResponseHead,
    readonly body: ReadableStream<Uint8Array> | null,
    readonly tunnel: Tunnel | null = null,
  ) {
    this.status = wire.status;
    this.statusText = wire.statusText;
  }
  get headers(): HeaderList {
    return this.wire.headers;
  }
}

/** A response whose body arrived whole: its chunks, and a Blob or a stream of them only if asked for. */
class BufferedResponse implements UpstreamResponse {
  readonly status: number;
  readonly statusText: string;
  private stream: ReadableStream<Uint8Array> | null = null;
  private whole: Blob | null = null;
  /**
   * Each chunk the socket hands us is a buffer of our own, and the parsed head has been copied into
   * strings, so the bytes in front of the body's first chunk are free.
   */
  readonly headroom = true;
  constructor(
    readonly wire: ResponseHead,
    readonly chunks: Uint8Array[],
  ) {
    this.status = wire.status;
    this.statusText = wire.statusText;
  }
  get headers(): HeaderList {
    return this.wire.headers;
  }
  get blob(): Blob {
    return (this.whole ??= new Blob(this.chunks as unknown as BlobPart[]));
  }
  get body(): ReadableStream<Uint8Array> {
    return (this.stream ??= this.blob.stream());
  }
}

function isBodyless(status: number, method: string): boolean {
  return method === "HEAD" || status === 204 || status === 304 || (status >= 100 && status < 200);
}

export class Connection implements SocketEvents, BodySink {
  socket: Socket | null = null;
  closed = false;
  idleSince = 0;
  private ex: Exchange | null = null;
  /** After a 101: the connection is a tunnel, and its socket's events go there. */
  private tunnel: UpstreamTunnel | null = null;
  private needDrain = false;
  private drained: (() => void) | null = null;
  private readonly heads: HeadReader;
  private readonly lastHead = new LastHead(parseResponseHead);

  constructor(
    readonly key: string,
    private readonly owner: ConnectionOwner,
  ) {
    this.heads = new HeadReader(owner.maxHeadBytes);
  }

  attach(socket: Socket): void {
    // Closed already: the upstream hung up (or talked out of turn) before the connect even resolved.
    if (this.closed) socket.destroy();
    else this.socket = socket;
  }

  /**
   * Sends one request; it settles once the response head is parsed. A request that may be resent
   * (`canResend`, on a pooled connection) is resent instead of failing when the upstream turns out to
   * have closed the connection before anything of this exchange happened.
   */
  send(pending: PendingRequest): void {
    if (this.closed || this.socket === null) {
      if (pending.canResend) pending.resend();
      else pending.fail(upstreamError("upstream_reset", "upstream closed the connection before the request was sent"));
      return;
    }
    const ex = new Exchange(this, pending);
    const { head, signal } = pending;
    this.ex = ex;
    this.heads.reset();
    if (signal !== undefined) {
      ex.listening = true;
      signal.addEventListener("abort", ex);
    }
    this.write(head.data);
    if (head.framing === "none") return;
    if (head.expectContinue) this.awaitContinue(ex);
    else this.startBody(ex);
  }

  // Not inline in send(): a closure there would give send() a heap scope on every call.
  private awaitContinue(ex: Exchange): void {
    ex.continueTimer = setTimeout(() => this.startBody(ex), this.owner.expectContinueTimeoutMs);
  }

  /** Close gracefully (an idle or finished connection). */
  close(): void {
    this.shut(false);
  }

  // -------------------------------------------------------------------------------------------------
  // Socket events

  onData(chunk: Uint8Array): void {
    const ex = this.ex;
    if (ex === null) {
      if (this.tunnel !== null) return this.tunnel.data(chunk);
      // Bytes nobody asked for: the upstream is out of step with us, so it cannot have the next request.
      this.shut(true);
      this.owner.forget(this);
      return;
    }
    ex.received += chunk.length;
    if (ex.phase === DONE) {
      // More than the response: the pump is still sending, and afterwards this connection goes.
      ex.keepAlive = false;
      return;
    }
    try {
      if (ex.phase === HEAD) {
        let off = this.readHeads(ex, chunk);
        if (off === -1) return;
        // Run the rest of this chunk through the decoder before handing out the body: a body that is
        // already complete (the usual small response) then needs no live stream at all.
        const decoder = ex.decoder;
        if (decoder !== null) off = decoder.push(chunk, off, this);
        if (decoder !== null && !decoder.done && this.collectable(ex)) {
          // Small enough to hold: wait for the rest and deliver one Blob. Sending a Blob costs the
          // listener a fraction of a streamed body, and a reset before the end is still a clean 502.
          ex.phase = COLLECT;
          this.startCollectWindow(ex);
          return;
        }
        this.deliver(ex);
        if (decoder === null || decoder.done) this.complete(ex, off === chunk.length);
        else this.applyBackpressure(ex);
        return;
      }
      const decoder = ex.decoder!;
      const off = decoder.push(chunk, 0, this);
      if (ex.phase === COLLECT) {
        if (!decoder.done) return;
        ex.collectTimer!.clear();
        ex.collectTimer = null;
        this.deliver(ex);
        this.complete(ex, off === chunk.length);
        return;
      }
      if (!decoder.done) {
        this.applyBackpressure(ex);
        return;
      }
      ex.controller!.close();
      ex.bodyEnded(null);
      this.complete(ex, off === chunk.length);
    } catch (err) {
      const error =
        err instanceof ParseError
          ? upstreamError("upstream_protocol_error", `upstream sent an invalid response: ${err.message}`, false, err)
          : new ProxyError("internal", "internal", `reading the upstream response failed: ${String(err)}`, { cause: err });
      this.fail(ex, error);
    }
  }

  onBodyChunk(chunk: Uint8Array): void {
    const ex = this.ex!;
    ex.bodyBytes += chunk.byteLength;
    if (ex.controller !== null) ex.controller.enqueue(chunk);
    else ex.early.push(chunk);
  }

  private applyBackpressure(ex: Exchange): void {
    if (!ex.paused && ex.controller!.desiredSize! <= 0) {
      // The consumer is behind: stop reading and let TCP flow control push back on the upstream.
      ex.paused = true;
      this.socket?.pause();
    }
  }

  onDrain(): void {
    if (this.tunnel !== null) return this.tunnel.drain();
    this.needDrain = false;
    const drained = this.drained;
    this.drained = null;
    drained?.();
  }

  onClose(error: Error | null): void {
    this.closed = true;
    this.socket = null;
    this.onDrain(); // wake a body pump so it sees the close
    const ex = this.ex;
    if (ex === null) {
      if (this.tunnel !== null) return this.tunnel.ended(error);
      this.owner.forget(this);
      return;
    }
    this.endExchange(ex);
    if (ex.phase === HEAD) {
      if (ex.pending.canResend && ex.received === 0 && !ex.bodyTouched) ex.pending.resend();
      else ex.pending.fail(upstreamError("upstream_reset", "upstream closed the connection before a complete response head", false, error ?? undefined));
    } else if (ex.phase === COLLECT) {
      ex.pending.fail(upstreamError("upstream_reset", "upstream closed the connection before the end of the response body", false, error ?? undefined));
    } else if (ex.phase === BODY) {
      if (error === null && ex.decoder!.endsAtClose) {
        ex.controller!.close();
        ex.bodyEnded(null);
      } else {
        // Never let a cut-off body end like a complete one.
        const err = upstreamError("upstream_reset", "upstream closed the connection in the middle of the response body", false, error ?? undefined);
        ex.controller!.error(err);
        ex.bodyEnded(err);
      }
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Response

  /** Parses heads from chunk; returns where the body starts once the final head is in, else -1. */
  private readHeads(ex: Exchange, chunk: Uint8Array): number {
    let off = 0;
    for (;;) {
      const text = this.heads.push(chunk, off);
      if (text === null) return -1;
      off = this.heads.end;
      const head = this.lastHead.get(text);
      if (head.status >= 200) {
        this.onHead(ex, head);
        return off;
      }
      if (head.status === 101) {
        if (!ex.req.upgrade) throw new ParseError("101 Switching Protocols to a request that did not ask to upgrade");
        this.switched(ex, head, off < chunk.length ? chunk.subarray(off) : null);
        return -1;
      }
      // Interim responses (100 Continue, 103 Early Hints, ...) are for us, not for the caller.
      if (head.status === 100 && ex.continueTimer !== null) this.startBody(ex);
    }
  }

  /**
   * A 101 to an upgrade request: the exchange ends here, and the connection becomes a tunnel that
   * never returns to the pool. `early`: bytes of the new protocol that came right behind the head.
   */
  private switched(ex: Exchange, head: ResponseHead, early: Uint8Array | null): void {
    const protocol = head.headers.find(([name]) => name === "upgrade")?.[1];
    if (protocol === undefined || protocol === "") throw new ParseError("101 Switching Protocols without an Upgrade header");
    ex.phase = DONE;
    this.endExchange(ex);
    const tunnel = new UpstreamTunnel(this, protocol, early);
    this.tunnel = tunnel;
    ex.pending.settle(new StreamedResponse(head, null, tunnel));
  }

  /** Takes in the final head: keep-alive and body framing. The caller delivers it. */
  private onHead(ex: Exchange, head: ResponseHead): void {
    if (ex.continueTimer !== null) {
      // A final answer before 100 Continue: the upstream decided without the body, so it never goes.
      // The upstream may still expect those bytes, so this connection ends with the response.
      clearTimeout(ex.continueTimer);
      ex.continueTimer = null;
      ex.keepAlive = false;
      ex.req.body?.cancel().catch(() => {});
    }
    if (head.connectionClose || ex.head.close || (head.minor === 0 && !head.connectionKeepAlive)) ex.keepAlive = false;

    ex.final = head;
    if (isBodyless(head.status, ex.req.method)) return;
    if (head.transferEncoding === "chunked") {
      ex.decoder = new ChunkedDecoder();
      // Both framings at once smells of request smuggling; trust chunked for this response only.
      if (head.contentLength !== -1) ex.keepAlive = false;
    } else if (head.transferEncoding === "none" && head.contentLength !== -1) {
      ex.decoder = new LengthDecoder(head.contentLength);
    } else {
      ex.decoder = new CloseDecoder();
      ex.keepAlive = false;
    }
  }

  private startCollectWindow(ex: Exchange): void {
    const timer = new TimerSignal(this.owner.collectWindowMs, undefined);
    ex.collectTimer = timer;
    timer.addEventListener("abort", () => {
      if (ex.collectTimer !== timer || ex.phase !== COLLECT || ex.ended) return;
      ex.collectTimer = null;
      // Still incomplete: out goes the head, with what came so far as the start of a streamed body.
      this.deliver(ex);
      this.applyBackpressure(ex);
    });
  }

  /** Whether the response being read has a declared length small enough to collect whole. */
  private collectable(ex: Exchange): boolean {
    const head = ex.final;
    return head !== null && head.transferEncoding === "none" && head.contentLength !== -1 && head.contentLength <= this.owner.collectBytes;
  }

  /** Resolves request() with the final head and a body made of what has arrived so far. */
  private deliver(ex: Exchange): void {
    const head = ex.final!;
    ex.final = null;
    const decoder = ex.decoder;
    if (decoder === null) {
      ex.phase = DONE;
      ex.pending.settle(new StreamedResponse(head, null));
    } else if (decoder.done) {
      // All of it is here: hand out a Blob, which the listener writes without a JS stream.
      ex.phase = DONE;
      // The exchange is over, so its list of parts becomes the response's (no copy).
      ex.pending.settle(new BufferedResponse(head, ex.early));
      return;
    } else {
      const body = new ReadableStream<Uint8Array>(ex, this.owner.bodyStrategy);
      for (const part of ex.early) ex.controller!.enqueue(part);
      ex.phase = BODY;
      const res = new StreamedResponse(head, body);
      ex.response = res;
      ex.pending.settle(res);
    }
    ex.early.length = 0;
  }

  /** The response is complete. `clean`: no bytes followed it. */
  private complete(ex: Exchange, clean: boolean): void {
    ex.phase = DONE;
    if (!clean) ex.keepAlive = false;
    if (ex.paused) {
      ex.paused = false;
      this.socket?.resume();
    }
    if (!ex.requestDone) {
      // The upstream answered before taking the whole body. If it keeps the connection it still reads
      // the body (RFC 9112 section 9.3), so the pump finishes and calls us again; if not, stop sending.
      if (!ex.keepAlive) {
        this.endExchange(ex);
        this.shut(true);
      }
      return;
    }
    this.endExchange(ex);
    if (ex.keepAlive && !this.closed) this.owner.release(this);
    else this.shut(false);
  }

  // -------------------------------------------------------------------------------------------------
  // Request body

  private startBody(ex: Exchange): void {
    if (ex.continueTimer !== null) {
      clearTimeout(ex.continueTimer);
      ex.continueTimer = null;
    }
    if (ex.ended) return;
    void this.pump(ex, ex.req.body!, ex.head.framing, ex.req.bodyLength);
  }

  /** Streams the request body, waiting for the socket to drain between chunks so nothing piles up. */
  private async pump(ex: Exchange, body: ReadableStream<Uint8Array>, framing: BodyFraming, length: number | null): Promise<void> {
    ex.bodyTouched = true;
    const reader = body.getReader();
    ex.reader = reader;
    let sent = 0;
    let chunks = 0;
    try {
      for (;;) {
        if (ex.ended) break;
        if (this.needDrain && !ex.requestDone) {
          await this.waitDrain();
          if (ex.ended) break;
        }
        const { done, value } = await reader.read();
        if (ex.ended) break;
        if (done) {
          if (framing === "chunked") this.write(chunks === 0 ? "0\r\n\r\n" : "\r\n0\r\n\r\n");
          else if (sent !== length) throw new BodyLengthError(`request body ended after ${sent} of ${length} bytes`);
          ex.reader = null;
          if (!ex.requestDone) this.requestSent(ex);
          return;
        }
        if (value.byteLength === 0) continue;
        sent += value.byteLength;
        if (framing === "length" && sent > length!) throw new BodyLengthError(`request body is longer than its length ${length}`);
        // In chunked framing the CRLF closing the previous chunk rides with the next size line.
        if (framing === "chunked") this.write((chunks === 0 ? "" : "\r\n") + value.byteLength.toString(16) + "\r\n");
        chunks++;
        this.write(value);
        // All declared bytes are out; the stream's own end may come after the response does.
        if (sent === length) this.requestSent(ex);
      }
    } catch (err) {
      const error =
        err instanceof BodyLengthError
          ? new ProxyError("internal", "internal", err.message)
          : err instanceof ProxyError && err.source === "downstream"
            ? err // the listener said what was wrong with the body (malformed, too slow, client gone)
            : new ProxyError("downstream", "bad_request", "the request body could not be read", { cause: err });
      this.fail(ex, error);
      return;
    }
    // The exchange ended while we were sending (error, abort, early response, or the response finished
    // after the last declared byte went out).
    ex.reader = null;
    if (ex.requestDone) reader.releaseLock();
    else reader.cancel().catch(() => {});
  }

  private requestSent(ex: Exchange): void {
    ex.requestDone = true;
    if (ex.phase === DONE && !ex.ended) this.complete(ex, true);
  }

  private write(data: string | Uint8Array): void {
    if (this.socket !== null && !this.socket.write(data)) this.needDrain = true;
  }

  private waitDrain(): Promise<void> {
    if (!this.needDrain || this.closed) return Promise.resolve();
    return new Promise<void>((resolve) => (this.drained = resolve));
  }

  // -------------------------------------------------------------------------------------------------
  // Ending

  /** The request's signal aborted (its timeout, or the client went away). */
  aborted(ex: Exchange): void {
    this.fail(ex, upstreamError("upstream_timeout", "the request was aborted before the upstream finished responding"));
  }

  /** The consumer cancelled the body stream. */
  abandon(ex: Exchange): void {
    if (ex.ended) return;
    this.endExchange(ex);
    this.shut(true);
    ex.reader?.cancel().catch(() => {});
  }

  /** Ends the exchange with an error: rejects the head promise or errors the body stream, and drops the connection. */
  private fail(ex: Exchange, error: unknown): void {
    if (ex.ended) return;
    this.endExchange(ex);
    this.shut(true);
    if (ex.phase === HEAD || ex.phase === COLLECT) ex.pending.fail(error);
    else if (ex.phase === BODY) {
      ex.controller!.error(error);
      ex.bodyEnded(error);
    }
  }

  private endExchange(ex: Exchange): void {
    ex.ended = true;
    if (this.ex === ex) this.ex = null;
    if (ex.listening) {
      ex.listening = false;
      ex.signal!.removeEventListener("abort", ex);
    }
    if (ex.continueTimer !== null) {
      clearTimeout(ex.continueTimer);
      ex.continueTimer = null;
    }
    if (ex.collectTimer !== null) {
      ex.collectTimer.clear();
      ex.collectTimer = null;
    }
  }

  /** Close now, whatever is going on (a tunnel's end). */
  destroy(): void {
    this.shut(true);
  }

  private shut(abort: boolean): void {
    if (this.closed) return;
    this.closed = true;
    const socket = this.socket;
    this.socket = null;
    this.onDrain();
    if (socket !== null) {
      if (abort) socket.destroy();
      else socket.close();
    }
  }
}

class BodyLengthError extends Error {}

/**
 * The upstream side of a switched connection: the connection's socket events, passed on to whoever
 * started it (bytes that came before are held for it), and writes straight to the socket.
 */
class UpstreamTunnel implements Tunnel {
  private events: TunnelEvents | null = null;
  private held: Uint8Array[] | null;
  /** The socket closed before start(): what start() then reports. */
  private closedWith: Error | null | undefined = undefined;
  /** Closed or destroyed by our side: nothing more is reported. */
  private done = false;
  onEnd: ((up: number, down: number, error: Error | null) => void) | null = null;
  private up = 0;
  private down = 0;
  private reported = false;

  constructor(
    private readonly conn: Connection,
    readonly protocol: string,
    early: Uint8Array | null,
  ) {
    this.held = early === null ? null : [early];
  }

  start(events: TunnelEvents): void {
    if (this.events !== null) throw new Error("tunnel already started");
    this.events = events;
    const held = this.held;
    this.held = null;
    if (held !== null) for (const chunk of held) if (!this.done) events.onData(chunk);
    if (this.closedWith !== undefined && !this.done) events.onClose(this.closedWith);
  }

  data(chunk: Uint8Array): void {
    if (this.done) return;
    this.down += chunk.byteLength;
    if (this.events !== null) this.events.onData(chunk);
    else (this.held ??= []).push(chunk);
  }

  drain(): void {
    if (!this.done) this.events?.onDrain();
  }

  ended(error: Error | null): void {
    if (this.done) return;
    if (this.events !== null) {
      this.done = true;
      this.report(error);
      this.events.onClose(error);
    } else this.closedWith = error;
  }

  write(data: Uint8Array): boolean {
    const socket = this.conn.socket;
    if (socket === null) return false;
    this.up += data.byteLength;
    return socket.write(data);
  }

  private report(error: Error | null): void {
    if (this.reported) return;
    this.reported = true;
    this.onEnd?.(this.up, this.down, error);
  }

  pause(): void {
    this.conn.socket?.pause();
  }

  resume(): void {
    this.conn.socket?.resume();
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.conn.close();
    this.report(null);
  }

  destroy(): void {
    if (this.done) return;
    this.done = true;
    this.conn.destroy();
    this.report(null);
  }
}
