// Route matching: host, then path, method and headers, first match in config order wins.
import type { HeaderMatchConfig, PathMatchConfig, RouteConfig } from "../config/schema.ts";

/** What the router needs from a request. `path` excludes the query and is matched raw (not decoded). */
export interface MatchInput {
  host: string;
  path: string;
  method: string;
  header(name: string): string | null;
}

type HostMatcher = (host: string) => boolean;
type PathMatcher = (path: string) => boolean;
type HeaderMatcher = (input: MatchInput) => boolean;

export interface CompiledRoute<T> {
  readonly name: string;
  /** The matched prefix for prefix routes (used by prefix rewrites); null otherwise. */
  readonly prefix: string | null;
  readonly value: T;
  readonly matchHost: HostMatcher;
  readonly matchPath: PathMatcher;
  readonly methods: ReadonlySet<string> | null;
  readonly headers: readonly HeaderMatcher[];
}

// Nearly every request on a connection, and most on a listener, carry the same Host: remember the last one.
let lastHost = "";
let lastNormal = "";

/** "Api.Example.com.:8080" -> "api.example.com"; IPv6 literals keep their brackets. */
export function normalizeHost(host: string): string {
  if (host === lastHost) return lastNormal;
  const normal = normalize(host);
  lastHost = host;
  lastNormal = normal;
  return normal;
}

function normalize(host: string): string {
  let h = host;
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    h = end === -1 ? h : h.slice(0, end + 1);
  } else {
    const colon = h.indexOf(":");
    if (colon !== -1) h = h.slice(0, colon);
    // "example.com." is the same name written fully qualified (RFC 1034 section 3.1).
    if (h.endsWith(".")) h = h.slice(0, -1);
  }
  return h.toLowerCase();
}

function compileHost(spec: string | string[] | undefined): HostMatcher {
  if (spec === undefined) return () => true;
  const list = (Array.isArray(spec) ? spec : [spec]).map((s) => s.toLowerCase());
  if (list.includes("*")) return () => true;
  const exact = new Set(list.filter((s) => !s.startsWith("*.")));
  const suffixes = list.filter((s) => s.startsWith("*.")).map((s) => s.slice(1)); // ".example.com"
  if (suffixes.length === 0) return (h) => exact.has(h);
  return (h) => exact.has(h) || suffixes.some((s) => h.endsWith(s) && h.length > s.length);
}

function compilePath(spec: PathMatchConfig): { match: PathMatcher; prefix: string | null } {
  if ("exact" in spec) {
    const p = spec.exact;
    return { match: (path) => path === p, prefix: null };
  }
  if ("prefix" in spec) {
    const p = spec.prefix;
    if (p === "/") return { match: () => true, prefix: p };
    return { match: (path) => path.startsWith(p), prefix: p };
  }
  // Anchored on both ends like Envoy's safe_regex: the whole path must match.
  const re = new RegExp(`^(?:${spec.regex})$`);
  return { match: (path) => re.test(path), prefix: null };
}

function compileHeader(h: HeaderMatchConfig): HeaderMatcher {
  const name = h.name;
  let test: (value: string | null) => boolean;
  if (h.present !== undefined) {
    const want = h.present;
    test = (v) => (v !== null) === want;
  } else if (h.exact !== undefined) {
    const want = h.exact;
    test = (v) => v === want;
  } else if (h.prefix !== undefined) {
    const want = h.prefix;
    test = (v) => v !== null && v.startsWith(want);
  } else {
    const re = new RegExp(`^(?:${h.regex})$`);
    test = (v) => v !== null && re.test(v);
  }
  // Called as input.header(name): the input may be an object whose header() is a method.
  return h.invert ? (input) => !test(input.header(name)) : (input) => test(input.header(name));
}

export function compileRoute<T>(route: RouteConfig, value: T): CompiledRoute<T> {
  const path = compilePath(route.match.path);
  return {
    name: route.name,
    prefix: path.prefix,
    value,
    matchHost: compileHost(route.match.host),
    matchPath: path.match,
    methods: route.match.methods ? new Set(route.match.methods) : null,
    headers: route.match.headers.map(compileHeader),
  };
}

/** Routes in config order; the first whose every condition holds wins. */
export class Router<T> {
  constructor(readonly routes: readonly CompiledRoute<T>[]) {}

  match(input: MatchInput): CompiledRoute<T> | null {
    const routes = this.routes;
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]!;
      if (!r.matchPath(input.path)) continue;
      if (r.methods !== null && !r.methods.has(input.method)) continue;
      if (!r.matchHost(input.host)) continue;
      let ok = true;
      for (let j = 0; j < r.headers.length; j++) {
        if (!r.headers[j]!(input)) {
          ok = false;
          break;
        }
      }
      if (ok) return r;
    }
    return null;
  }
}
