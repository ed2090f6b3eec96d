// Lines into the proxy's own log, tagged with the filter's name.
import { LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARN, mesh_log } from "./abi";

export namespace log {
  export function debug(msg: string): void {
    mesh_log(LOG_DEBUG, changetype<usize>(msg), msg.length);
  }
  export function info(msg: string): void {
    mesh_log(LOG_INFO, changetype<usize>(msg), msg.length);
  }
  export function warn(msg: string): void {
    mesh_log(LOG_WARN, changetype<usize>(msg), msg.length);
  }
  export function error(msg: string): void {
    mesh_log(LOG_ERROR, changetype<usize>(msg), msg.length);
  }
}
