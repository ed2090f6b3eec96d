// Prometheus metrics: a small registry whose label children are resolved once and kept, so the hot
// path is an array index and an add. Hand-written rather than prom-client because prom-client hashes
// label objects on every observe() and is Node-only in places; this is ~150 lines and runs on Bun and Deno.

type LabelValues = readonly string[];

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labelText(names: readonly string[], values: LabelValues, extra?: string): string {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i] ?? "")}"`);
  if (extra) parts.push(extra);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function formatNumber(n: number): string {
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return Number.isInteger(n) ? String(n) : n.toPrecision(12).replace(/\.?0+$/, "");
}

/** The child of `children` for these label values, made on first use. */
function childFor<T>(children: Map<string, T>, values: LabelValues, make: () => T): T {
  const key = values.join("\u0000");
  let child = children.get(key);
  if (child === undefined) {
    child = make();
    children.set(key, child);
  }
  return child;
}

type ValueChild = { values: LabelValues; value: number };

/** HELP, TYPE and one sample line per child, for metrics that are a single number per child. */
function renderValues(out: string[], m: { name: string; help: string; labelNames: readonly string[] }, type: string, children: Map<string, ValueChild>): void {
  out.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${type}`);
  for (const c of children.values()) out.push(`${m.name}${labelText(m.labelNames, c.values)} ${formatNumber(c.value)}`);
}

interface Metric {
  readonly name: string;
  render(out: string[]): void;
}

export class Counter implements Metric {
  private readonly children = new Map<string, ValueChild>();
  constructor(readonly name: string, readonly help: string, readonly labelNames: readonly string[] = []) {}

  /** The child for these label values; keep it and call inc() on it in hot code. */
  labels(...values: string[]): { inc(n?: number): void; readonly value: number } {
    const c = childFor(this.children, values, () => ({ values, value: 0 }));
    return {
      inc(n = 1) {
        c.value += n;
      },
      get value() {
        return c.value;
      },
    };
  }

  inc(n = 1): void {
    this.labels().inc(n);
  }

  render(out: string[]): void {
    renderValues(out, this, "counter", this.children);
  }
}

export class Gauge implements Metric {
  private readonly children = new Map<string, ValueChild>();
  constructor(readonly name: string, readonly help: string, readonly labelNames: readonly string[] = []) {}

  labels(...values: string[]): { inc(n?: number): void; dec(n?: number): void; set(n: number): void; readonly value: number } {
    const c = childFor(this.children, values, () => ({ values, value: 0 }));
    return {
      inc(n = 1) {
        c.value += n;
      },
      dec(n = 1) {
        c.value -= n;
      },
      set(n: number) {
        c.value = n;
      },
      get value() {
        return c.value;
      },
    };
  }

  render(out: string[]): void {
    renderValues(out, this, "gauge", this.children);
  }
}

/** Seconds buckets for request durations, from 0.5 ms to 30 s. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface HistogramChild {
  observe(v: number): void;
  readonly count: number;
  readonly sum: number;
}

export class Histogram implements Metric {
  private readonly children = new Map<string, { values: LabelValues; counts: Float64Array; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
    readonly buckets: readonly number[] = DURATION_BUCKETS,
  ) {}

  labels(...values: string[]): HistogramChild {
    const c = childFor(this.children, values, () => ({ values, counts: new Float64Array(this.buckets.length), sum: 0, count: 0 }));
    const buckets = this.buckets;
    return {
      observe(v: number) {
        // Non-cumulative per bucket; rendering makes them cumulative.
        let i = 0;
        while (i < buckets.length && v > buckets[i]!) i++;
        if (i < buckets.length) c.counts[i]!++;
        c.sum += v;
        c.count++;
      },
      get count() {
        return c.count;
      },
      get sum() {
        return c.sum;
      },
    };
  }

  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`);
    for (const c of this.children.values()) {
      let cumulative = 0;
      this.buckets.forEach((le, i) => {
        cumulative += c.counts[i]!;
        out.push(`${this.name}_bucket${labelText(this.labelNames, c.values, `le="${formatNumber(le)}"`)} ${cumulative}`);
      });
      out.push(`${this.name}_bucket${labelText(this.labelNames, c.values, 'le="+Inf"')} ${c.count}`);
      out.push(`${this.name}_sum${labelText(this.labelNames, c.values)} ${formatNumber(c.sum)}`);
      out.push(`${this.name}_count${labelText(this.labelNames, c.values)} ${c.count}`);
    }
  }
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

/** A set of metrics rendered together on /metrics. Registering a name twice returns the first. */
export class Registry {
  private readonly metrics = new Map<string, Metric>();

  private add<T extends Metric>(name: string, make: () => T, kind: new (...a: never[]) => T): T {
    if (!METRIC_NAME.test(name)) throw new TypeError(`metric name "${name}" is not a valid Prometheus name`);
    const existing = this.metrics.get(name);
    if (existing) {
      if (!(existing instanceof kind)) throw new TypeError(`metric "${name}" is already registered with another type`);
      return existing;
    }
    const m = make();
    this.metrics.set(name, m);
    return m;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.add(name, () => new Counter(name, help, labelNames), Counter);
  }
  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.add(name, () => new Gauge(name, help, labelNames), Gauge);
  }
  histogram(name: string, help: string, labelNames: readonly string[] = [], buckets?: readonly number[]): Histogram {
    return this.add(name, () => new Histogram(name, help, labelNames, buckets), Histogram);
  }

  /** Prometheus text exposition format 0.0.4. */
  render(): string {
    const out: string[] = [];
    for (const m of this.metrics.values()) m.render(out);
    return out.join("\n") + "\n";
  }
}
