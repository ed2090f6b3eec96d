// Counters, gauges and histograms that appear on the proxy's /metrics as mesh_filter_<name>{filter="..."}.
// Define them once (at top level or in onConfigure); recording is one host call.
import { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM, mesh_metric_define, mesh_metric_record } from "./abi";

function define(kind: i32, name: string, help: string, buckets: f64[] | null): i32 {
  const b = buckets === null ? <usize>0 : buckets.dataStart;
  const n = buckets === null ? 0 : buckets.length;
  return mesh_metric_define(kind, changetype<usize>(name), name.length, changetype<usize>(help), help.length, b, n);
}

export class Counter {
  private id: i32;
  /** `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*; it is exported as mesh_filter_<name>. */
  constructor(name: string, help: string = "") {
    this.id = define(METRIC_COUNTER, name, help, null);
  }
  inc(n: f64 = 1): void {
    mesh_metric_record(this.id, n);
  }
}

export class Gauge {
  private id: i32;
  constructor(name: string, help: string = "") {
    this.id = define(METRIC_GAUGE, name, help, null);
  }
  set(v: f64): void {
    mesh_metric_record(this.id, v);
  }
}

export class Histogram {
  private id: i32;
  /** `buckets`: upper bounds, ascending; null for the proxy's duration buckets (seconds). */
  constructor(name: string, help: string = "", buckets: f64[] | null = null) {
    this.id = define(METRIC_HISTOGRAM, name, help, buckets);
  }
  observe(v: f64): void {
    mesh_metric_record(this.id, v);
  }
}
