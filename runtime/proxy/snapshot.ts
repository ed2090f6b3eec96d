// A running configuration compiled for the hot path. A snapshot never changes after it is built; a
// reload builds a new one and swaps a single reference, so a request sees one snapshot from start to end.
import type { ClusterConfig, Config, RouteConfig } from "../config/schema.ts";
import { createBalancer, type Balancer } from "../upstream/balancers.ts";
import type { Endpoint } from "../upstream/types.ts";
import type { FilterChain } from "../wasm/types.ts";
import { compileMutation, type HeaderMutation } from "./headers.ts";
import { compileRoute, Router } from "./router.ts";

export interface ClusterRuntime {
  readonly name: string;
  readonly config: ClusterConfig;
  readonly endpoints: readonly Endpoint[];
  readonly balancer: Balancer;
}

export interface RouteRuntime {
  readonly name: string;
  readonly config: RouteConfig;
  /** Until the upstream response head; 0 = none. */
  readonly timeoutMs: number;
  /** For prefix rewrites: the matched prefix and its replacement. */
  readonly rewrite: { readonly from: string; readonly to: string } | null;
  readonly requestHeaders: HeaderMutation | null;
  readonly responseHeaders: HeaderMutation | null;
  /** Protocols a client may switch to (lower case): `upgrades` in the config. */
  readonly upgrades: ReadonlySet<string>;
  /** The route's filter chain; null when it has none (no cost on the hot path). */
  readonly chain: FilterChain | null;
  /** Choose a backend cluster by weight. `r` is a random number in [0, 1). */
  pickCluster(r: number): ClusterRuntime;
}

export interface Snapshot {
  readonly version: number;
  /** Where this config came from: a file path, "embedded", "admin", or a control plane. */
  readonly source: string;
  readonly loadedAt: string;
  readonly config: Config;
  readonly router: Router<RouteRuntime>;
  readonly clusters: ReadonlyMap<string, ClusterRuntime>;
}

export function parseEndpoint(spec: string | { address: string; weight: number }): Endpoint {
  const address = typeof spec === "string" ? spec : spec.address;
  const weight = typeof spec === "string" ? 1 : spec.weight;
  const colon = address.lastIndexOf(":");
  let host = address.slice(0, colon);
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  return { host, port: Number(address.slice(colon + 1)), key: address, weight };
}

function buildCluster(c: ClusterConfig, previous: ClusterRuntime | undefined): ClusterRuntime {
  // Keep learned balancer state (EWMA latencies, ring) when the cluster did not change.
  if (previous && JSON.stringify(previous.config) === JSON.stringify(c)) return previous;
  const endpoints = c.endpoints.map(parseEndpoint);
  return {
    name: c.name,
    config: c,
    endpoints,
    balancer: createBalancer(c.lb.policy, endpoints, { ewmaDecayMs: c.lb.ewmaDecayMs }),
  };
}

function buildRoute(r: RouteConfig, clusters: ReadonlyMap<string, ClusterRuntime>, chain: FilterChain | null): RouteRuntime {
  const backends = r.backends ?? [{ cluster: r.cluster!, weight: 1 }];
  const picks = backends.filter((b) => b.weight > 0).map((b) => ({ cluster: clusters.get(b.cluster)!, weight: b.weight }));
  const total = picks.reduce((s, b) => s + b.weight, 0);
  const first = picks[0]!.cluster;
  const pickCluster =
    picks.length === 1
      ? () => first
      : (rnd: number) => {
          let x = rnd * total;
          for (const p of picks) {
            if (x < p.weight) return p.cluster;
            x -= p.weight;
          }
          return picks[picks.length - 1]!.cluster;
        };
  const prefix = "prefix" in r.match.path ? r.match.path.prefix : null;
  return {
    name: r.name,
    config: r,
    timeoutMs: r.timeoutMs,
    rewrite: r.rewrite && prefix !== null ? { from: prefix, to: r.rewrite.prefix } : null,
    requestHeaders: compileMutation(r.requestHeaders),
    responseHeaders: compileMutation(r.responseHeaders),
    upgrades: new Set(r.upgrades),
    chain,
    pickCluster,
  };
}

export function buildSnapshot(
  config: Config,
  meta: { version: number; source: string },
  chains: (routeName: string) => FilterChain | null,
  previous?: Snapshot,
): Snapshot {
  const clusters = new Map<string, ClusterRuntime>();
  for (const c of config.clusters) clusters.set(c.name, buildCluster(c, previous?.clusters.get(c.name)));
  const routes = config.routes.map((r) => compileRoute(r, buildRoute(r, clusters, chains(r.name))));
  return {
    version: meta.version,
    source: meta.source,
    loadedAt: new Date().toISOString(),
    config,
    router: new Router(routes),
    clusters,
  };
}
