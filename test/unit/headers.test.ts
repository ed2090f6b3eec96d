// Header lines in wire form: dropping lines by index, and reading them back as pairs.
import { describe, expect, test } from "bun:test";
import { linePairs, withoutLines } from "../../runtime/proxy/headers.ts";

const LINES = "Host: a\r\nConnection: x\r\nX-A: 1\r\nX: 2\r\nX-Last: 3\r\n";

describe("withoutLines", () => {
  test("drops the lines at the given indices, first, middle and last alike", () => {
    expect(withoutLines(LINES, [])).toBe(LINES);
    expect(withoutLines(LINES, [0])).toBe("Connection: x\r\nX-A: 1\r\nX: 2\r\nX-Last: 3\r\n");
    expect(withoutLines(LINES, [1, 3])).toBe("Host: a\r\nX-A: 1\r\nX-Last: 3\r\n");
    expect(withoutLines(LINES, [1, 2])).toBe("Host: a\r\nX: 2\r\nX-Last: 3\r\n");
    expect(withoutLines(LINES, [4])).toBe("Host: a\r\nConnection: x\r\nX-A: 1\r\nX: 2\r\n");
    expect(withoutLines(LINES, [0, 1, 2, 3, 4])).toBe("");
  });
});

describe("linePairs", () => {
  test("lower-cases names and trims only spaces and tabs around values", () => {
    expect(linePairs("X-Case:  v \r\nY:\t\xa0w\xa0\t\r\nEmpty:\r\n")).toEqual([
      ["x-case", "v"],
      ["y", "\xa0w\xa0"],
      ["empty", ""],
    ]);
    expect(linePairs("")).toEqual([]);
  });
});
