// The proxy's own metrics, registered once and shared by every snapshot.
import { Registry, type Counter, type Gauge, type Histogram } from "../observability/metrics.ts";

export class ProxyStats {
  readonly requests: Counter;
  readonly duration: Histogram;
  /** Set from Proxy.active() when /metrics is scraped, so the hot path does not maintain it. */
  readonly inFlight: ReturnType<Gauge["labels"]>;
  readonly connectFailures: Counter;
  readonly errors: Counter;
  readonly reloads: Counter;
  readonly configVersion: ReturnType<Gauge["labels"]>;
  // route -> cluster -> status -> counter child: no string building per request.
  private readonly requestChildren = new Map<string, Map<string, Map<number, { inc(n?: number): void }>>>();
  private readonly durationChildren = new Map<string, { observe(v: number): void }>();

  constructor(readonly registry: Registry) {
    this.requests = registry.counter("mesh_requests_total", "Requests handled, by route, cluster and response status code.", ["route", "cluster", "code"]);
    this.duration = registry.histogram("mesh_request_duration_seconds", "Time from request arrival to the end of the response, in seconds.", ["route"]);
    this.inFlight = registry.gauge("mesh_requests_in_flight", "Requests being handled right now.").labels();
    this.connectFailures = registry.counter("mesh_upstream_connect_failures_total", "Upstream connections refused, unreachable or timed out, by cluster and endpoint.", ["cluster", "endpoint"]);
    this.errors = registry.counter("mesh_proxy_errors_total", "Errors the proxy answered itself or streams it aborted, by x-mesh-error code.", ["code"]);
    this.reloads = registry.counter("mesh_config_reloads_total", "Config reload attempts, by result.", ["result"]);
    this.configVersion = registry.gauge("mesh_config_version", "Version number of the running config.").labels();
  }

  countRequest(route: string, cluster: string, status: number): void {
    let byCluster = this.requestChildren.get(route);
    if (!byCluster) this.requestChildren.set(route, (byCluster = new Map()));
    let byStatus = byCluster.get(cluster);
    if (!byStatus) byCluster.set(cluster, (byStatus = new Map()));
    let child = byStatus.get(status);
    if (!child) byStatus.set(status, (child = this.requests.labels(route, cluster, String(status))));
    child.inc();
  }

  observeDuration(route: string, seconds: number): void {
    let child = this.durationChildren.get(route);
    if (!child) this.durationChildren.set(route, (child = this.duration.labels(route)));
    child.observe(seconds);
  }
}
