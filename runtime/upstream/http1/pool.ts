// Idle keep-alive connections per endpoint: last in, first out, so the warmest go first and the rest age out.

export interface Pooled {
  readonly key: string;
  /** Set by the pool on release; the time base is whatever `now` the caller passes. */
  idleSince: number;
}

/**
 * A pure container: it never reads a clock (callers pass `now`) and never touches a socket (it hands
 * connections it drops to `discard`).
 */
export class IdlePool<C extends Pooled> {
  private readonly stacks = new Map<string, C[]>();
  private count = 0;

  constructor(
    private readonly maxPerKey: number,
    private readonly idleTimeoutMs: number,
    private readonly discard: (conn: C) => void,
  ) {}

  /** Idle connections over all endpoints. */
  get size(): number {
    return this.count;
  }

  /** The most recently released connection for `key` that has not timed out, or null. */
  acquire(key: string, now: number): C | null {
    const stack = this.stacks.get(key);
    if (stack === undefined) return null;
    while (stack.length > 0) {
      const conn = stack.pop()!;
      this.count--;
      if (now - conn.idleSince < this.idleTimeoutMs) return conn;
      this.discard(conn);
    }
    return null;
  }

  /** Keeps `conn` for reuse. Returns false when its endpoint already has the maximum idle; the caller closes it. */
  release(conn: C, now: number): boolean {
    let stack = this.stacks.get(conn.key);
    if (stack === undefined) {
      stack = [];
      this.stacks.set(conn.key, stack);
    }
    if (stack.length >= this.maxPerKey) return false;
    conn.idleSince = now;
    stack.push(conn);
    this.count++;
    return true;
  }

  /** Forgets `conn`, e.g. because the upstream closed it while idle. Returns whether it was here. */
  remove(conn: C): boolean {
    const stack = this.stacks.get(conn.key);
    const at = stack === undefined ? -1 : stack.lastIndexOf(conn);
    if (at === -1) return false;
    stack!.splice(at, 1);
    this.count--;
    return true;
  }

  /** Discards connections idle for idleTimeoutMs or longer. The oldest sit at the bottom of each stack. */
  sweep(now: number): void {
    for (const [key, stack] of this.stacks) {
      let expired = 0;
      while (expired < stack.length && now - stack[expired].idleSince >= this.idleTimeoutMs) expired++;
      if (expired > 0) {
        const dropped = stack.splice(0, expired);
        this.count -= expired;
        for (const conn of dropped) this.discard(conn);
      }
      if (stack.length === 0) this.stacks.delete(key);
    }
  }

  /** Discards every idle connection. */
  clear(): void {
    const all = [...this.stacks.values()].flat();
    this.stacks.clear();
    this.count = 0;
    for (const conn of all) this.discard(conn);
  }
}
