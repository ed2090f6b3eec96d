// The proxy's configuration: its schema (valibot), its defaults, and the typed, frozen result.
import * as v from "valibot";

const name = v.pipe(
  v.string(),
  v.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "expected a name of letters, digits, '.', '_' or '-' (at most 63)"),
);
const port = v.pipe(v.number(), v.integer("expected an integer"), v.minValue(0), v.maxValue(65535));
const positiveMs = v.pipe(v.number(), v.integer("expected an integer (milliseconds)"), v.minValue(1));
const headerName = v.pipe(
  v.string(),
  v.regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "expected an HTTP header name (token characters only)"),
  v.transform((s) => s.toLowerCase()),
);
const headerValue = v.pipe(v.string(), v.regex(/^[^\r\n\0]*$/, "header values cannot contain CR, LF or NUL"));
const regexSource = v.pipe(
  v.string(),
  v.check((s) => {
    try {
      new RegExp(s);
      return true;
    } catch {
      return false;
    }
  }, "expected a valid regular expression"),
);
const path = v.pipe(v.string(), v.startsWith("/", 'expected a string starting with "/"'));

const PathMatch = v.union(
  [
    v.strictObject({ exact: path }),
    v.strictObject({ prefix: path }),
    v.strictObject({ regex: regexSource }),
  ],
  "expected one of { exact: \"/...\" }, { prefix: \"/...\" } or { regex: \"...\" }",
);

const HeaderMatch = v.pipe(
  v.strictObject({
    name: headerName,
    exact: v.optional(v.string()),
    prefix: v.optional(v.string()),
    regex: v.optional(regexSource),
    present: v.optional(v.boolean()),
    invert: v.optional(v.boolean(), false),
  }),
  v.check(
    (h) => [h.exact, h.prefix, h.regex, h.present].filter((x) => x !== undefined).length === 1,
    "expected exactly one of exact, prefix, regex or present",
  ),
);

const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"] as const;

const RouteMatch = v.strictObject({
  /** Exact host ("api.example.com"), a leading wildcard ("*.example.com"), or "*" for any. Port is ignored. */
  host: v.optional(v.union([v.string(), v.array(v.string())])),
  path: v.optional(PathMatch, { prefix: "/" }),
  methods: v.optional(v.array(v.picklist(METHODS, `expected one of ${METHODS.join(", ")}`))),
  headers: v.optional(v.array(HeaderMatch), []),
});

const HeaderMutation = v.strictObject({
  /** Replace any existing value. */
  set: v.optional(v.record(headerName, headerValue), {}),
  /** Append a value, keeping existing ones. */
  add: v.optional(v.record(headerName, headerValue), {}),
  remove: v.optional(v.array(headerName), []),
});

const Backend = v.strictObject({
  cluster: name,
  weight: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(1_000_000)), 1),
});

const FailurePolicy = v.picklist(["closed", "open"], 'expected "closed" or "open"');

/** One filter in a route's chain. The module is `<filterDir>/<module>.wasm`, hot-reloaded on change. */
const FilterRef = v.strictObject({
  name: name,
  /** Module name; defaults to `name`. Lets one module run twice in a chain with different configs. */
  module: v.optional(name),
  config: v.optional(v.unknown(), {}),
  failurePolicy: v.optional(FailurePolicy, "closed"),
  /** CPU time one call may take before the filter is stopped. */
  cpuBudgetMs: v.optional(v.pipe(v.number(), v.minValue(0.1), v.maxValue(10_000)), 5),
  /** Linear memory limit for one instance. */
  memoryLimitMb: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(4096)), 16),
  /** Largest request body the filter may ask to see. */
  maxBodyBytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0)), 65536),
});

const Route = v.strictObject({
  name: name,
  match: v.optional(RouteMatch, {}),
  /** Whole-request deadline up to the response head, ms. 0 disables. */
  timeoutMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0)), 15_000),
  /** Replace the matched path prefix (only for prefix matches) with this. */
  rewrite: v.optional(v.strictObject({ prefix: path })),
  requestHeaders: v.optional(HeaderMutation),
  responseHeaders: v.optional(HeaderMutation),
  /**
   * Protocols a client may switch to through this route (HTTP/1.1 Upgrade, then a byte tunnel once
   * the upstream answers 101). [] turns it off: the Upgrade header is then dropped like any hop-by-hop one.
   */
  upgrades: v.optional(v.array(v.pipe(v.string(), v.regex(/^[a-z0-9!#$%&'*+.^_`|~-]+$/, "expected a lower-case protocol token such as websocket"))), ["websocket"]),
  /** Shorthand for backends: [{ cluster, weight: 1 }]. */
  cluster: v.optional(name),
  backends: v.optional(v.pipe(v.array(Backend), v.minLength(1, "expected at least one backend"))),
  filters: v.optional(v.array(FilterRef), []),
});

const endpointAddress = v.pipe(
  v.string(),
  v.regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/, 'expected "host:port"'),
  v.check((s) => {
    const p = Number(s.slice(s.lastIndexOf(":") + 1));
    return p > 0 && p < 65536;
  }, "port must be between 1 and 65535"),
);

const Endpoint = v.union([
  endpointAddress,
  v.strictObject({
    address: endpointAddress,
    weight: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10_000)), 1),
  }),
]);

