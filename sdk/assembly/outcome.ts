// What a handler returns: what the proxy does next.
import { ACTION_CONTINUE, ACTION_DELAY, ACTION_RESPOND, ACTION_RETRY, mesh_respond, mesh_respond_header } from "./abi";
import { Header } from "./http";

const MAX_ARG: i32 = 0x1fffffff;

export class Outcome {
  constructor(readonly action: i32, readonly arg: i32) {}

  /** Go on: the next filter, then the upstream (request phase) or the client (response phase). */
  static continue(): Outcome {
    return CONTINUE;
  }

  /**
   * Answer now with this status, body and headers; later filters and the upstream are skipped.
   * From the response phase it replaces the upstream's response.
   */
  static respond(status: i32, body: string = "", headers: Header[] | null = null): Outcome {
    const bytes = String.UTF8.encode(body);
    return Outcome.respondBytes(status, Uint8Array.wrap(bytes), headers);
  }

  static respondBytes(status: i32, body: Uint8Array, headers: Header[] | null = null): Outcome {
    if (headers !== null) {
      for (let i = 0; i < headers.length; i++) {
        const h = headers[i];
        mesh_respond_header(changetype<usize>(h.name), h.name.length, changetype<usize>(h.value), h.value.length);
      }
    }
    mesh_respond(status, body.dataStart, body.byteLength);
    return RESPOND;
  }

  /** Request phase: hold the request `ms` milliseconds, then go on (fault injection, pacing). */
  static delay(ms: i32): Outcome {
    return new Outcome(ACTION_DELAY, clampArg(ms));
  }

  /**
   * Response phase: drop this response and send the request again after `delayMs`, with the request
   * headers as the filters left them. Ignored when the request is not `replayable`, after 10
   * attempts, or when the route timeout would elapse during the delay.
   */
  static retry(delayMs: i32): Outcome {
    return new Outcome(ACTION_RETRY, clampArg(delayMs));
  }

  /** The i32 the phase export returns to the host. */
  encode(): i32 {
    return (this.arg << 2) | this.action;
  }
}

function clampArg(ms: i32): i32 {
  return ms < 0 ? 0 : ms > MAX_ARG ? MAX_ARG : ms;
}

const CONTINUE = new Outcome(ACTION_CONTINUE, 0);
const RESPOND = new Outcome(ACTION_RESPOND, 0);
