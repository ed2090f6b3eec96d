import { describe, expect, test } from "bun:test";
import { createBalancer, hashKeyOf, type Balancer } from "../../runtime/upstream/balancers.ts";
import { hash53 } from "../../runtime/upstream/hash.ts";
import type { Endpoint } from "../../runtime/upstream/types.ts";
import type { LbPolicyName } from "../../runtime/config/schema.ts";
import { seeded } from "../seeded.ts";

const POLICIES: LbPolicyName[] = ["round_robin", "least_request", "peak_ewma", "ring_hash"];

function endpoint(n: number, weight = 1): Endpoint {
  const host = `10.0.${n >> 8}.${n & 255}`;
  return { host, port: 8080, key: `${host}:8080`, weight };
}

function endpoints(weights: number[]): Endpoint[] {
  return weights.map((w, i) => endpoint(i, w));
}


/** A source that replays `values` in a loop. */
function scripted(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length];
}

function countPicks(lb: Balancer, times: number, key: (i: number) => string | null = () => null, now = 0): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < times; i++) {
    const ep = lb.pick(key(i), now)!;
    counts.set(ep.key, (counts.get(ep.key) ?? 0) + 1);
  }
  return counts;
}

describe("every policy", () => {
  for (const policy of POLICIES) {
    test(`${policy} returns null when the cluster has no endpoints`, () => {
      const lb = createBalancer(policy, [], { random: seeded(1) });
      expect(lb.pick("k", 0)).toBeNull();
      expect(lb.pick(null, 0)).toBeNull();
    });

    test(`${policy} returns the only endpoint, whatever its load`, () => {
      const only = endpoint(1, 3);
      const lb = createBalancer(policy, [only], { random: seeded(1) });
      for (let i = 0; i < 5; i++) lb.onStart(only);
      expect(lb.pick("k", 0)).toBe(only);
      expect(lb.pick(null, 0)).toBe(only);
    });

    test(`${policy} ignores onStart and onEnd for endpoints it does not hold`, () => {
      const lb = createBalancer(policy, endpoints([1, 1]), { random: seeded(1) });
      const stranger = endpoint(99);
      expect(() => {
        lb.onStart(stranger);
        lb.onEnd(stranger, 10, 0, false);
      }).not.toThrow();
    });
  }

  test("rejects a non-positive endpoint weight, naming it", () => {
    expect(() => createBalancer("round_robin", endpoints([1, 0]))).toThrow("endpoints[1].weight");
    expect(() => createBalancer("least_request", endpoints([Number.NaN]))).toThrow(TypeError);
  });

  test("rejects a bad ewmaDecayMs and an unknown policy", () => {
    expect(() => createBalancer("peak_ewma", endpoints([1]), { ewmaDecayMs: 0 })).toThrow("ewmaDecayMs");
    expect(() => createBalancer("random" as LbPolicyName, endpoints([1]))).toThrow("policy");
  });
});

describe("round_robin", () => {
  const cases: number[][] = [[1, 1, 1], [1, 2, 3], [5, 1, 1], [3, 7], [1, 100], [2, 2, 4, 1, 9]];
  for (const weights of cases) {
    test(`chooses each endpoint exactly weight times in any ${weights.join("+")} consecutive picks`, () => {
      const total = weights.reduce((a, b) => a + b, 0);
      for (const seed of [1, 2, 3, 4]) {
        const eps = endpoints(weights);
        const lb = createBalancer("round_robin", eps, { random: seeded(seed) });
        const picks = Array.from({ length: 3 * total }, () => lb.pick(null, 0)!);
        for (const start of [0, 1, Math.floor(total / 2), total, 2 * total - 1]) {
          const window = picks.slice(start, start + total);
          expect(eps.map((ep) => window.filter((p) => p === ep).length)).toEqual(weights);
        }
      }
    });
  }

  test("interleaves a heavy endpoint with the others instead of sending its share in one burst", () => {
    const [heavy, a, b] = endpoints([4, 1, 1]);
    const lb = createBalancer("round_robin", [heavy, a, b], { random: scripted(0) });
    const seq = Array.from({ length: 6 }, () => lb.pick(null, 0)!.key);
    expect(seq).toEqual([heavy.key, heavy.key, a.key, heavy.key, b.key, heavy.key]);
  });

  test("starts at a random endpoint so that proxies do not move in lockstep", () => {
    const eps = endpoints([1, 1, 1, 1]);
    const firsts = new Set([0, 0.3, 0.6, 0.9].map((r) => createBalancer("round_robin", eps, { random: scripted(r) }).pick(null, 0)));
    expect(firsts.size).toBe(4);
  });
});

