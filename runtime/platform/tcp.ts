// TCP sockets over Bun or Deno, as callbacks: the only file that knows which runtime a socket runs on.
import { beginTurn, endTurn } from "./clock.ts";

/** What a socket reports. The connection that owns the socket implements this. */
export interface SocketEvents {
  /** Bytes from the peer. The chunk belongs to the receiver: the adapter never writes into it again. */
  onData(chunk: Uint8Array): void;
  /** Everything write() had to queue has gone to the kernel; writing may go on. */
  onDrain(): void;
  /**
   * The connection is gone: `null` when the peer closed it cleanly, an Error for a reset or an I/O
   * failure. Called at most once, and never after destroy().
   */
  onClose(error: Error | null): void;
  /**
   * The peer half-closed (sent FIN): no more bytes will come, but writing still works. Only for
   * accepted sockets whose receiver defines it; otherwise a FIN closes the socket (onClose(null)).
   */
  onEnd?(): void;
}

export interface Socket {
  /**
   * Sends bytes; strings must be ASCII. Never drops data: what the kernel does not take now is queued.
   * Returns false when something is queued; wait for onDrain before writing more.
   */
  write(data: string | Uint8Array): boolean;
  /** Like write() of data[0..length), but `data` is the caller's to reuse once this returns: what must wait is copied. */
  writeCopy(data: Uint8Array, length: number): boolean;
  /** Stop reading from the peer (TCP flow control pushes back), until resume(). */
  pause(): void;
  resume(): void;
  /** Close gracefully (FIN) once queued bytes are out. No event follows. */
  close(): void;
  /** Close now, dropping anything queued (RST where the runtime allows). No event follows. */
  destroy(): void;
}

/** Why a connect failed: nobody answered (refused, unreachable, no such host) or it took too long. */
export class ConnectError extends Error {
  readonly kind: "refused" | "timeout";
  /** A short system reason such as "ECONNREFUSED" or "ENOTFOUND". */
  readonly reason: string;
  constructor(kind: "refused" | "timeout", reason: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "ConnectError";
    this.kind = kind;
    this.reason = reason;
  }
}

/** Opens a TCP connection; rejects with a ConnectError. The returned socket already reports to `events`. */
export type ConnectFn = (host: string, port: number, events: SocketEvents) => Promise<Socket>;

function toConnectError(err: unknown, host: string, port: number): ConnectError {
  if (err instanceof ConnectError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const name = (err as { name?: unknown } | null)?.name;
  const reason = typeof code === "string" ? code : typeof name === "string" ? name : "unknown";
  const kind = code === "ETIMEDOUT" || name === "TimedOut" ? "timeout" : "refused";
  const detail = err instanceof Error ? err.message : String(err);
  return new ConnectError(kind, reason, `connect to ${host}:${port} failed: ${detail}`, err);
}

// ---------------------------------------------------------------------------------------------------
// Bun: the callback socket API maps one to one; we only add a queue for what write() could not send.

interface BunRawSocket {
  data: BunSocket;
  readonly remoteAddress: string;
  readonly remotePort?: number;
  write(data: string | Uint8Array, byteOffset?: number, byteLength?: number): number;
  pause(): void;
  resume(): void;
  terminate(): void;
  end(): void;
  setNoDelay(on?: boolean): boolean;
}

interface BunLike {
  connect(options: {
    hostname: string;
    port: number;
    data: BunSocket;
    socket: typeof BUN_HANDLERS;
  }): Promise<BunRawSocket>;
  listen(options: { hostname: string; port: number; socket: typeof BUN_HANDLERS; allowHalfOpen: boolean }): { port: number; stop(closeActive?: boolean): void };
}

class BunSocket implements Socket {
  raw: BunRawSocket | null = null;
  private queue: (string | Uint8Array)[] | null = null;
  private closed = false;

  constructor(public events: SocketEvents) {}

  write(data: string | Uint8Array): boolean {
    if (this.closed || this.raw === null) return false;
    if (this.queue !== null) {
      this.queue.push(data);
      return false;
    }
    // Strings are ASCII by contract, so their length is their byte length.
    const n = this.raw.write(data);
    if (n === data.length) return true;
    // -1: the socket is closing; the close handler reports it. Keep the data so nothing is half-sent silently.
    this.queue = [n <= 0 ? data : rest(data, n)];
    return false;
  }

  writeCopy(data: Uint8Array, length: number): boolean {
    if (this.closed || this.raw === null) return false;
    if (this.queue !== null) {
      this.queue.push(data.slice(0, length));
      return false;
    }
    // Offset and length instead of a subarray: one object less per response.
    const n = this.raw.write(data, 0, length);
    if (n === length) return true;
    this.queue = [data.slice(n <= 0 ? 0 : n, length)];
    return false;
  }

  /** Called from Bun's drain handler. */
  flush(): void {
    const queue = this.queue;
    if (queue === null || this.raw === null) return;
    while (queue.length > 0) {
      const data = queue[0];
      const n = this.raw.write(data);
      if (n !== data.length) {
        if (n > 0) queue[0] = rest(data, n);
        return;
      }
      queue.shift();
    }
    this.queue = null;
    this.events.onDrain();
  }

  pause(): void {
    this.raw?.pause();
  }

  resume(): void {
    this.raw?.resume();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Bun has no "end after the queue drains"; a connection closed gracefully has nothing queued anyway.
    this.queue = null;
    this.raw?.end();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = null;
    this.raw?.terminate();
  }

  /** Called from Bun's close and error handlers. */
  ended(error: Error | null): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = null;
    this.events.onClose(error);
  }
}

