import { expect, test } from "bun:test";
import { startIdleGc } from "../../runtime/idle-gc.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("collects once after enough requests and a quiet interval, never while requests keep coming", async () => {
  let served = 0;
  let collections = 0;
  const gc = startIdleGc({ served: () => served, collect: () => collections++, everyMs: 50, minRequests: 100 });
  try {
    // Busy: several requests within every interval.
    const until = performance.now() + 300;
    while (performance.now() < until) {
      served += 10;
      await sleep(5);
    }
    expect(collections).toBe(0);
    // Quiet: one collection, and only one however long it stays quiet.
    await sleep(250);
    expect(collections).toBe(1);
    // A trickle below minRequests never triggers another.
    for (let i = 0; i < 5; i++) {
      served += 1;
      await sleep(60);
    }
    await sleep(150);
    expect(collections).toBe(1);
  } finally {
    gc.stop();
  }
});
