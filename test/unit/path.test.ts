import { describe, expect, test } from "bun:test";
import { hasHiddenDotSegments, removeDotSegments } from "../../runtime/proxy/path.ts";

describe("removeDotSegments", () => {
  test.each([
    ["/a/b/c", "/a/b/c"],
    ["/", "/"],
    ["/a/./b", "/a/b"],
    ["/a/../b", "/b"],
    ["/public/../admin/x", "/admin/x"],
    ["/a/b/..", "/a/"],
    ["/a/b/.", "/a/b/"],
    ["/..", "/"],
    ["/../../etc/passwd", "/etc/passwd"],
    ["/a/%2e%2e/b", "/b"],
    ["/a/%2E./b", "/b"],
    ["/a/.%2e/b", "/b"],
    ["/a/%2e/b", "/a/b"],
    ["/a/..b/c", "/a/..b/c"],
    ["/a/.hidden", "/a/.hidden"],
    ["/a%2Fb/../c", "/c"],
    ["/x%2F..%2Fy", "/x%2F..%2Fy"],
    ["/a//b/../c", "/a//c"],
    ["*", "*"],
  ])("%s -> %s", (input, want) => {
    expect(removeDotSegments(input)).toBe(want);
  });

  test("returns the same string when there is nothing to resolve", () => {
    const p = "/api/v1/items%2Fx";
    expect(removeDotSegments(p)).toBe(p);
  });
});

describe("hasHiddenDotSegments", () => {
  test.each([
    ["/r%2f..%2fonly", true],
    ["/r%2F..%2Fonly", true],
    ["/r%5c..%5conly", true],
    ["/r\\..\\x", true],
    ["/r/x%2F..", true],
    ["/r/%2e%2e%2fadmin", true],
    ["/api/v1/items%2Fx", false],
    ["/a%2Fb%2Fc", false],
    ["/a/b%20c", false],
    ["/a/..b%2fc", false],
    ["/plain/path", false],
    ["/public/..;/admin", true],
    ["/public/..;jsessionid=1/admin", true],
    ["/a;v=1/b", false],
    ["/a/b;x", false],
  ])("%s -> %s", (input, want) => {
    expect(hasHiddenDotSegments(input)).toBe(want);
  });
});
