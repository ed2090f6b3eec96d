// The buckets, one per key, in a table whose memory is allocated once, for `capacity` keys.
//
// Keys are stored as 64-bit keyed hashes (see siphash.ts), so a key costs the same whatever its
// length. Nothing is allocated per request and no request pays for a rehash or a resize: the filter
// has a CPU budget of a few milliseconds per call, and an O(keys) step in one call would exceed it.
//
// - Slots hold a bucket (key hash, tokens, last update) and sit on a doubly linked list in order of
//   use: `head` is the most recently used, `tail` the least. Free slots are chained through `next`.
// - An open-addressing index (linear probing, at most half full) maps a hash to its slot. Removal
//   shifts the following entries back instead of leaving tombstones, so lookups never slow down.

const NONE: i32 = -1;

function indexSize(capacity: i32): i32 {
  let n = 16;
  while (n < capacity * 2) n <<= 1;
  return n;
}

export class BucketTable {
  readonly capacity: i32;
  readonly tokens: StaticArray<f64>;
  readonly updated: StaticArray<f64>;
  private readonly hashes: StaticArray<u64>;
  private readonly prev: StaticArray<i32>;
  private readonly next: StaticArray<i32>;
  /** Slot + 1 per index position; 0 is empty. */
  private readonly index: StaticArray<i32>;
  private readonly mask: i32;
  private head: i32 = NONE;
  private tail: i32 = NONE;
  private free: i32 = NONE;
  /** Slots never used yet start here. */
  private fresh: i32 = 0;
  private count: i32 = 0;

  constructor(capacity: i32) {
    this.capacity = capacity;
    this.tokens = new StaticArray<f64>(capacity);
    this.updated = new StaticArray<f64>(capacity);
    this.hashes = new StaticArray<u64>(capacity);
    this.prev = new StaticArray<i32>(capacity);
    this.next = new StaticArray<i32>(capacity);
    const n = indexSize(capacity);
    this.index = new StaticArray<i32>(n);
    this.mask = n - 1;
  }

  /** Bytes of memory a table of `capacity` keys takes. */
  static bytesFor(capacity: i32): i32 {
    return capacity * 32 + indexSize(capacity) * 4;
  }

  get size(): i32 {
    return this.count;
  }

  get full(): bool {
    return this.count >= this.capacity;
  }

  /** The least recently used slot, or -1 when empty. */
  get oldest(): i32 {
    return this.tail;
  }

  private home(h: u64): i32 {
    return <i32>(h ^ (h >> 32)) & this.mask;
  }

  /** Index position holding `h`, or -1. */
  private position(h: u64): i32 {
    // The index is at most half full, so a probe always reaches an empty position.
    let i = this.home(h);
    let s = unchecked(this.index[i]);
    while (s != 0) {
      if (unchecked(this.hashes[s - 1]) == h) return i;
      i = (i + 1) & this.mask;
      s = unchecked(this.index[i]);
    }
    return NONE;
  }

  /** The slot of the key with hash `h`, or -1. Does not change the order. */
  find(h: u64): i32 {
    const i = this.position(h);
    return i < 0 ? NONE : unchecked(this.index[i]) - 1;
  }

  /** Marks a slot as the most recently used. */
  touch(slot: i32): void {
    if (slot == this.head) return;
    this.unlink(slot);
    this.pushHead(slot);
  }

  /** Adds a key (absent; the table not full) with a bucket; returns its slot, now the most recent. */
  insert(h: u64, tokens: f64, now: f64): i32 {
    assert(this.count < this.capacity, "bucket table is full");
    let slot = this.free;
    if (slot != NONE) this.free = unchecked(this.next[slot]);
    else slot = this.fresh++;
    unchecked((this.hashes[slot] = h));
    unchecked((this.tokens[slot] = tokens));
    unchecked((this.updated[slot] = now));
    let i = this.home(h);
    while (unchecked(this.index[i]) != 0) i = (i + 1) & this.mask;
    unchecked((this.index[i] = slot + 1));
    this.pushHead(slot);
    this.count++;
    return slot;
  }

  /** Removes a slot and its key. */
  remove(slot: i32): void {
    let i = this.position(unchecked(this.hashes[slot]));
    assert(i >= 0, "bucket table index lost a slot");
    // Backward-shift deletion: move later entries of the probe run into the hole when their home
    // position does not lie cyclically in (hole, their position].
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      const s = unchecked(this.index[j]);
      if (s == 0) break;
      const k = this.home(unchecked(this.hashes[s - 1]));
      const stays = i <= j ? i < k && k <= j : i < k || k <= j;
      if (!stays) {
        unchecked((this.index[i] = s));
        i = j;
      }
    }
    unchecked((this.index[i] = 0));
    this.unlink(slot);
    unchecked((this.next[slot] = this.free));
    this.free = slot;
    this.count--;
  }

  private unlink(slot: i32): void {
    const p = unchecked(this.prev[slot]);
    const n = unchecked(this.next[slot]);
    if (p != NONE) unchecked((this.next[p] = n));
    else this.head = n;
    if (n != NONE) unchecked((this.prev[n] = p));
    else this.tail = p;
  }

  private pushHead(slot: i32): void {
    unchecked((this.prev[slot] = NONE));
    unchecked((this.next[slot] = this.head));
    if (this.head != NONE) unchecked((this.prev[this.head] = slot));
    this.head = slot;
    if (this.tail == NONE) this.tail = slot;
  }
}