describe("least_request", () => {
  test("sends to the less loaded of the two candidates", () => {
    const [a, b] = endpoints([1, 1]);
    const lb = createBalancer("least_request", [a, b], { random: seeded(7) });
    for (let i = 0; i < 3; i++) lb.onStart(a);
    expect(countPicks(lb, 200).get(b.key)).toBe(200);
    for (let i = 0; i < 4; i++) lb.onStart(b);
    expect(countPicks(lb, 200).get(a.key)).toBe(200);
  });

  test("draws two distinct candidates, so the most loaded endpoint is never chosen", () => {
    const eps = endpoints([1, 1, 1, 1, 1]);
    const lb = createBalancer("least_request", eps, { random: seeded(3) });
    lb.onStart(eps[2]);
    lb.onStart(eps[2]);
    for (const ep of eps) if (ep !== eps[2]) lb.onStart(ep);
    expect(countPicks(lb, 2000).get(eps[2].key)).toBeUndefined();
    // The one idle endpoint wins whenever it is either candidate: 2 of 5 picks.
    lb.onEnd(eps[4], 1, 0, true);
    expect(countPicks(lb, 20_000).get(eps[4].key)! / 20_000).toBeCloseTo(2 / 5, 1.5);
    // Both draws landing on the same endpoint must still give two candidates.
    const stuck = createBalancer("least_request", eps, { random: scripted(0) });
    stuck.onStart(eps[0]);
    expect(stuck.pick(null, 0)).toBe(eps[1]);
  });

  const weighted: { name: string; weights: [number, number]; inflight: [number, number]; winner: 0 | 1 }[] = [
    { name: "fewer requests per unit of weight wins", weights: [1, 4], inflight: [2, 4], winner: 1 },
    { name: "a light endpoint with less load still wins", weights: [1, 4], inflight: [0, 1], winner: 0 },
    { name: "equal weights compare raw counts", weights: [2, 2], inflight: [3, 2], winner: 1 },
  ];
  for (const c of weighted) {
    test(`divides in-flight by weight: ${c.name}`, () => {
      const eps = endpoints(c.weights);
      const lb = createBalancer("least_request", eps, { random: seeded(11) });
      eps.forEach((ep, i) => {
        for (let k = 0; k < c.inflight[i]; k++) lb.onStart(ep);
      });
      expect(countPicks(lb, 100).get(eps[c.winner].key)).toBe(100);
    });
  }

  test("sends traffic in proportion to weight when nothing is in flight", () => {
    const eps = endpoints([1, 3, 6]);
    const counts = countPicks(createBalancer("least_request", eps, { random: seeded(5) }), 20_000);
    eps.forEach((ep) => expect(counts.get(ep.key)! / 20_000).toBeCloseTo(ep.weight / 10, 1));
  });

  test("counts a request as finished once, never below zero", () => {
    const [a, b] = endpoints([1, 1]);
    const lb = createBalancer("least_request", [a, b], { random: seeded(2) });
    lb.onEnd(a, 1, 0, true);
    lb.onEnd(a, 1, 0, true);
    lb.onStart(b);
    lb.onStart(a);
    lb.onStart(a);
    // a: 2 in flight, b: 1. Had the extra onEnd calls gone negative, a would look idle.
    expect(countPicks(lb, 50).get(b.key)).toBe(50);
    lb.onEnd(a, 1, 0, true);
    lb.onEnd(a, 1, 0, true);
    expect(countPicks(lb, 50).get(a.key)).toBe(50);
  });
});

