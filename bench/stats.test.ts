import { expect, test } from "bun:test";
import { median, percentile, rotate } from "./stats.ts";

test("median ignores missing values and averages the middle pair", () => {
  expect(median([3, null, 1, 2])).toBe(2);
  expect(median([4, 1, 3, 2])).toBe(2.5);
  expect(median([null, undefined])).toBeNull();
});

test("rotate starts each round at a different scenario and keeps all of them", () => {
  expect(rotate(["a", "b", "c"], 1)).toEqual(["b", "c", "a"]);
  expect(rotate(["a", "b", "c"], 4)).toEqual(["b", "c", "a"]);
  expect(rotate([], 2)).toEqual([]);
});

test("percentile uses the nearest rank", () => {
  expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90)).toBe(9);
  expect(percentile([], 50)).toBeNull();
});
