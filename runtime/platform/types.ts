// What the proxy needs from a JavaScript runtime. Everything runtime-specific hides behind this.

export interface ClientInfo {
  /** Remote IP address, e.g. "127.0.0.1" or "::1". */
  address: string;
  port: number;
}

export type RequestHandler = (req: Request, client: ClientInfo) => Response | Promise<Response>;

export interface ServeOptions {
  hostname: string;
  /** 0 picks a free port; read it back from Server.port. */
  port: number;
  handler: RequestHandler;
  /** Largest request body the server itself lets through; the proxy enforces its own limit on top. */
  maxRequestBodySize?: number;
}

export interface Server {
  readonly hostname: string;
  readonly port: number;
  /**
   * Stop accepting. With `graceful`, resolve once in-flight requests have finished; otherwise close
   * every connection now.
   */
  stop(graceful: boolean): Promise<void>;
}

export interface Platform {
  /** "bun" or "deno": for logs and /config only. Code must ask capabilities, not this. */
  readonly name: string;
  readonly version: string;
  serve(opts: ServeOptions): Server;
  /** Call `fn` on a POSIX signal (SIGHUP, SIGTERM, SIGINT). */
  onSignal(signal: "SIGHUP" | "SIGTERM" | "SIGINT", fn: () => void): void;
  /** Command-line arguments after the script name. */
  args(): string[];
  exit(code: number): never;
  /** Write to stdout without a trailing newline, buffered by the runtime. */
  writeStdout(text: string): void;
  /** Resident set size of this process in bytes. */
  rss(): number;
  /**
   * A full garbage collection now. The listener calls it after every STREAMED_BYTES_PER_COLLECTION
   * bytes of streamed bodies (JSC frees the big socket buffers bulk streaming leaves behind only
   * lazily), and idle-gc.ts once the proxy goes quiet after load.
   */
  collectGarbage(): void;
  /**
   * A response body for bytes already in memory (a whole upstream body), in the form this runtime's
   * listener sends cheapest.
   */
  bufferedBody(chunks: readonly Uint8Array[], size: number): BodyInit;
}