/**
 * Drives a balancer with requests arriving every `everyMs`, each lasting whatever `latency` says for the
 * endpoint at that moment, and finishing (onEnd) in time order before later picks.
 */
class Simulation {
  now = 0;
  readonly #pending: { ep: Endpoint; end: number; latency: number; ok: boolean }[] = [];

  constructor(
    readonly lb: Balancer,
    readonly everyMs: number,
  ) {}

  /** Runs until `untilMs`; returns how many picks each endpoint got. */
  run(untilMs: number, latency: (ep: Endpoint) => number, ok: (ep: Endpoint) => boolean = () => true): Map<string, number> {
    const counts = new Map<string, number>();
    for (; this.now < untilMs; this.now += this.everyMs) {
      this.#finishUntil(this.now);
      const ep = this.lb.pick(null, this.now)!;
      counts.set(ep.key, (counts.get(ep.key) ?? 0) + 1);
      this.lb.onStart(ep);
      const l = latency(ep);
      this.#pending.push({ ep, end: this.now + l, latency: l, ok: ok(ep) });
    }
    return counts;
  }

  #finishUntil(t: number): void {
    this.#pending.sort((x, y) => x.end - y.end);
    while (this.#pending.length > 0 && this.#pending[0].end <= t) {
      const r = this.#pending.shift()!;
      this.lb.onEnd(r.ep, r.latency, r.end, r.ok);
    }
  }
}

function share(counts: Map<string, number>, ep: Endpoint): number {
  let total = 0;
  for (const n of counts.values()) total += n;
  return (counts.get(ep.key) ?? 0) / total;
}