function rest(data: string | Uint8Array, from: number): string | Uint8Array {
  return typeof data === "string" ? data.slice(from) : data.subarray(from);
}

// One handler table for every socket; the per-socket state travels in `socket.data`.
const BUN_HANDLERS = {
  binaryType: "uint8array" as const,
  open(s: BunRawSocket) {
    s.data.raw = s;
  },
  data(s: BunRawSocket, chunk: Uint8Array) {
    beginTurn();
    try {
      s.data.events.onData(chunk);
    } finally {
      endTurn();
    }
  },
  drain(s: BunRawSocket) {
    s.data.flush();
  },
  close(s: BunRawSocket, error?: Error) {
    s.data.ended(error ?? null);
  },
  error(s: BunRawSocket, error: Error) {
    // A handler threw (a bug above us) or the socket failed: either way this connection is done.
    s.data.destroy();
    s.data.events.onClose(error);
  },
  connectError() {
    // The promise returned by connect() rejects too; defining this keeps Bun from also reporting it.
  },
};

function connectBun(bun: BunLike): ConnectFn {
  return async (host, port, events) => {
    const socket = new BunSocket(events);
    try {
      const raw = await bun.connect({ hostname: host, port, data: socket, socket: BUN_HANDLERS });
      socket.raw = raw;
      raw.setNoDelay(true);
      return socket;
    } catch (err) {
      throw toConnectError(err, host, port);
    }
  };
}

// ---------------------------------------------------------------------------------------------------
// Deno: promise-based reads and writes, turned into the same callbacks with a read loop and a write queue.

interface DenoConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
  setNoDelay(on?: boolean): void;
}

interface DenoLike {
  connect(options: { hostname: string; port: number; transport: "tcp" }): Promise<DenoConn>;
  listen(options: { hostname: string; port: number; transport: "tcp" }): {
    readonly addr: { port: number };
    accept(): Promise<DenoConn & { readonly remoteAddr: { hostname: string; port: number } }>;
    close(): void;
  };
}

/** Queued bytes above which write() asks the caller to wait for onDrain. */
const DENO_WRITE_HIGH_WATER = 64 * 1024;
const DENO_READ_SIZE = 64 * 1024;
const asciiEncoder = new TextEncoder();

class DenoSocket implements Socket {
  private queue: Uint8Array[] = [];
  private queued = 0;
  private writing = false;
  private wantDrain = false;
  private paused = false;
  private wake: (() => void) | null = null;
  private closed = false;
  /** close() was called: the queue still goes out, then the connection closes; no more events. */
  private closing = false;

  constructor(
    private readonly conn: DenoConn,
    public events: SocketEvents,
  ) {
    void this.readLoop();
  }

  write(data: string | Uint8Array): boolean {
    if (this.closed || this.closing) return false;
    const bytes = typeof data === "string" ? asciiEncoder.encode(data) : data;
    this.queue.push(bytes);
    this.queued += bytes.length;
    if (!this.writing) void this.writeLoop();
    if (this.queued < DENO_WRITE_HIGH_WATER) return true;
    this.wantDrain = true;
    return false;
  }

  writeCopy(data: Uint8Array, length: number): boolean {
    return this.write(data.slice(0, length));
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  close(): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.paused = true; // nothing more is read: no event follows close()
    // Deno's close() drops what is not written yet, so the write loop closes once the queue is out.
    if (!this.writing) this.destroy();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    try {
      this.conn.close();
    } catch {
      // Already closed by the runtime.
    }
    this.resume();
  }

  private end(error: Error | null): void {
    if (this.closed) return;
    const closing = this.closing;
    this.destroy();
    if (!closing) this.events.onClose(error);
  }

