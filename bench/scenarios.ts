// What the benchmark measures, as data: the scenarios (rows), the cells (response size x connections)
// and how long each measurement runs. run.ts only walks these lists.

/** Who answers the load generator. */
export type PeerKind = "direct" | "nginx" | "haproxy" | "naive-bun" | "meshwasm";

/** How a row is read: the ceiling, a peer to beat, a reference point, or our proxy. */
export type Role = "ceiling" | "peer" | "reference" | "ours";

/** One filter in the chain of a meshwasm scenario. Its module is `filters/<name>/**\/*.wasm`. */
export interface FilterUse {
  name: string;
  /**
   * Per-filter config, passed through as the route's `filters[].config`. Each is chosen so the filter
   * does its full work but lets every request through: the row measures overhead, not rejections.
   * Keep in step with the filter's schema in filters/<name>/.
   */
  config: unknown;
  /** Request headers the load generator must send for this filter to pass (an API key, say). */
  headers?: Record<string, string>;
}

export interface Scenario {
  /** Stable id: used on the command line (`--only`), in the JSON and as the chart label. */
  id: string;
  label: string;
  kind: PeerKind;
  role: Role;
  /** For meshwasm: which runtime runs runtime/main.ts. */
  runtime?: "bun" | "deno";
  /** For meshwasm: the route's filter chain, in order. */
  filters?: FilterUse[];
}

const API_KEY = "bench-3f9c2a7d41e8";

export const FILTERS = {
  auth: {
    name: "auth",
    config: { apiKeys: { header: "x-api-key", keys: [{ name: "bench", key: API_KEY }] } },
    headers: { "x-api-key": API_KEY },
  },
  rateLimit: {
    name: "rate-limit",
    // A bucket no benchmark can empty: the token accounting runs on every request (and the
    // RateLimit-* response headers on every response), nothing is limited.
    config: { key: { route: true }, rate: 1_000_000_000, burst: 1_000_000_000 },
  },
  retries: {
    name: "retries",
    // The upstream never fails, so this measures the bookkeeping, not actual retries.
    config: { maxAttempts: 2, retryOn: ["5xx", "connect-failure", "reset"], perTryTimeoutMs: 5000 },
  },
  fault: {
    name: "fault",
    // 0 % delay and abort: the filter decides on every request and never injects anything.
    config: { delay: { percent: 0, ms: 1 }, abort: { percent: 0, status: 503 } },
  },
  /** The smallest useful filter: sets one request header. The micro-benchmark times the same module. */
  headerOnly: {
    name: "add-header",
    config: { request: { "x-bench": "1" } },
  },
} satisfies Record<string, FilterUse>;

const standardChain = [FILTERS.auth, FILTERS.rateLimit, FILTERS.retries, FILTERS.fault];

export const SCENARIOS: Scenario[] = [
  { id: "direct", label: "direct to upstream (ceiling)", kind: "direct", role: "ceiling" },
  { id: "nginx", label: "nginx passthrough", kind: "nginx", role: "peer" },
  { id: "haproxy", label: "HAProxy passthrough", kind: "haproxy", role: "peer" },
  { id: "naive-bun", label: "naive Bun fetch proxy (reference)", kind: "naive-bun", role: "reference" },
  { id: "meshwasm-bun", label: "meshwasm on Bun, passthrough", kind: "meshwasm", role: "ours", runtime: "bun", filters: [] },
  { id: "meshwasm-deno", label: "meshwasm on Deno, passthrough", kind: "meshwasm", role: "ours", runtime: "deno", filters: [] },
  ...(
    [
      ["header", "header-only filter", FILTERS.headerOnly],
      ["auth", "auth filter", FILTERS.auth],
      ["rate-limit", "rate-limit filter", FILTERS.rateLimit],
      ["retries", "retries filter", FILTERS.retries],
      ["fault", "fault filter", FILTERS.fault],
    ] as const
  ).map(([id, what, filter]): Scenario => ({
    id: `meshwasm-bun+${id}`,
    label: `meshwasm on Bun, ${what}`,
    kind: "meshwasm",
    role: "ours",
    runtime: "bun",
    filters: [filter],
  })),
  {
    id: "meshwasm-bun+chain",
    label: `meshwasm on Bun, standard chain (${standardChain.map((f) => f.name).join(" > ")})`,
    kind: "meshwasm",
    role: "ours",
    runtime: "bun",
    filters: standardChain,
  },
];

/** The row every ratio is taken against. */
export const BASELINE_ID = "nginx";

export interface Size {
  id: string;
  label: string;
  /** Upstream path; see BODIES in upstream.ts. */
  path: string;
}

export const SIZES: Size[] = [
  { id: "100B", label: "100 B", path: "/small" },
  { id: "64KiB", label: "64 KiB", path: "/large" },
];

export const CONNECTIONS = [1, 64];

export interface Cell {
  id: string;
  label: string;
  size: Size;
  connections: number;
}

export const CELLS: Cell[] = SIZES.flatMap((size) =>
  CONNECTIONS.map((connections) => ({
    id: `${size.id}-c${connections}`,
    label: `${size.label} responses, ${connections} connection${connections === 1 ? "" : "s"}`,
    size,
    connections,
  })),
);

export interface Profile {
  /** Every scenario runs once per cell per round; rounds are interleaved, the median is reported. */
  rounds: number;
  /** Measured seconds per run (wrk takes whole seconds). */
  durationS: number;
  /** Unmeasured seconds of the same load just before each measured run. */
  warmupS: number;
  /** Reload-time repetitions. */
  reloads: number;
  /** Seconds of load during the hot-swap test. */
  hotSwapS: number;
  /** Before each run, wait up to this long for other processes on the machine to go quiet. */
  quietWaitMs: number;
  /** Share of runs that may be measured again when other processes took over 0.25 CPU meanwhile. */
  retryBudget: number;
}

export const PROFILES: Record<"full" | "quick", Profile> = {
  // 12 scenarios x 4 cells x 3 rounds x 4 s = ~10 min once every filter exists.
  full: { rounds: 3, durationS: 3, warmupS: 1, reloads: 10, hotSwapS: 8, quietWaitMs: 5000, retryBudget: 0.25 },
  // Long enough to prove every path works; the numbers mean little (no warm-up, one 1 s sample).
  // No waiting for quiet and no retries either: a busy CI runner must not stretch it.
  quick: { rounds: 1, durationS: 1, warmupS: 0, reloads: 3, hotSwapS: 2, quietWaitMs: 0, retryBudget: 0 },
};
