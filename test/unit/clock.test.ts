import { describe, expect, test } from "bun:test";
import { beginTurn, endTurn, now } from "../../runtime/platform/clock.ts";

/** Spins until performance.now() has moved past `t`. */
function after(t: number): void {
  while (performance.now() <= t) {}
}

describe("turn clock", () => {
  test("outside a turn, every reading is fresh", () => {
    const a = now();
    after(a);
    expect(now()).toBeGreaterThan(a);
  });

  test("within a turn, one reading; nested turns share it; the next turn reads again", () => {
    beginTurn();
    let first: number;
    try {
      first = now();
      after(first);
      expect(now()).toBe(first);
      beginTurn();
      try {
        expect(now()).toBe(first);
      } finally {
        endTurn();
      }
      // The inner turn ended, the outer one goes on: still the same reading.
      expect(now()).toBe(first);
    } finally {
      endTurn();
    }
    const outside = now();
    expect(outside).toBeGreaterThan(first);
    beginTurn();
    try {
      expect(now()).toBeGreaterThanOrEqual(outside);
      expect(now()).toBeGreaterThan(first);
    } finally {
      endTurn();
    }
  });

  test("a turn that reads nothing leaves the next one a fresh reading", () => {
    beginTurn();
    endTurn();
    const a = performance.now();
    after(a);
    beginTurn();
    try {
      expect(now()).toBeGreaterThan(a);
    } finally {
      endTurn();
    }
  });
});
