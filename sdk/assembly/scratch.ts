// One growable buffer the SDK lends to the host for results (strings, header lists, bodies).
// Kept in a global so the garbage collector never frees it while the host writes into it.
import { mesh_get, mesh_header_get, mesh_last_error } from "./abi";

let scratch = new ArrayBuffer(1024);

/** Pointer to a buffer of at least `bytes` bytes. Valid until the next call that reserves more. */
export function reserve(bytes: i32): usize {
  if (bytes > scratch.byteLength) {
    let size = scratch.byteLength;
    while (size < bytes) size <<= 1;
    scratch = new ArrayBuffer(size);
  }
  return changetype<usize>(scratch);
}

export function ptr(): usize {
  return changetype<usize>(scratch);
}

/** Capacity in UTF-16 code units. */
export function units(): i32 {
  return scratch.byteLength >>> 1;
}

export function bytes(): i32 {
  return scratch.byteLength;
}

function text(n: i32): string {
  return String.UTF16.decodeUnsafe(ptr(), <usize>n << 1);
}

// Each getter below asks once with the current buffer and, when the value is longer, once more
// with a buffer that fits: values are small, so the second call is rare.

/** A request field (abi FIELD_*), or null when the host has none. */
export function getField(field: i32): string | null {
  let n = mesh_get(field, ptr(), units());
  if (n < 0) return null;
  if (n > units()) {
    reserve(n << 1);
    n = mesh_get(field, ptr(), units());
    if (n < 0) return null;
  }
  return text(n);
}

export function getHeader(map: i32, name: string): string | null {
  let n = mesh_header_get(map, changetype<usize>(name), name.length, ptr(), units());
  if (n < 0) return null;
  if (n > units()) {
    reserve(n << 1);
    n = mesh_header_get(map, changetype<usize>(name), name.length, ptr(), units());
    if (n < 0) return null;
  }
  return text(n);
}

/** The message of the host's last failed call, "" if none. */
export function lastHostError(): string {
  let n = mesh_last_error(ptr(), units());
  if (n > units()) {
    reserve(n << 1);
    n = mesh_last_error(ptr(), units());
  }
  return n <= 0 ? "" : text(n);
}
