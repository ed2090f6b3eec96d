// The ABI between a filter and the meshwasm host, version 1: the host functions a filter imports.
// Mirrored on the host side by runtime/wasm/abi.ts; change both together and bump ABI_VERSION.
//
// Strings cross as UTF-16LE code units (AssemblyScript's own representation), so neither side
// transcodes: a string argument is (pointer, length in code units). Functions that return a string
// write it into a caller-provided buffer (pointer, capacity in code units) and return the length the
// value needs (-1 when absent); when that is larger than the capacity nothing useful was written and
// the caller grows its buffer and asks again. Bodies cross as raw bytes.

export const ABI_VERSION: i32 = 1;

// Request fields readable through `get`.
export const FIELD_METHOD: i32 = 0;
export const FIELD_PATH: i32 = 1;
export const FIELD_QUERY: i32 = 2;
export const FIELD_TARGET: i32 = 3;
export const FIELD_CLIENT_ADDRESS: i32 = 4;
export const FIELD_ROUTE: i32 = 5;
export const FIELD_PEER_IDENTITY: i32 = 6;
export const FIELD_REQUEST_ID: i32 = 7;
export const FIELD_FILTER_NAME: i32 = 8;
export const FIELD_UPSTREAM_ERROR: i32 = 9;
// Numeric request fields, read with `get_int` and (per-try timeout only) written with `set_int`.
export const FIELD_ATTEMPT: i32 = 10;
export const FIELD_REPLAYABLE: i32 = 11;
export const FIELD_PER_TRY_TIMEOUT_MS: i32 = 12;

// Header maps.
export const MAP_REQUEST: i32 = 0;
export const MAP_RESPONSE: i32 = 1;

// Phases a filter registers (mesh_phases bit mask).
export const PHASE_REQUEST: i32 = 1;
export const PHASE_RESPONSE: i32 = 2;

// Actions returned by mesh_on_request / mesh_on_response: (argument << 2) | action.
export const ACTION_CONTINUE: i32 = 0;
export const ACTION_RESPOND: i32 = 1;
export const ACTION_DELAY: i32 = 2;
export const ACTION_RETRY: i32 = 3;

export const LOG_DEBUG: i32 = 0;
export const LOG_INFO: i32 = 1;
export const LOG_WARN: i32 = 2;
export const LOG_ERROR: i32 = 3;

export const METRIC_COUNTER: i32 = 0;
export const METRIC_HISTOGRAM: i32 = 1;
export const METRIC_GAUGE: i32 = 2;

// @ts-ignore: decorator
@external("mesh", "get")
export declare function mesh_get(field: i32, buf: usize, cap: i32): i32;
// @ts-ignore: decorator
@external("mesh", "set")
export declare function mesh_set(field: i32, ptr: usize, len: i32): i32;
/** A numeric request field (FIELD_ATTEMPT...); -1 when there is no request. */
// @ts-ignore: decorator
@external("mesh", "get_int")
export declare function mesh_get_int(field: i32): i32;
/** Sets a writable numeric field (FIELD_PER_TRY_TIMEOUT_MS); 0 on success, -1 (see last_error) otherwise. */
// @ts-ignore: decorator
@external("mesh", "set_int")
export declare function mesh_set_int(field: i32, value: i32): i32;
// @ts-ignore: decorator
@external("mesh", "body")
export declare function mesh_body(buf: usize, cap: i32): i32;
// @ts-ignore: decorator
@external("mesh", "header_get")
export declare function mesh_header_get(map: i32, name: usize, nameLen: i32, buf: usize, cap: i32): i32;
// @ts-ignore: decorator
@external("mesh", "header_set")
export declare function mesh_header_set(map: i32, name: usize, nameLen: i32, value: usize, valueLen: i32): i32;
// @ts-ignore: decorator
@external("mesh", "header_add")
export declare function mesh_header_add(map: i32, name: usize, nameLen: i32, value: usize, valueLen: i32): i32;
// @ts-ignore: decorator
@external("mesh", "header_remove")
export declare function mesh_header_remove(map: i32, name: usize, nameLen: i32): i32;
/** Writes all headers of a map as: u32 count, count x (u32 nameLen, u32 valueLen), then the UTF-16 text. Returns bytes needed. */
// @ts-ignore: decorator
@external("mesh", "header_list")
export declare function mesh_header_list(map: i32, buf: usize, capBytes: i32): i32;
// @ts-ignore: decorator
@external("mesh", "respond_header")
export declare function mesh_respond_header(name: usize, nameLen: i32, value: usize, valueLen: i32): void;
// @ts-ignore: decorator
@external("mesh", "respond")
export declare function mesh_respond(status: i32, body: usize, bodyLen: i32): void;
// @ts-ignore: decorator
@external("mesh", "log")
export declare function mesh_log(level: i32, ptr: usize, len: i32): void;
// @ts-ignore: decorator
@external("mesh", "metric_define")
export declare function mesh_metric_define(kind: i32, name: usize, nameLen: i32, help: usize, helpLen: i32, buckets: usize, bucketCount: i32): i32;
// @ts-ignore: decorator
@external("mesh", "metric_record")
export declare function mesh_metric_record(id: i32, value: f64): void;
// @ts-ignore: decorator
@external("mesh", "now_ms")
export declare function mesh_now_ms(): f64;
// @ts-ignore: decorator
@external("mesh", "monotonic_ms")
export declare function mesh_monotonic_ms(): f64;
// @ts-ignore: decorator
@external("mesh", "random_fill")
export declare function mesh_random_fill(ptr: usize, len: i32): void;
// @ts-ignore: decorator
@external("mesh", "sha256")
export declare function mesh_sha256(data: usize, len: i32, out: usize): void;
// @ts-ignore: decorator
@external("mesh", "hmac_sha256")
export declare function mesh_hmac_sha256(key: usize, keyLen: i32, data: usize, dataLen: i32, out: usize): void;
// @ts-ignore: decorator
@external("mesh", "key_import")
export declare function mesh_key_import(format: i32, ptr: usize, len: i32): i32;
// @ts-ignore: decorator
@external("mesh", "verify")
export declare function mesh_verify(alg: i32, key: i32, data: usize, dataLen: i32, sig: usize, sigLen: i32): i32;
// @ts-ignore: decorator
@external("mesh", "last_error")
export declare function mesh_last_error(buf: usize, cap: i32): i32;
// @ts-ignore: decorator
@external("mesh", "set_error")
export declare function mesh_set_error(ptr: usize, len: i32): void;