const HashOn = v.union(
  [
    v.strictObject({ header: headerName }),
    v.strictObject({ cookie: v.pipe(v.string(), v.minLength(1)) }),
    v.strictObject({ clientAddress: v.literal(true) }),
  ],
  "expected one of { header: NAME }, { cookie: NAME } or { clientAddress: true }",
);

const LbPolicy = v.picklist(
  ["round_robin", "least_request", "peak_ewma", "ring_hash"],
  'expected one of "round_robin", "least_request", "peak_ewma", "ring_hash"',
);

const Cluster = v.pipe(
  v.strictObject({
    name: name,
    endpoints: v.array(Endpoint),
    lb: v.optional(
      v.strictObject({
        policy: v.optional(LbPolicy, "round_robin"),
        hashOn: v.optional(HashOn),
        /** Peak-EWMA decay window. */
        ewmaDecayMs: v.optional(positiveMs, 10_000),
      }),
      {},
    ),
    connectTimeoutMs: v.optional(positiveMs, 1_000),
    /** Idle keep-alive connections kept per endpoint. */
    maxIdleConnections: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0)), 128),
    idleTimeoutMs: v.optional(positiveMs, 60_000),
  }),
  v.check((c) => c.lb.policy !== "ring_hash" || c.lb.hashOn !== undefined, "lb.hashOn is required when lb.policy is ring_hash"),
);

const Listener = v.strictObject({
  name: v.optional(name, "http"),
  address: v.optional(v.string(), "0.0.0.0"),
  port: v.optional(port, 8080),
});

export const ConfigSchema = v.strictObject({
  listeners: v.optional(v.pipe(v.array(Listener), v.minLength(1, "expected at least one listener")), [{}]),
  admin: v.optional(
    v.strictObject({
      enabled: v.optional(v.boolean(), true),
      address: v.optional(v.string(), "127.0.0.1"),
      port: v.optional(port, 9901),
    }),
    {},
  ),
  limits: v.optional(
    v.strictObject({
      /** Request line plus all header lines, in bytes. */
      maxRequestHeaderBytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(256), v.maxValue(1 << 20)), 16_384),
      /** Request body bytes; 0 means unlimited. */
      maxRequestBodyBytes: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0)), 0),
      /** A keep-alive client connection with no request for this long is closed. */
      idleTimeoutMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(86_400_000)), 60_000),
      /** A request head not complete this long after its first byte gets 408 and the connection closes. */
      requestHeadersTimeoutMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(3_600_000)), 10_000),
      /** A request body with no bytes arriving for this long (while the proxy reads it) gets 408; 0 disables. */
      requestBodyTimeoutMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(3_600_000)), 60_000),
      /** A switched connection (WebSocket) with no bytes either way for this long is closed; 0 disables. */
      tunnelIdleTimeoutMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(86_400_000)), 300_000),
    }),
    {},
  ),
  accessLog: v.optional(
    v.strictObject({
      enabled: v.optional(v.boolean(), true),
      /** "stdout", "stderr", or a file path (appended). */
      path: v.optional(v.string(), "stdout"),
    }),
    {},
  ),
  /** How long SIGTERM waits for in-flight requests before closing them. */
  drainTimeoutMs: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0)), 10_000),
  /** Directory of filter modules (`<name>.wasm`), watched for changes. Relative to the config file. */
  filterDir: v.optional(v.string()),
  routes: v.array(Route),
  clusters: v.array(Cluster),
});

export type ConfigInput = v.InferInput<typeof ConfigSchema>;
export type Config = v.InferOutput<typeof ConfigSchema>;
export type RouteConfig = Config["routes"][number];
export type ClusterConfig = Config["clusters"][number];
export type FilterRefConfig = RouteConfig["filters"][number];
export type HeaderMutationConfig = NonNullable<RouteConfig["requestHeaders"]>;
export type HeaderMatchConfig = NonNullable<RouteConfig["match"]["headers"]>[number];
export type PathMatchConfig = RouteConfig["match"]["path"];
export type HashOnConfig = NonNullable<ClusterConfig["lb"]["hashOn"]>;
export type LbPolicyName = ClusterConfig["lb"]["policy"];
