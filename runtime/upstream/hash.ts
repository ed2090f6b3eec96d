// A small, pure, synchronous string hash for placing keys and virtual nodes on the hash ring.

/**
 * Hashes a string to an integer in [0, 2^53): two 32-bit multiply-xor lanes over the UTF-16 code
 * units, cross-mixed at the end with murmur3-style finalisers (the construction of bryc's cyrb53,
 * public domain). 53 bits keeps ring collisions negligible and fits a float64 exactly, so the ring
 * can live in a Float64Array and be compared with `<`.
 *
 * Hand-written rather than imported because it is fifteen lines, allocates nothing, and gives the
 * same answer on Bun and Deno: `Bun.hash` exists on one runtime only and `crypto.subtle` is async.
 * Not for security: an attacker who picks keys can aim them at one endpoint.
 *
 * @example
 * hash53("10.0.0.1:8080#0"); // the same number on every run, process and runtime
 */
export function hash53(s: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (h2 & 0x1fffff) + (h1 >>> 0);
}
