// Load-balancing policies: pure and allocation-free per pick; time and randomness come from the caller.
import type { HashOnConfig, LbPolicyName } from "../config/schema.ts";
import { hash53 } from "./hash.ts";
import type { Endpoint } from "./types.ts";

/**
 * Chooses endpoints for one cluster. One balancer serves one endpoint set; when the set changes, make
 * a new balancer and finish in-flight requests against the old one (onEnd on the balancer that saw
 * onStart).
 */
export interface Balancer {
  /**
   * Chooses an endpoint, or returns null when the cluster has none. `hashKey` is used by ring_hash only;
   * null there means "no key" and falls back to a weighted random choice. `now` is a monotonic clock in
   * ms (performance.now()), read by peak_ewma only.
   */
  pick(hashKey: string | null, now: number): Endpoint | null;
  /** A request to `ep` (an object this balancer returned) started. least_request and peak_ewma count it. */
  onStart(ep: Endpoint): void;
  /**
   * The request ended after `latencyMs`, at `now`. `ok` is false for connect failures and 5xx-level
   * errors; peak_ewma records those as a high latency so that a fast-failing endpoint is avoided.
   * null: no verdict on the endpoint (the client left and the request was cancelled), so only the
   * in-flight count changes. Unknown endpoints are ignored, and in-flight counts never go below zero.
   */
  onEnd(ep: Endpoint, latencyMs: number, now: number, ok: boolean | null): void;
}

/** Tuning for createBalancer; every field is optional. */
export interface BalancerOptions {
  /** Peak-EWMA time constant, ms: a latency sample's weight falls to 1/e after this long. Default 10 000. */
  ewmaDecayMs?: number;
  /** Uniform source in [0, 1). Default Math.random; tests pass a seeded one. */
  random?: () => number;
}

/** Virtual nodes per unit of endpoint weight on the hash ring. */
const VNODES_PER_WEIGHT = 100;
/** Ring size cap; beyond it all endpoints' virtual nodes scale down together, keeping the weight ratios. */
const MAX_RING_SIZE = 1 << 17;
/** Latency recorded for a failed request if it failed faster than this: about one default connect timeout. */
const FAILURE_PENALTY_MS = 1_000;
/** Latency assumed while nothing has been measured in the cluster; any positive value does, all are equal. */
const DEFAULT_RTT_MS = 1;
/** Estimates decay towards 0; the floor keeps in-flight counts deciding between long-idle endpoints. */
const MIN_RTT_MS = 1e-3;

const noop = (): void => {};

/**
 * Makes the balancer for a cluster's `lb.policy`. Endpoint weights must be positive finite numbers.
 * Throws a TypeError naming the bad option.
 *
 * - round_robin: smooth weighted round robin (nginx): over any `sum(weights)` consecutive picks each
 *   endpoint is chosen exactly `weight` times, interleaved rather than in bursts. The starting point is
 *   random so that many proxies do not move in lockstep.
 * - least_request: power of two choices. Two distinct candidates are drawn with probability
 *   proportional to weight; the one with fewer in-flight requests per unit of weight wins, ties to the
 *   first. When idle this sends traffic in proportion to weight.
 * - peak_ewma: as least_request, but the cost is `latency estimate * (in-flight + 1) / weight`. The
 *   estimate jumps straight up to a higher sample and otherwise decays towards newer samples and, while
 *   no samples arrive, towards 0 (time constant `ewmaDecayMs`), so an avoided endpoint is tried again
 *   later. An endpoint with no samples yet costs as much as the cluster's average successful latency.
 * - ring_hash: consistent hashing over 100 virtual nodes per unit of weight. Adding or removing one
 *   endpoint moves only the keys that land on (or leave) it.
 *
 * @example
 * const lb = createBalancer(cluster.lb.policy, endpoints, { ewmaDecayMs: cluster.lb.ewmaDecayMs });
 * const ep = lb.pick(hashKeyOf(cluster.lb.hashOn, getHeader, ctx.clientAddress), performance.now());
 * if (ep === null) throw new ProxyError("internal", "no_endpoint", `cluster ${cluster.name} has no endpoints`);
 * lb.onStart(ep);
 * // ... forward; then, with `ok` false on connect failure or a 5xx-level error:
 * lb.onEnd(ep, performance.now() - started, performance.now(), ok);
 */
