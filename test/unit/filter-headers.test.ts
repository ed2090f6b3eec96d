import { describe, expect, test } from "bun:test";
import { LinesHeaders, ListHeaders, type FilterHeaders } from "../../runtime/proxy/filter-headers.ts";
import type { HeaderList } from "../../runtime/upstream/types.ts";

/** A parsed head as the parsers give it: names by line, values by index, the same as a list. */
function head(list: HeaderList) {
  let made = 0;
  return {
    names: list.map((h) => h[0]),
    value: (i: number) => list[i]![1],
    get headers() {
      made++;
      return list;
    },
    made: () => made,
  };
}

class WithExtra extends LinesHeaders {
  protected override extra(): HeaderList {
    return [["x-forwarded-for", "10.0.0.1"]];
  }
}

const base = (): HeaderList => [["host", "a"], ["connection", "x-hop"], ["x-hop", "1"], ["accept", "*/*"], ["cookie", "c1"], ["cookie", "c2"]];

describe("LinesHeaders", () => {
  test("reads see the lines but the dropped ones, then the extra ones, then appends; appends leave the lines alone", () => {
    const h = head(base());
    const v = new WithExtra(h, h, [1, 2], false);
    expect(v.get("host")).toBe("a");
    expect(v.get("x-hop")).toBeNull(); // dropped
    expect(v.get("cookie")).toBe("c1");
    expect(v.get("x-forwarded-for")).toBe("10.0.0.1");
    v.set("x-new", "1");
    v.set("x-new", "2"); // replaces its own append
    v.add("x-new", "3");
    expect(v.get("x-new")).toBe("2");
    expect(v.remove("x-absent")).toBe(0);
    expect(v.made).toBe(false);
    expect(v.appended).toEqual([["x-new", "2"], ["x-new", "3"]]);
    expect(h.made()).toBe(0); // the head's list was never asked for
  });

  test("a change to a line, a removal of one or a listing makes the whole list, in order, once", () => {
    for (const change of [
      (v: FilterHeaders) => v.set("cookie", "only"),
      (v: FilterHeaders) => v.remove("accept"),
      (v: FilterHeaders) => v.set("x-forwarded-for", "spoof"),
      (v: FilterHeaders) => v.list(),
    ]) {
      const h = head(base());
      const v = new WithExtra(h, h, [1, 2], false);
      v.add("x-early", "e");
      change(v);
      expect(v.made).toBe(true);
      const list = v.list();
      expect(list).toBe(v.list());
      expect(list.map((p) => p[0])).toEqual(
        expect.arrayContaining(["host", "x-early"]),
      );
      expect(list.some((p) => p[0] === "x-hop" || p[0] === "connection")).toBe(false);
      // Later operations work on that list.
      v.add("x-late", "l");
      expect(list[list.length - 1]).toEqual(["x-late", "l"]);
    }
    const h = head(base());
    const v = new WithExtra(h, h, [1, 2], false);
    v.add("x-early", "e");
    v.set("cookie", "only");
    expect(v.list()).toEqual([["host", "a"], ["accept", "*/*"], ["cookie", "only"], ["x-forwarded-for", "10.0.0.1"], ["x-early", "e"]]);
    // A request's list is new: the listener's own stays as parsed.
    expect(h.headers).toEqual(base());
  });

  test("in place (a response): the head's own list becomes the whole list", () => {
    const own = base();
    const h = head(own);
    const v = new LinesHeaders(h, h, null, true);
    v.add("x-a", "1");
    expect(v.remove("x-hop")).toBe(1);
    expect(v.list()).toBe(own);
    expect(own.map((p) => p[0])).toEqual(["host", "connection", "accept", "cookie", "cookie", "x-a"]);
  });
});

describe("ListHeaders", () => {
  test("set replaces the first and drops later ones; add appends; remove counts", () => {
    const list: HeaderList = [["a", "1"], ["b", "2"], ["a", "3"]];
    const v = new ListHeaders(list);
    v.set("a", "x");
    v.add("b", "4");
    expect(v.remove("b")).toBe(2);
    expect(v.get("a")).toBe("x");
    expect(list).toEqual([["a", "x"]]);
  });
});