describe("peak_ewma", () => {
  test("shifts traffic away from a slow endpoint, and back after it recovers", () => {
    const [slow, b, c] = endpoints([1, 1, 1]);
    const lb = createBalancer("peak_ewma", [slow, b, c], { random: seeded(42), ewmaDecayMs: 1_000 });
    const sim = new Simulation(lb, 2);
    let slowMs = 200;
    const latency = (ep: Endpoint) => (ep === slow ? slowMs : 10);

    const warmup = sim.run(5_000, latency);
    expect(share(warmup, slow)).toBeLessThan(0.1);
    const degraded = sim.run(15_000, latency);
    expect(share(degraded, slow)).toBeLessThan(0.05);

    slowMs = 10;
    sim.run(25_000, latency); // ten decay windows to forget
    const recovered = sim.run(35_000, latency);
    expect(share(recovered, slow)).toBeGreaterThan(0.25);
    expect(share(recovered, slow)).toBeLessThan(0.42);
  });

  test("a higher latency sample takes effect at once; a lower one only as it ages in", () => {
    const [a, b] = endpoints([1, 1]);
    const lb = createBalancer("peak_ewma", [a, b], { random: seeded(9), ewmaDecayMs: 10_000 });
    lb.onEnd(a, 10, 0, true);
    lb.onEnd(b, 20, 0, true);
    expect(countPicks(lb, 50).get(a.key)).toBe(50);
    lb.onEnd(a, 500, 1, true); // one spike
    expect(countPicks(lb, 50).get(b.key)).toBe(50);
    // Many fast samples shortly after do not undo the spike within the decay window...
    for (let t = 2; t < 100; t++) lb.onEnd(a, 10, t, true);
    lb.onEnd(b, 20, 100, true);
    expect(lb.pick(null, 100)).toBe(b);
    // ...but a few windows later they have.
    for (let t = 100; t <= 50_000; t += 100) {
      lb.onEnd(a, 10, t, true);
      lb.onEnd(b, 20, t, true);
    }
    expect(countPicks(lb, 50, () => null, 50_000).get(a.key)).toBe(50);
  });

  test("a cancelled request (ok null) only ends its in-flight count: no penalty, no sample", () => {
    const [a, b] = endpoints([1, 1]);
    const lb = createBalancer("peak_ewma", [a, b], { random: seeded(9), ewmaDecayMs: 10_000 });
    lb.onEnd(a, 10, 0, true);
    lb.onEnd(b, 20, 0, true);
    expect(countPicks(lb, 50).get(a.key)).toBe(50);
    lb.onStart(a);
    lb.onEnd(a, 3, 1, null); // the client left: a is still the faster one
    expect(countPicks(lb, 50, () => null, 1).get(a.key)).toBe(50);
    lb.onStart(a);
    lb.onEnd(a, 3, 2, false); // a real fast failure is penalised
    expect(countPicks(lb, 50, () => null, 2).get(b.key)).toBe(50);
  });

  test("treats a fast failure as a slow response", () => {
    const [broken, healthy] = endpoints([1, 1]);
    const run = (ok: boolean) => {
      const lb = createBalancer("peak_ewma", [broken, healthy], { random: seeded(4), ewmaDecayMs: 1_000 });
      const sim = new Simulation(lb, 5);
      sim.run(2_000, (ep) => (ep === broken ? 0.5 : 20), (ep) => ok || ep !== broken);
      return share(sim.run(10_000, (ep) => (ep === broken ? 0.5 : 20), (ep) => ok || ep !== broken), broken);
    };
    expect(run(true)).toBeGreaterThan(0.6); // succeeding fast: rightly preferred
    expect(run(false)).toBeLessThan(0.05); // failing fast: avoided
  });

  test("before anything is measured, balances by in-flight requests", () => {
    const [a, b] = endpoints([1, 1]);
    const lb = createBalancer("peak_ewma", [a, b], { random: seeded(8) });
    lb.onStart(a);
    expect(countPicks(lb, 50).get(b.key)).toBe(50);
  });

  test("costs an unmeasured endpoint like an average peer, neither free nor banned", () => {
    const [seen, fresh] = endpoints([1, 1]);
    const lb = createBalancer("peak_ewma", [seen, fresh], { random: seeded(6) });
    lb.onEnd(seen, 50, 0, true);
    lb.onStart(seen);
    expect(lb.pick(null, 0)).toBe(fresh); // 50ms x 2 in flight vs 50ms x 1
    lb.onEnd(seen, 50, 0, true);
    lb.onStart(fresh);
    expect(lb.pick(null, 0)).toBe(seen); // 50ms x 1 vs 50ms x 2
  });

  test("weights scale the cost", () => {
    const [light, heavy] = endpoints([1, 4]);
    const lb = createBalancer("peak_ewma", [light, heavy], { random: seeded(10) });
    lb.onEnd(light, 10, 0, true);
    lb.onEnd(heavy, 30, 0, true);
    expect(countPicks(lb, 50).get(heavy.key)).toBe(50); // 30 / 4 < 10 / 1
  });
});