  private async readLoop(): Promise<void> {
    // One reusable read buffer; each chunk handed out is an exact-size copy the receiver may keep.
    const buf = new Uint8Array(DENO_READ_SIZE);
    try {
      for (;;) {
        if (this.paused) await new Promise<void>((resolve) => (this.wake = resolve));
        if (this.closed) return;
        const n = await this.conn.read(buf);
        if (this.closed || this.closing) return;
        if (n === null) {
          if (this.events.onEnd === undefined) return this.end(null);
          this.events.onEnd();
          return; // the peer's FIN; writes go on until close()
        }
        beginTurn();
        try {
          this.events.onData(buf.slice(0, n));
        } finally {
          endTurn();
        }
      }
    } catch (err) {
      this.end(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private async writeLoop(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        let chunk = this.queue[0];
        while (chunk.length > 0) {
          const n = await this.conn.write(chunk);
          if (this.closed) return;
          chunk = chunk.subarray(n);
        }
        this.queued -= this.queue.shift()!.length;
      }
    } catch (err) {
      this.end(err instanceof Error ? err : new Error(String(err)));
      return;
    } finally {
      this.writing = false;
    }
    if (this.closing) return this.destroy();
    if (this.wantDrain && !this.closed) {
      this.wantDrain = false;
      this.events.onDrain();
    }
  }
}

function connectDeno(deno: DenoLike): ConnectFn {
  return async (host, port, events) => {
    let conn: DenoConn;
    try {
      conn = await deno.connect({ hostname: host, port, transport: "tcp" });
    } catch (err) {
      throw toConnectError(err, host, port);
    }
    conn.setNoDelay(true);
    return new DenoSocket(conn, events);
  };
}

// ---------------------------------------------------------------------------------------------------
// Listening: Bun.listen with the same socket wrapper; on Deno, Deno.listen with an accept loop and the
// same read/write loops as connect. Measured on Deno 2.9 (100 B, 64 connections, proxy CPU per
// request): Deno.serve + Request/Response 59-105 us, this 34-44 us.

export interface TcpServer {
  readonly port: number;
  /** Stop accepting; open connections are the caller's to close. */
  stop(): void;
}

/** Called for each accepted connection with its socket; returns who receives the socket's events. */
export type AcceptFn = (socket: Socket, remote: { address: string; port: number }) => SocketEvents;

export type ListenFn = (host: string, port: number, accept: AcceptFn) => TcpServer;

const NO_EVENTS: SocketEvents = { onData() {}, onDrain() {}, onClose() {} };

function listenBun(bun: BunLike): ListenFn {
  return (host, port, accept) => {
    const handlers = {
      ...BUN_HANDLERS,
      end(s: BunRawSocket) {
        const events = s.data.events;
        if (events.onEnd !== undefined) events.onEnd();
        else s.data.close();
      },
      open(s: BunRawSocket) {
        const socket = new BunSocket(NO_EVENTS);
        socket.raw = s;
        s.data = socket;
        s.setNoDelay(true);
        socket.events = accept(socket, { address: s.remoteAddress, port: s.remotePort ?? 0 });
      },
    };
    // Half-open: a client may send its request and FIN (`nc -N`, some HTTP/1.0 clients) and still read the answer.
    const listener = bun.listen({ hostname: host, port, socket: handlers, allowHalfOpen: true });
    return { port: listener.port, stop: () => listener.stop(false) };
  };
}

function listenDeno(deno: DenoLike): ListenFn {
  return (host, port, accept) => {
    const listener = deno.listen({ hostname: host, port, transport: "tcp" });
    let stopped = false;
    void (async () => {
      while (!stopped) {
        let conn;
        try {
          conn = await listener.accept();
        } catch {
          // Closed by stop(), or a transient accept failure (EMFILE): keep accepting unless stopped.
          if (stopped) return;
          await new Promise((r) => setTimeout(r, 10));
          continue;
        }
        conn.setNoDelay(true);
        const socket = new DenoSocket(conn, NO_EVENTS);
        socket.events = accept(socket, { address: conn.remoteAddr.hostname, port: conn.remoteAddr.port });
      }
    })();
    return {
      port: listener.addr.port,
      stop() {
        stopped = true;
        try {
          listener.close();
        } catch {
          // already closed
        }
      },
    };
  };
}

const runtime = globalThis as unknown as { Bun?: BunLike; Deno?: DenoLike };

/** Connects with whatever runtime we are on. */
export const connectSocket: ConnectFn =
  runtime.Bun !== undefined
    ? connectBun(runtime.Bun)
    : runtime.Deno !== undefined
      ? connectDeno(runtime.Deno)
      : () => Promise.reject(new Error("no TCP socket API: meshwasm runs on Bun or Deno"));

/** Listens with our own socket callbacks (Bun.listen, Deno.listen); undefined on other runtimes. */
export const listenTcp: ListenFn | undefined =
  runtime.Bun !== undefined ? listenBun(runtime.Bun) : runtime.Deno !== undefined ? listenDeno(runtime.Deno) : undefined;
