/**
 * The links of the fragment table's entries, as nfqlb's conntrack bucket
 * pool: entries 0..hashSize-1 are home slots, the rest overflow entries
 * shared by all home slots. A home slot heads a chain of overflow entries
 * (`next`); a free overflow entry is on the free list (also `next`); an
 * overflow entry in use is on the age list, oldest first, so that the oldest
 * can be reclaimed in O(1) when the pool is empty. Everything is an Int32Array
 * allocated here; nothing allocates afterwards.
 */

/** No entry. */
export const NONE = -1;

export class EntryChains {
  /** Home slot → first overflow entry; overflow entry → next in chain (or next free). */
  readonly next: Int32Array;
  /** Overflow entry → its home slot. */
  readonly homeOf: Int32Array;
  /** Age list of the overflow entries in use, oldest first (doubly linked). */
  private readonly older: Int32Array;
  private readonly newer: Int32Array;
  private oldest_ = NONE;
  private newest = NONE;
  private freeHead = NONE;

  /**
   * capacity entries, the first hashSize of them home slots; maxChain bounds
   * the walk of unchain() (a chain is never longer).
   */
  constructor(private readonly hashSize: number, capacity: number, private readonly maxChain: number) {
    this.next = new Int32Array(capacity).fill(NONE);
    this.homeOf = new Int32Array(capacity).fill(NONE);
    this.older = new Int32Array(capacity).fill(NONE);
    this.newer = new Int32Array(capacity).fill(NONE);
    for (let e = capacity - 1; e >= hashSize; e--) {
      this.next[e] = this.freeHead;
      this.freeHead = e;
    }
  }

  get byteLength(): number {
    return this.next.byteLength + this.homeOf.byteLength + this.older.byteLength + this.newer.byteLength;
  }

  /** The overflow entry used least recently, or NONE. */
  get oldest(): number {
    return this.oldest_;
  }

  /** A free overflow entry taken off the free list, or NONE (not yet on the age list). */
  takeFree(): number {
    const e = this.freeHead;
    if (e !== NONE) this.freeHead = this.next[e];
    return e;
  }

  /** Puts overflow entry e at the head of home slot `home`'s chain. */
  linkAtHead(home: number, e: number): void {
    this.next[e] = this.next[home];
    this.next[home] = e;
    this.homeOf[e] = home;
  }

  /** After unchain(): the links it followed to find the entry (the work done). */
  followed = 0;

  /**
   * Takes overflow entry e out of its home slot's chain. False when it is not
   * in that chain: the lists disagree, which cannot happen; the caller
   * refuses rather than corrupt.
   */
  unchain(e: number): boolean {
    let prev = this.homeOf[e];
    let steps = 0;
    let followed = 0;
    while (prev !== NONE && this.next[prev] !== e && steps++ <= this.maxChain) {
      prev = this.next[prev];
      followed++;
    }
    this.followed = followed;
    if (prev === NONE || this.next[prev] !== e) return false;
    this.next[prev] = this.next[e];
    return true;
  }

  /** Overflow entry e goes back to the free list (already out of its chain). */
  release(e: number): void {
    this.unlinkAge(e);
    this.homeOf[e] = NONE;
    this.next[e] = this.freeHead;
    this.freeHead = e;
  }

  /** Entry e was used now: an overflow entry becomes the newest. */
  touch(e: number): void {
    if (e >= this.hashSize) {
      this.unlinkAge(e);
      this.appendAge(e);
    }
  }

  /** Overflow entry e becomes the newest in use. */
  appendAge(e: number): void {
    this.older[e] = this.newest;
    this.newer[e] = NONE;
    if (this.newest !== NONE) this.newer[this.newest] = e;
    else this.oldest_ = e;
    this.newest = e;
  }

  /** Overflow entry e, which is on the age list, leaves it. */
  unlinkAge(e: number): void {
    const o = this.older[e];
    const n = this.newer[e];
    if (o !== NONE) this.newer[o] = n;
    else this.oldest_ = n;
    if (n !== NONE) this.older[n] = o;
    else this.newest = o;
    this.older[e] = NONE;
    this.newer[e] = NONE;
  }
}