describe("ring_hash", () => {
  const keys = Array.from({ length: 20_000 }, (_, i) => `user-${i}`);

  function mapping(lb: Balancer): string[] {
    return keys.map((k) => lb.pick(k, 0)!.key);
  }

  test("sends the same key to the same endpoint, in any build and endpoint order", () => {
    const eps = endpoints([1, 1, 2, 1, 3]);
    const first = mapping(createBalancer("ring_hash", eps, { random: seeded(1) }));
    expect(mapping(createBalancer("ring_hash", eps, { random: seeded(2) }))).toEqual(first);
    expect(mapping(createBalancer("ring_hash", [...eps].reverse(), { random: seeded(3) }))).toEqual(first);
    const lb = createBalancer("ring_hash", eps, { random: seeded(4) });
    lb.pick(null, 0); // a random fallback in between changes nothing
    expect(mapping(lb)).toEqual(first);
  });

  test("adding an endpoint moves only about 1/N of keys, all of them to the new endpoint", () => {
    const eps = endpoints(Array(10).fill(1));
    const added = endpoint(10);
    const before = mapping(createBalancer("ring_hash", eps));
    const after = mapping(createBalancer("ring_hash", [...eps, added]));
    const moved = keys.filter((_, i) => before[i] !== after[i]);
    expect(keys.every((_, i) => before[i] === after[i] || after[i] === added.key)).toBe(true);
    expect(moved.length / keys.length).toBeGreaterThan(1 / 11 / 2);
    expect(moved.length / keys.length).toBeLessThan((1 / 11) * 1.5);
  });

  test("removing an endpoint moves only the keys it held", () => {
    const eps = endpoints(Array(10).fill(1));
    const before = mapping(createBalancer("ring_hash", eps));
    const after = mapping(createBalancer("ring_hash", eps.filter((_, i) => i !== 4)));
    keys.forEach((_, i) => {
      if (before[i] !== eps[4].key) expect(after[i]).toBe(before[i]);
    });
  });

  const spreads: { weights: number[]; tolerance: number }[] = [
    { weights: Array(10).fill(1), tolerance: 0.3 },
    { weights: [1, 2, 3, 4], tolerance: 0.2 },
    { weights: Array(50).fill(1), tolerance: 0.4 },
    // 2000 units of weight overflow the ring cap; the ratios must survive the scaling.
    { weights: [...Array(10).fill(100), ...Array(10).fill(100)].map((w, i) => (i < 10 ? w : 2 * w)), tolerance: 0.3 },
  ];
  for (const { weights, tolerance } of spreads) {
    test(`spreads keys in proportion to weight (${weights.length} endpoints, weights ${[...new Set(weights)].join("/")})`, () => {
      const eps = endpoints(weights);
      const total = weights.reduce((a, b) => a + b, 0);
      const many = Array.from({ length: 100_000 }, (_, i) => `k${i}`);
      const counts = countPicks(createBalancer("ring_hash", eps), many.length, (i) => many[i]);
      for (const ep of eps) {
        const expected = (many.length * ep.weight) / total;
        expect(Math.abs((counts.get(ep.key) ?? 0) - expected) / expected).toBeLessThan(tolerance);
      }
    });
  }

  test("wraps around: a key hashing past the last virtual node goes to the owner of the first", () => {
    // White-box: virtual node j of an endpoint sits at hash53(`${key}#${j}`).
    const eps = endpoints([1, 1, 1, 1]);
    const nodes = eps.flatMap((ep) => Array.from({ length: 100 }, (_, j) => ({ pos: hash53(`${ep.key}#${j}`), ep })));
    nodes.sort((x, y) => x.pos - y.pos);
    expect(nodes[0].ep).not.toBe(nodes[nodes.length - 1].ep); // else this test could not tell wrapping from clamping
    const top = nodes[nodes.length - 1].pos;
    const past = Array.from({ length: 200_000 }, (_, i) => `w${i}`).filter((k) => hash53(k) > top);
    expect(past.length).toBeGreaterThan(0);
    const lb = createBalancer("ring_hash", eps);
    for (const k of past) expect(lb.pick(k, 0)).toBe(nodes[0].ep);
  });

  test("keeps its layout from release to release, so an upgrade does not move sticky sessions", () => {
    // If this fails on purpose (new hash, new virtual node names), say so in the release notes.
    const lb = createBalancer("ring_hash", endpoints([1, 1, 1, 1]));
    const keys = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"];
    expect(keys.map((k) => lb.pick(k, 0)!.host)).toEqual([
      "10.0.0.2", "10.0.0.3", "10.0.0.3", "10.0.0.2", "10.0.0.0", "10.0.0.2", "10.0.0.1", "10.0.0.3", "10.0.0.1", "10.0.0.1",
    ]);
  });

  test("without a key, falls back to a weighted random choice", () => {
    const eps = endpoints([1, 3]);
    const counts = countPicks(createBalancer("ring_hash", eps, { random: seeded(12) }), 10_000);
    expect(counts.get(eps[1].key)! / 10_000).toBeCloseTo(0.75, 1);
  });
});

