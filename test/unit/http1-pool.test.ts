import { describe, expect, test } from "bun:test";
import { IdlePool } from "../../runtime/upstream/http1/pool.ts";

interface Conn {
  key: string;
  idleSince: number;
  name: string;
}

function setup(maxPerKey = 4, idleTimeoutMs = 1000) {
  const discarded: string[] = [];
  const pool = new IdlePool<Conn>(maxPerKey, idleTimeoutMs, (c) => discarded.push(c.name));
  const conn = (name: string, key = "a:1"): Conn => ({ key, idleSince: 0, name });
  return { pool, discarded, conn };
}

describe("IdlePool", () => {
  test("hands out the most recently released connection first", () => {
    const { pool, conn } = setup();
    pool.release(conn("old"), 0);
    pool.release(conn("new"), 1);
    expect(pool.acquire("a:1", 2)?.name).toBe("new");
    expect(pool.acquire("a:1", 2)?.name).toBe("old");
    expect(pool.acquire("a:1", 2)).toBeNull();
  });

  test("keeps endpoints apart", () => {
    const { pool, conn } = setup();
    pool.release(conn("a", "a:1"), 0);
    expect(pool.acquire("b:1", 0)).toBeNull();
    expect(pool.acquire("a:1", 0)?.name).toBe("a");
  });

  test("refuses more than the maximum idle per endpoint", () => {
    const { pool, conn } = setup(2);
    expect(pool.release(conn("1"), 0)).toBe(true);
    expect(pool.release(conn("2"), 0)).toBe(true);
    expect(pool.release(conn("3"), 0)).toBe(false);
    expect(pool.release(conn("other", "b:1"), 0)).toBe(true);
    expect(pool.size).toBe(3);
  });

  test("pools nothing when the maximum is 0", () => {
    const { pool, conn } = setup(0);
    expect(pool.release(conn("1"), 0)).toBe(false);
    expect(pool.size).toBe(0);
  });

  test("discards a connection that timed out instead of handing it out", () => {
    const { pool, discarded, conn } = setup(4, 1000);
    pool.release(conn("stale"), 0);
    expect(pool.acquire("a:1", 1000)).toBeNull();
    expect(discarded).toEqual(["stale"]);
    expect(pool.size).toBe(0);
  });

  test("sweeps only the connections idle for the timeout or longer", () => {
    const { pool, discarded, conn } = setup(4, 1000);
    pool.release(conn("first"), 0);
    pool.release(conn("second"), 500);
    pool.release(conn("third"), 900);
    pool.sweep(1499);
    expect(discarded).toEqual(["first"]);
    expect(pool.size).toBe(2);
    expect(pool.acquire("a:1", 1499)?.name).toBe("third");
  });

  test("forgets a connection that closed while idle", () => {
    const { pool, conn } = setup();
    const closed = conn("closed");
    pool.release(conn("open"), 0);
    pool.release(closed, 0);
    expect(pool.remove(closed)).toBe(true);
    expect(pool.remove(closed)).toBe(false);
    expect(pool.size).toBe(1);
    expect(pool.acquire("a:1", 0)?.name).toBe("open");
  });

  test("clear discards everything", () => {
    const { pool, discarded, conn } = setup();
    pool.release(conn("1"), 0);
    pool.release(conn("2", "b:1"), 0);
    pool.clear();
    expect(discarded.sort()).toEqual(["1", "2"]);
    expect(pool.size).toBe(0);
  });
});
