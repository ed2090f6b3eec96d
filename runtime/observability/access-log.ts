// Access log: one JSON line per request, written in batches so logging costs no syscall per request.
import { appendFileSync } from "node:fs";

export interface AccessLogEntry {
  time: string;
  requestId: string;
  method: string;
  path: string;
  status: number;
  durationMs: number;
  route: string | null;
  cluster: string | null;
  upstream: string | null;
  bytesIn: number;
  bytesOut: number;
  client: string;
  /** x-mesh-error code when the proxy made the response or the stream failed. */
  error: string | null;
  /** With `error`: the full message (which endpoint, what went wrong), which the client's error body leaves out. */
  detail?: string;
}

export interface AccessLog {
  /** False for the disabled log: callers skip building entries nobody reads. */
  readonly enabled: boolean;
  write(e: AccessLogEntry): void;
  flush(): void;
}

export const disabledAccessLog: AccessLog = { enabled: false, write() {}, flush() {} };

/** `path` is "stdout", "stderr" or a file appended to. `stdout` writes via the given function. */
export function createAccessLog(path: string, writeStdout: (s: string) => void): AccessLog {
  let buf = "";
  let scheduled = false;
  const sink =
    path === "stdout"
      ? writeStdout
      : path === "stderr"
        ? (s: string) => {
            // stderr: unbuffered by design; fine for debugging, not for load.
            console.error(s.replace(/\n$/, ""));
          }
        : (s: string) => appendFileSync(path, s);
  const flush = () => {
    scheduled = false;
    if (buf === "") return;
    const out = buf;
    buf = "";
    try {
      sink(out);
    } catch {
      // A full disk or closed stdout must not take the proxy down; the lines are lost.
    }
  };
  return {
    enabled: true,
    write(e) {
      buf += JSON.stringify(e) + "\n";
      if (buf.length > 65536) flush();
      else if (!scheduled) {
        scheduled = true;
        setTimeout(flush, 50);
      }
    },
    flush,
  };
}