describe("hash53", () => {
  test("is deterministic, a 53-bit integer, and differs for near-identical inputs", () => {
    const inputs = ["", "a", "b", "10.0.0.1:8080#0", "10.0.0.1:8080#1", "10.0.0.1:8081#0", "é", "\u{1F600}"];
    const hashes = inputs.map(hash53);
    expect(inputs.map(hash53)).toEqual(hashes);
    expect(new Set(hashes).size).toBe(inputs.length);
    for (const h of hashes) {
      expect(Number.isSafeInteger(h)).toBe(true);
      expect(h).toBeGreaterThanOrEqual(0);
    }
  });

  test("fills the range evenly for sequential keys", () => {
    const buckets = new Array(16).fill(0);
    for (let i = 0; i < 32_000; i++) buckets[Math.floor(hash53(`key${i}`) / 2 ** 49)]++;
    for (const b of buckets) expect(Math.abs(b - 2_000)).toBeLessThan(200);
  });
});

describe("hashKeyOf", () => {
  const headers = (h: Record<string, string>) => (name: string) => h[name] ?? null;
  const cases: { name: string; hashOn: Parameters<typeof hashKeyOf>[0]; headers: Record<string, string>; client?: string; key: string | null }[] = [
    { name: "takes a header's value", hashOn: { header: "x-user" }, headers: { "x-user": "alice" }, key: "alice" },
    { name: "has no key when the header is missing", hashOn: { header: "x-user" }, headers: {}, key: null },
    { name: "has no key when the header is empty", hashOn: { header: "x-user" }, headers: { "x-user": "" }, key: null },
    { name: "takes the only cookie", hashOn: { cookie: "sid" }, headers: { cookie: "sid=abc" }, key: "abc" },
    { name: "finds a cookie among several", hashOn: { cookie: "sid" }, headers: { cookie: "theme=dark; sid=abc; lang=en" }, key: "abc" },
    { name: "ignores spaces around cookie names and values", hashOn: { cookie: "sid" }, headers: { cookie: "theme=dark;sid = abc ;lang=en" }, key: "abc" },
    { name: "ignores tabs and a trailing ';'", hashOn: { cookie: "sid" }, headers: { cookie: "\tsid=abc;" }, key: "abc" },
    { name: "removes the quotes around a quoted cookie value", hashOn: { cookie: "sid" }, headers: { cookie: 'sid="abc"' }, key: "abc" },
    { name: "takes the first of repeated cookies", hashOn: { cookie: "sid" }, headers: { cookie: "sid=one; sid=two" }, key: "one" },
    { name: "keeps '=' inside a cookie value", hashOn: { cookie: "sid" }, headers: { cookie: "sid=a=b" }, key: "a=b" },
    { name: "does not match a cookie whose name merely contains the wanted one", hashOn: { cookie: "sid" }, headers: { cookie: "xsid=1; sidx=2" }, key: null },
    { name: "matches cookie names case-sensitively", hashOn: { cookie: "sid" }, headers: { cookie: "SID=abc" }, key: null },
    { name: "has no key without a cookie header", hashOn: { cookie: "sid" }, headers: {}, key: null },
    { name: "has no key when the cookie is absent", hashOn: { cookie: "sid" }, headers: { cookie: "theme=dark; flag" }, key: null },
    { name: "has no key when the cookie is empty", hashOn: { cookie: "sid" }, headers: { cookie: "sid=; theme=dark" }, key: null },
    { name: "takes the client address", hashOn: { clientAddress: true }, headers: { "x-user": "alice" }, client: "192.0.2.7", key: "192.0.2.7" },
    { name: "has no key when the client address is unknown", hashOn: { clientAddress: true }, headers: {}, client: "", key: null },
    { name: "has no key without hashOn", hashOn: undefined, headers: { "x-user": "alice" }, key: null },
  ];
  for (const c of cases) {
    test(c.name, () => {
      expect(hashKeyOf(c.hashOn, headers(c.headers), c.client ?? "10.0.0.1")).toBe(c.key);
    });
  }
});
