// What every peer (a proxy the load generator talks to) looks like to the orchestrator.
import type { Proc } from "./process.ts";

export interface PeerContext {
  /** A private directory for this peer's config, logs and pid files. */
  dir: string;
  upstreamPort: number;
  /** taskset CPU list for the peer, when pinning. */
  cpu?: string;
}

export interface Peer {
  /** Base URL the load generator hits; the scenario adds the path. */
  url: string;
  /** The process whose CPU and memory are measured; none for `direct`. */
  proc?: Proc;
  /** Admin API base URL, for meshwasm. */
  adminUrl?: string;
  /** The config file the peer was started with, for reload tests. */
  configFile?: string;
}

/** A peer could not start: `message` says so in one line, `detail` is the end of its log. */
export class PeerStartError extends Error {
  override name = "PeerStartError";
  constructor(
    message: string,
    readonly detail?: string,
  ) {
    super(message);
  }
}
