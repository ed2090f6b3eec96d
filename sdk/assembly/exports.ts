// The functions the host calls. Every filter re-exports them from its entry file:
//   export * from "@meshwasm/sdk/exports";
import { ABI_VERSION } from "./abi";
import { buffer, dispatchConfigure, dispatchRequest, dispatchResponse, phases, wantedBody } from "./filter";

/** Which ABI this filter speaks; the host refuses versions it does not know. */
export function mesh_abi_version(): i32 {
  return ABI_VERSION;
}

/** A buffer of at least `size` bytes for the host to write the config into. */
export function mesh_buffer(size: i32): usize {
  return buffer(size);
}

/** Config JSON (UTF-8, `len` bytes) is in the buffer. 0 = accepted, 1 = rejected (message via set_error). */
export function mesh_configure(len: i32): i32 {
  return dispatchConfigure(buffer(len), len);
}

/** Bit mask of the phases this filter registered handlers for (1 request, 2 response). */
export function mesh_phases(): i32 {
  return phases();
}

/** Request body bytes the filter wants to see (0 = none). */
export function mesh_body_limit(): i32 {
  return wantedBody();
}

export function mesh_on_request(): i32 {
  return dispatchRequest();
}

export function mesh_on_response(status: i32): i32 {
  return dispatchResponse(status);
}
