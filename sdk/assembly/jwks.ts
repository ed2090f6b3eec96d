// Remote JWKS: key sets the host fetches and refreshes for the filter, read here by version.
// The host side is runtime/wasm/jwks.ts; the functions below are additions to ABI version 1.
import { reserve, ptr, bytes, lastHostError } from "./scratch";

// @ts-ignore: decorator
@external("mesh", "jwks_register")
declare function mesh_jwks_register(url: usize, urlLen: i32, refreshMs: i32, minRefreshMs: i32, timeoutMs: i32): i32;
// @ts-ignore: decorator
@external("mesh", "jwks_version")
declare function mesh_jwks_version(handle: i32): i32;
/** Writes the document (UTF-8 JSON) when it fits in capBytes; returns its length, -1 when none yet. */
// @ts-ignore: decorator
@external("mesh", "jwks_read")
declare function mesh_jwks_read(handle: i32, buf: usize, capBytes: i32): i32;
// @ts-ignore: decorator
@external("mesh", "jwks_refresh")
declare function mesh_jwks_refresh(handle: i32): i32;
// @ts-ignore: decorator
@external("mesh", "jwks_close")
declare function mesh_jwks_close(handle: i32): void;

let registerError: string = "";

/**
 * A JWKS URL the host fetches for this filter instance: at once, then every `refreshMs`, and when
 * the filter calls requestRefresh() (at most once per `minRefreshMs`). Nothing here waits for the
 * network: `version` and `document()` give what the host has now.
 *
 * Register in onConfigure; registering the same URL and settings again returns the same source.
 *
 * @example
 * const src = RemoteJwks.register("https://idp.example/.well-known/jwks.json", 300000, 10000, 5000);
 * // per request:
 * if (src!.version != seen) { seen = src!.version; reparse(src!.document()!); }
 * // a token names a kid we do not have:
 * src!.requestRefresh();
 */
export class RemoteJwks {
  private constructor(private handle: i32, readonly url: string) {}

  /** Null when the host refuses (not an http(s) URL, intervals out of 100 ms..1 day); lastError() says why. */
  static register(url: string, refreshMs: i32, minRefreshMs: i32, timeoutMs: i32): RemoteJwks | null {
    const h = mesh_jwks_register(changetype<usize>(url), url.length, refreshMs, minRefreshMs, timeoutMs);
    if (h < 0) {
      registerError = lastHostError();
      return null;
    }
    return new RemoteJwks(h, url);
  }

  static lastError(): string {
    return registerError;
  }

  /** The host's handle: equal for two registrations of the same URL and settings by this instance. */
  get id(): i32 {
    return this.handle;
  }

  /** 0 until the host has a good document; then increases each time the document changes. */
  get version(): i32 {
    return mesh_jwks_version(this.handle);
  }

  /** The latest good document as JSON text (`{"keys":[...]}`), or null before the first. */
  document(): string | null {
    let n = mesh_jwks_read(this.handle, ptr(), bytes());
    if (n < 0) return null;
    if (n > bytes()) {
      reserve(n);
      n = mesh_jwks_read(this.handle, ptr(), bytes());
      if (n < 0) return null;
    }
    return String.UTF8.decodeUnsafe(ptr(), <usize>n);
  }

  /** Ask the host to fetch again now (a token named an unknown kid). False when the cooldown refused. Never waits. */
  requestRefresh(): bool {
    return mesh_jwks_refresh(this.handle) == 1;
  }

  /** Stop the host's refreshes for this instance (the URL left the config). The object is unusable after. */
  close(): void {
    mesh_jwks_close(this.handle);
  }
}