export function createBalancer(
  policy: LbPolicyName,
  endpoints: readonly Endpoint[],
  opts: BalancerOptions = {},
): Balancer {
  const random = opts.random ?? Math.random;
  if (typeof random !== "function") throw new TypeError("random: expected a function returning a number in [0, 1)");
  const tau = opts.ewmaDecayMs ?? 10_000;
  if (!(tau > 0 && Number.isFinite(tau))) throw new TypeError(`ewmaDecayMs: expected a positive number, got ${tau}`);
  endpoints.forEach((ep, i) => {
    if (!(ep.weight > 0 && Number.isFinite(ep.weight))) {
      throw new TypeError(`endpoints[${i}].weight: expected a positive number, got ${ep.weight} (${ep.key})`);
    }
  });
  const eps = endpoints.slice();
  switch (policy) {
    case "round_robin":
      return new RoundRobin(eps, random);
    case "least_request":
      return new LeastRequest(eps, random);
    case "peak_ewma":
      return new PeakEwma(eps, random, tau);
    case "ring_hash":
      return new RingHash(eps, random);
    default:
      throw new TypeError(`policy: expected one of "round_robin", "least_request", "peak_ewma", "ring_hash", got ${JSON.stringify(policy)}`);
  }
}

/**
 * The ring_hash key of a request, or null when the request has none (header or cookie absent or
 * empty, or no `hashOn`), in which case pick() falls back to a weighted random choice.
 *
 * `getHeader` takes a lower-case name and returns the value, with repeated headers joined (Cookie
 * headers with "; "). Cookie names are case-sensitive, whitespace around names and values is ignored,
 * one pair of surrounding double quotes is removed, and the first cookie of that name wins.
 * `clientAddress` should be the bare IP: a port in it would give each connection its own key.
 *
 * @example
 * hashKeyOf({ cookie: "session" }, (n) => (n === "cookie" ? "theme=dark; session=abc" : null), "10.0.0.7"); // "abc"
 */
export function hashKeyOf(
  hashOn: HashOnConfig | undefined,
  getHeader: (name: string) => string | null,
  clientAddress: string,
): string | null {
  if (hashOn === undefined) return null;
  if ("header" in hashOn) {
    const value = getHeader(hashOn.header);
    return value === null || value === "" ? null : value;
  }
  if ("cookie" in hashOn) {
    const header = getHeader("cookie");
    return header === null ? null : cookieValue(header, hashOn.cookie);
  }
  return clientAddress === "" ? null : clientAddress;
}

function cookieValue(header: string, name: string): string | null {
  const len = header.length;
  let start = 0;
  while (start < len) {
    let end = header.indexOf(";", start);
    if (end < 0) end = len;
    let s = start;
    while (s < end && isSpace(header.charCodeAt(s))) s++;
    const eq = header.indexOf("=", s);
    if (eq >= 0 && eq < end) {
      let ne = eq;
      while (ne > s && isSpace(header.charCodeAt(ne - 1))) ne--;
      if (ne - s === name.length && header.startsWith(name, s)) {
        let vs = eq + 1;
        let ve = end;
        while (vs < ve && isSpace(header.charCodeAt(vs))) vs++;
        while (ve > vs && isSpace(header.charCodeAt(ve - 1))) ve--;
        if (ve - vs >= 2 && header.charCodeAt(vs) === 34 && header.charCodeAt(ve - 1) === 34) {
          vs++;
          ve--;
        }
        return ve > vs ? header.slice(vs, ve) : null;
      }
    }
    start = end + 1;
  }
  return null;
}

function isSpace(c: number): boolean {
  return c === 32 || c === 9;
}

/** Running totals of the weights: cum[i] = w[0] + ... + w[i]. */
function cumulativeWeights(eps: readonly Endpoint[]): Float64Array {
  const cum = new Float64Array(eps.length);
  let sum = 0;
  for (let i = 0; i < eps.length; i++) cum[i] = sum += eps[i].weight;
  return cum;
}

/** The index whose slice of the weight line [0, total) holds `u`. */
function locate(cum: Float64Array, u: number): number {
  let lo = 0;
  let hi = cum.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cum[mid] > u) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** A weighted random index other than `a` (needs at least two endpoints): draws on the line with `a`'s slice cut out. */
function locateOther(cum: Float64Array, a: number, r: number): number {
  const wa = a === 0 ? cum[0] : cum[a] - cum[a - 1];
  let u = r * (cum[cum.length - 1] - wa);
  if (u >= cum[a] - wa) u += wa;
  const b = locate(cum, u);
  if (b !== a) return b;
  return a + 1 < cum.length ? a + 1 : a - 1; // only float rounding at a slice edge gets here
}

