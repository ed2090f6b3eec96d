// SipHash-2-4 (Aumasson and Bernstein): a keyed 64-bit hash. With a secret random key, nobody who
// does not know the key can choose inputs that collide, so it is safe for keys clients pick.

let k0: u64 = 0;
let k1: u64 = 0;
let v0: u64 = 0;
let v1: u64 = 0;
let v2: u64 = 0;
let v3: u64 = 0;

/** Sets the 128-bit key (two little-endian words). */
export function sipKey(a: u64, b: u64): void {
  k0 = a;
  k1 = b;
}

// @ts-ignore: decorator
@inline function round(): void {
  v0 += v1; v1 = rotl<u64>(v1, 13); v1 ^= v0; v0 = rotl<u64>(v0, 32);
  v2 += v3; v3 = rotl<u64>(v3, 16); v3 ^= v2;
  v0 += v3; v3 = rotl<u64>(v3, 21); v3 ^= v0;
  v2 += v1; v1 = rotl<u64>(v1, 17); v1 ^= v2; v2 = rotl<u64>(v2, 32);
}

/** SipHash-2-4 of `len` bytes at `ptr`. */
export function sipHash(ptr: usize, len: usize): u64 {
  v0 = k0 ^ 0x736f6d6570736575;
  v1 = k1 ^ 0x646f72616e646f6d;
  v2 = k0 ^ 0x6c7967656e657261;
  v3 = k1 ^ 0x7465646279746573;
  const end = ptr + (len & ~(<usize>7));
  for (let p = ptr; p < end; p += 8) {
    const m = load<u64>(p);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  let b: u64 = (<u64>len) << 56;
  const left = len & 7;
  for (let i: usize = 0; i < left; i++) b |= (<u64>load<u8>(end + i)) << (<u64>i << 3);
  v3 ^= b;
  round();
  round();
  v0 ^= b;
  v2 ^= 0xff;
  round();
  round();
  round();
  round();
  return v0 ^ v1 ^ v2 ^ v3;
}

/** Hash of a string's UTF-16 code units. */
export function hashString(s: string): u64 {
  return sipHash(changetype<usize>(s), <usize>s.length << 1);
}
