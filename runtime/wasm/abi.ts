// The host side of the filter ABI (version 1). Mirrors sdk/assembly/abi.ts; change both together.

export const ABI_VERSION = 1;

export const FIELD_METHOD = 0;
export const FIELD_PATH = 1;
export const FIELD_QUERY = 2;
export const FIELD_TARGET = 3;
export const FIELD_CLIENT_ADDRESS = 4;
export const FIELD_ROUTE = 5;
export const FIELD_PEER_IDENTITY = 6;
export const FIELD_REQUEST_ID = 7;
export const FIELD_FILTER_NAME = 8;
export const FIELD_UPSTREAM_ERROR = 9;
/** Numeric fields, for get_int / set_int. */
export const FIELD_ATTEMPT = 10;
export const FIELD_REPLAYABLE = 11;
export const FIELD_PER_TRY_TIMEOUT_MS = 12;

export const MAP_REQUEST = 0;
export const MAP_RESPONSE = 1;

export const PHASE_REQUEST = 1;
export const PHASE_RESPONSE = 2;

/** A phase export returns (argument << 2) | action. */
export const ACTION_CONTINUE = 0;
export const ACTION_RESPOND = 1;
export const ACTION_DELAY = 2;
export const ACTION_RETRY = 3;

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

export const METRIC_COUNTER = 0;
export const METRIC_HISTOGRAM = 1;
export const METRIC_GAUGE = 2;

export const KEY_SPKI = 0;
export const KEY_PEM = 1;
export const KEY_JWK = 2;

export const SIG_RS256 = 1;
export const SIG_PS256 = 2;
export const SIG_ES256 = 3;

/** The exported global the fuel meter (meter.ts) adds; the host sets it before every call. */
export const FUEL_GLOBAL = "__mesh_fuel";

/** Exports every filter module must have; the SDK's exports.ts provides them. */
export const REQUIRED_EXPORTS = [
  "memory",
  "mesh_start",
  "mesh_abi_version",
  "mesh_buffer",
  "mesh_configure",
  "mesh_phases",
  "mesh_body_limit",
  "mesh_on_request",
  "mesh_on_response",
] as const;

/** The only imports a filter may have: module "mesh" (below) and AssemblyScript's "env" helpers. */
export const HOST_IMPORTS: Record<string, readonly string[]> = {
  mesh: [
    "get", "set", "body", "header_get", "header_set", "header_add", "header_remove", "header_list",
    "respond_header", "respond", "log", "metric_define", "metric_record", "now_ms", "monotonic_ms",
    "random_fill", "sha256", "hmac_sha256", "key_import", "verify", "last_error", "set_error",
    "get_int", "set_int",
    "jwks_register", "jwks_version", "jwks_read", "jwks_refresh", "jwks_close",
  ],
  env: ["abort", "seed", "trace"],
};