class RoundRobin implements Balancer {
  readonly #eps: Endpoint[];
  readonly #weights: Float64Array;
  readonly #current: Float64Array;
  readonly #total: number;
  readonly #uniform: boolean;
  #next = 0;
  readonly onStart = noop;
  readonly onEnd = noop;

  constructor(eps: Endpoint[], random: () => number) {
    const n = eps.length;
    // Rotating the order moves the start (and breaks ties differently) without touching the counts.
    const offset = n === 0 ? 0 : Math.min(n - 1, Math.floor(random() * n));
    this.#eps = eps.slice(offset).concat(eps.slice(0, offset));
    this.#weights = Float64Array.from(this.#eps, (ep) => ep.weight);
    this.#current = new Float64Array(n);
    this.#total = this.#weights.reduce((a, b) => a + b, 0);
    this.#uniform = this.#weights.every((w) => w === this.#weights[0]);
  }

  pick(): Endpoint | null {
    const n = this.#eps.length;
    if (n === 0) return null;
    if (this.#uniform) {
      const ep = this.#eps[this.#next];
      this.#next = this.#next + 1 === n ? 0 : this.#next + 1;
      return ep;
    }
    // Smooth weighted round robin: everyone gains its weight, the richest is chosen and pays the total.
    const cur = this.#current;
    const w = this.#weights;
    let best = 0;
    let bestValue = -Infinity;
    for (let i = 0; i < n; i++) {
      const c = (cur[i] += w[i]);
      if (c > bestValue) {
        bestValue = c;
        best = i;
      }
    }
    cur[best] -= this.#total;
    return this.#eps[best];
  }
}

class LeastRequest implements Balancer {
  readonly #eps: Endpoint[];
  readonly #index: Map<Endpoint, number>;
  readonly #cum: Float64Array;
  readonly #inflight: Float64Array;
  readonly #random: () => number;

  constructor(eps: Endpoint[], random: () => number) {
    this.#eps = eps;
    this.#index = new Map(eps.map((ep, i) => [ep, i]));
    this.#cum = cumulativeWeights(eps);
    this.#inflight = new Float64Array(eps.length);
    this.#random = random;
  }

