// A cancel signal that is its own source, for the two the hot path makes: the listener's connection
// (aborted when the client goes) and the upstream client's timeout (aborted when it expires).
import type { CancelListener, CancelSignal } from "./types.ts";

/**
 * Subscribers are nearly always one (the request the signal guards), kept in a slot; more go in an
 * array, made only then. No AbortController or EventTarget: those cost microseconds per request.
 */
export class CancelSource implements CancelSignal {
  aborted = false;
  private listener: CancelListener | null = null;
  private more: CancelListener[] | null = null;

  addEventListener(_type: "abort", fn: CancelListener): void {
    if (this.listener === null) this.listener = fn;
    else (this.more ??= []).push(fn);
  }

  removeEventListener(_type: "abort", fn: CancelListener): void {
    if (this.listener === fn) {
      this.listener = null;
      return;
    }
    const i = this.more === null ? -1 : this.more.indexOf(fn);
    if (i !== -1) this.more!.splice(i, 1);
  }

  /** Aborts, once: every subscriber runs, and none is kept. Returns false when already aborted. */
  protected abort(): boolean {
    if (this.aborted) return false;
    this.aborted = true;
    const first = this.listener;
    const more = this.more;
    this.forgetListeners();
    if (first !== null) notify(first);
    if (more !== null) for (const fn of more) notify(fn);
    return true;
  }

  /** Drops every subscriber without aborting. */
  protected forgetListeners(): void {
    this.listener = null;
    this.more = null;
  }
}

function notify(fn: CancelListener): void {
  if (typeof fn === "function") fn();
  else fn.handleEvent();
}
