// Dot-segment removal (RFC 3986 section 5.2.4) before routing, so `/public/../admin` cannot reach
// the upstream's /admin through the /public route. Like Envoy's normalize_path (on in Istio):
// the normalised path is also what goes upstream. Percent-encoded dots (`%2e`) count as dots, as
// they do for every URL parser the upstream might use; nothing else is decoded (`%2F` stays).

/** The path with "." and ".." segments resolved; the same string when there are none. */
export function removeDotSegments(path: string): string {
  // Fast path: no segment can be a dot segment without "/." or an encoded dot.
  if (path.indexOf("/.") === -1 && path.indexOf("%2") === -1) return path;
  if (path.charCodeAt(0) !== 0x2f /* "/" */) return path;
  const segments = path.split("/");
  const out: string[] = [];
  let changed = false;
  const last = segments.length - 1;
  for (let i = 1; i <= last; i++) {
    const raw = segments[i]!;
    const s = raw.length <= 6 && raw.indexOf("%") !== -1 ? raw.replace(/%2e/gi, ".") : raw;
    if (s === "." || s === "..") {
      changed = true;
      if (s === "..") out.pop();
      // A trailing dot segment leaves the directory: "/a/b/.." is "/a/".
      if (i === last) out.push("");
      continue;
    }
    out.push(raw);
  }
  return changed ? "/" + out.join("/") : path;
}

/**
 * Whether the path has a dot segment that only an upstream decoding `%2F`/`%5C`, reading `\` as
 * `/` or dropping `;` path parameters would see: `/api%2f..%2fadmin`, `/api\..\admin`,
 * `/api/..;/admin`. Routing cannot know what such an upstream resolves it to, so the proxy refuses it
 * (Envoy's path_with_escaped_slashes_action=REJECT_REQUEST, here only for the ambiguous case: an
 * encoded slash or a path parameter alone still goes upstream byte for byte).
 */
export function hasHiddenDotSegments(path: string): boolean {
  if (path.indexOf("%") === -1 && path.indexOf("\\") === -1 && path.indexOf(";") === -1) return false;
  // Also path parameters: servlet containers read "/public/..;x/admin" as "/public/../admin".
  const seen = path.replace(/%2f|%5c|\\/gi, "/").replace(/;[^/]*/g, "");
  if (seen === path) return false;
  return removeDotSegments(seen) !== seen;
}