  pick(): Endpoint | null {
    const eps = this.#eps;
    if (eps.length <= 1) return eps.length === 0 ? null : eps[0];
    const cum = this.#cum;
    const a = locate(cum, this.#random() * cum[cum.length - 1]);
    const b = locateOther(cum, a, this.#random());
    // inflight[b] / w[b] < inflight[a] / w[a], without dividing.
    return this.#inflight[b] * eps[a].weight < this.#inflight[a] * eps[b].weight ? eps[b] : eps[a];
  }

  onStart(ep: Endpoint): void {
    const i = this.#index.get(ep);
    if (i !== undefined) this.#inflight[i]++;
  }

  onEnd(ep: Endpoint): void {
    const i = this.#index.get(ep);
    if (i !== undefined && this.#inflight[i] > 0) this.#inflight[i]--;
  }
}

class PeakEwma implements Balancer {
  readonly #eps: Endpoint[];
  readonly #index: Map<Endpoint, number>;
  readonly #cum: Float64Array;
  readonly #inflight: Float64Array;
  /** Latency estimate, ms, as of #stamp; negative while the endpoint has no samples. */
  readonly #rtt: Float64Array;
  readonly #stamp: Float64Array;
  readonly #random: () => number;
  readonly #tau: number;
  /** The cluster's plain (not peak) EWMA of successful latencies: the cost of an endpoint never measured. */
  #clusterRtt = -1;
  #clusterStamp = 0;

  constructor(eps: Endpoint[], random: () => number, tau: number) {
    const n = eps.length;
    this.#eps = eps;
    this.#index = new Map(eps.map((ep, i) => [ep, i]));
    this.#cum = cumulativeWeights(eps);
    this.#inflight = new Float64Array(n);
    this.#rtt = new Float64Array(n).fill(-1);
    this.#stamp = new Float64Array(n);
    this.#random = random;
    this.#tau = tau;
  }

  pick(_hashKey: string | null, now: number): Endpoint | null {
    const eps = this.#eps;
    if (eps.length <= 1) return eps.length === 0 ? null : eps[0];
    const cum = this.#cum;
    const a = locate(cum, this.#random() * cum[cum.length - 1]);
    const b = locateOther(cum, a, this.#random());
    return this.#cost(b, now) < this.#cost(a, now) ? eps[b] : eps[a];
  }

  onStart(ep: Endpoint): void {
    const i = this.#index.get(ep);
    if (i !== undefined) this.#inflight[i]++;
  }

  onEnd(ep: Endpoint, latencyMs: number, now: number, ok: boolean | null): void {
    const i = this.#index.get(ep);
    if (i === undefined) return;
    if (this.#inflight[i] > 0) this.#inflight[i]--;
    if (ok === null) return; // cancelled: says nothing about the endpoint
    // NaN or Infinity would stick in the estimate for good.
    let sample = latencyMs >= 0 && latencyMs < Infinity ? latencyMs : 0;
    if (!ok && sample < FAILURE_PENALTY_MS) sample = FAILURE_PENALTY_MS;
    const rtt = this.#rtt;
    if (rtt[i] < 0) {
      rtt[i] = sample;
    } else {
      const w = this.#decay(now - this.#stamp[i]);
      const current = rtt[i] * w;
      rtt[i] = sample > current ? sample : current + sample * (1 - w);
    }
    this.#stamp[i] = now;
    if (!ok) return;
    if (this.#clusterRtt < 0) {
      this.#clusterRtt = sample;
    } else {
      const w = this.#decay(now - this.#clusterStamp);
      this.#clusterRtt = this.#clusterRtt * w + sample * (1 - w);
    }
    this.#clusterStamp = now;
  }

  #cost(i: number, now: number): number {
    let rtt: number;
    if (this.#rtt[i] >= 0) rtt = this.#rtt[i] * this.#decay(now - this.#stamp[i]);
    else if (this.#clusterRtt >= 0) rtt = this.#clusterRtt * this.#decay(now - this.#clusterStamp);
    else rtt = DEFAULT_RTT_MS;
    if (rtt < MIN_RTT_MS) rtt = MIN_RTT_MS;
    return (rtt * (this.#inflight[i] + 1)) / this.#eps[i].weight;
  }

  #decay(elapsedMs: number): number {
    return elapsedMs > 0 ? Math.exp(-elapsedMs / this.#tau) : 1;
  }
}

class RingHash implements Balancer {
  readonly #eps: Endpoint[];
  readonly #cum: Float64Array;
  /** Sorted virtual node positions, and the endpoint index owning each. */
  readonly #positions: Float64Array;
  readonly #owners: Int32Array;
  readonly #random: () => number;
  readonly onStart = noop;
  readonly onEnd = noop;

  constructor(eps: Endpoint[], random: () => number) {
    this.#eps = eps;
    this.#cum = cumulativeWeights(eps);
    this.#random = random;
    const total = eps.length === 0 ? 0 : this.#cum[eps.length - 1] * VNODES_PER_WEIGHT;
    const scale = total > MAX_RING_SIZE ? MAX_RING_SIZE / total : 1;
    const nodes: { pos: number; owner: number; key: string; replica: number }[] = [];
    eps.forEach((ep, owner) => {
      const count = Math.max(1, Math.round(ep.weight * VNODES_PER_WEIGHT * scale));
      for (let replica = 0; replica < count; replica++) {
        nodes.push({ pos: hash53(`${ep.key}#${replica}`), owner, key: ep.key, replica });
      }
    });
    // Ties broken by key, so proxies listing the same endpoints in another order build the same ring.
    nodes.sort((x, y) => x.pos - y.pos || (x.key < y.key ? -1 : x.key > y.key ? 1 : x.replica - y.replica));
    this.#positions = Float64Array.from(nodes, (node) => node.pos);
    this.#owners = Int32Array.from(nodes, (node) => node.owner);
  }

  pick(hashKey: string | null): Endpoint | null {
    const eps = this.#eps;
    if (eps.length <= 1) return eps.length === 0 ? null : eps[0];
    if (hashKey === null) return eps[locate(this.#cum, this.#random() * this.#cum[eps.length - 1])];
    // The first virtual node at or clockwise after the key's position, wrapping past the top.
    const h = hash53(hashKey);
    const pos = this.#positions;
    let lo = 0;
    let hi = pos.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pos[mid] < h) lo = mid + 1;
      else hi = mid;
    }
    return eps[this.#owners[lo === pos.length ? 0 : lo]];
  }
}
