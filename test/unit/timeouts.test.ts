import { describe, expect, test } from "bun:test";
import { TimerSignal } from "../../runtime/upstream/http1/timeouts.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function watched(ms: number, outer?: AbortSignal) {
  const s = new TimerSignal(ms, outer);
  const fired: number[] = [];
  const started = performance.now();
  s.addEventListener("abort", () => fired.push(performance.now() - started));
  return { s, fired };
}

describe("TimerSignal", () => {
  test("fires once, not before its time, and sets aborted", async () => {
    const { s, fired } = watched(40);
    await sleep(20);
    expect(fired).toEqual([]);
    await sleep(60);
    expect(fired.length).toBe(1);
    expect(fired[0]!).toBeGreaterThanOrEqual(39);
    expect(s.aborted).toBe(true);
  });

  test("signals of one length share a queue: cleared ones never fire, the others fire in order", async () => {
    const all = Array.from({ length: 50 }, () => watched(30));
    for (let i = 0; i < all.length; i += 2) all[i]!.s.clear(); // every other one finishes early
    await sleep(80);
    all.forEach((w, i) => expect(w.fired.length).toBe(i % 2 === 0 ? 0 : 1));
  });

  test("a later signal still fires after the queue's earlier entries were cleared", async () => {
    const first = watched(25);
    await sleep(10);
    const second = watched(25); // deadline 10 ms after the first's
    first.s.clear();
    await sleep(60);
    expect(first.fired).toEqual([]);
    expect(second.fired.length).toBe(1);
    expect(second.fired[0]!).toBeGreaterThanOrEqual(24);
  });

  test("an outer signal aborts it early, and clear() detaches from the outer signal", async () => {
    const ac = new AbortController();
    const { s, fired } = watched(10_000, ac.signal);
    ac.abort();
    expect(fired.length).toBe(1);
    expect(s.aborted).toBe(true);

    const ac2 = new AbortController();
    const other = watched(10_000, ac2.signal);
    other.s.clear();
    ac2.abort();
    expect(other.fired).toEqual([]);
  });

  test("a fractional length is rounded up, never down", async () => {
    const { fired } = watched(20.4);
    await sleep(60);
    expect(fired.length).toBe(1);
    expect(fired[0]!).toBeGreaterThanOrEqual(20.4);
  });

  test("past 64 distinct lengths, signals get their own timers and still fire", async () => {
    const many = Array.from({ length: 80 }, (_, i) => watched(100 + i));
    await sleep(260);
    expect(many.every((w) => w.fired.length === 1)).toBe(true);
  });
});
