/**
 * The fragment table: a later IP fragment has no ports, so it must follow the
 * choice made for the first fragment of the same datagram. Entries are keyed
 * by (source, destination, fragment id) and live `ttlMs` after the first
 * fragment was stored (a repeated first fragment stores again).
 *
 * Layout, as nfqlb's conntrack table (ct + bucket pool): `hashSize` home slots
 * (--ft_size) and `extraBuckets` overflow entries (--ft_buckets) shared by all
 * home slots for hash collisions. Everything lives in typed arrays allocated
 * here; store and lookup allocate nothing.
 *
 * Bounded work whatever the history (the old open-addressing table never
 * freed a slot and, once full, scanned all of it on every store and miss):
 *  - a store or lookup reads one home slot and its chain, and a chain holds
 *    at most `maxChain` overflow entries, so no operation reads more than
 *    1 + maxChain entries (a store: twice that, for the clock sweep, + maxChain
 *    to reclaim an overflow entry);
 *  - expired entries are freed when their chain is touched, a clock sweep
 *    visits one more home slot per store, and when the overflow pool is empty
 *    the oldest overflow entry is reclaimed if it has expired (an age list:
 *    O(1)), so an abandoned chain never pins the pool;
 *  - the bucket hash is seeded per table, so a sender cannot aim a flood of
 *    fragment ids at one chain.
 * When no entry can be had (chain at its bound, or pool full of live
 * entries) the first fragment is refused (the caller drops it and counts
 * fragment_table_full), as nfqlb refuses an insert when its pool is empty.
 *
 * Lookup reports found / not found as its result and leaves the stored value
 * in `value`: no sentinel that a stored hash or fwmark could equal.
 *
 * Out-of-order later fragments (nfqlb with --tun): given a FragmentStore,
 * hold() creates the entry of a later fragment that comes first, in state
 * WAITING, and keeps a copy of it in the store, linked from the entry; the
 * first fragment's store() then sets the value and moves the copies to the
 * store's re-injection list. A copy that cannot be kept POISONS the entry (its
 * other copies are dropped; the datagram is lost, so its fragments are dropped
 * too, the first one included), as nfqlb does. Copies are dropped with their
 * entry when it expires. Without a store, later fragments only look up.
 */
import { KEY_ADDR_END } from './hashkey';
import { FSTORE_DISCARDED, FSTORE_EXPIRED, NO_SLOT, type FragmentStore } from './fragstore';

/** Chain bound: with random keys and a load ≤ 1 a chain this long practically never forms. */
export const DEFAULT_MAX_CHAIN = 16;

export interface FragmentTableOptions {
  /** Home slots (nfqlb --ft_size), ≥ 1. */
  hashSize: number;
  /** Overflow entries for collisions (nfqlb --ft_buckets), ≥ 0. */
  extraBuckets: number;
  /** How long an entry is valid after it was stored, ms. */
  ttlMs: number;
  /** At most this many overflow entries per home slot. */
  maxChain?: number;
  /** Hash seed; random when absent (tests and replay pass one to be reproducible). */
  seed?: number;
  /** Where copies of out-of-order later fragments are kept (--tun); none when absent. */
  store?: FragmentStore | null;
}

const NONE = -1;

/** Entry states: the first fragment's value is stored; later fragments came first; one of them was lost. */
const HAS_VALUE = 0;
const WAITING = 1;
const POISONED = 2;

/** hold() results. */
export const HOLD_FOUND = 0;
export const HOLD_KEPT = 1;
/** The datagram lost a fragment (this one could not be kept, or an earlier one): drop. */
export const HOLD_LOST = 2;
/** No entry could be had for the datagram: drop. */
export const HOLD_FULL = 3;

export class FragmentTable {
  readonly hashSize: number;
  readonly extraBuckets: number;
  /** hashSize + extraBuckets: the most datagrams the table can hold. */
  readonly capacity: number;
  readonly ttlMs: number;
  readonly maxChain: number;
  private readonly seed: number;

  private readonly used: Uint8Array;
  private readonly fingerprints: Int32Array;
  private readonly addrs: Uint8Array;
  private readonly ids: Uint32Array;
  private readonly values: Float64Array;
  private readonly born: Float64Array;
  /** Home slot → first overflow entry; overflow entry → next in chain (or next free). */
  private readonly next: Int32Array;
  /** Overflow entry → its home slot. */
  private readonly homeOf: Int32Array;
  /** Age list of the overflow entries in use, oldest first (doubly linked). */
  private readonly older: Int32Array;
  private readonly newer: Int32Array;
  private oldest = NONE;
  private newest = NONE;
  private freeHead = NONE;
  /** The home slot the clock sweep visits next. */
  private hand = 0;
  /** Live overflow entries in the chain last walked by find(). */
  private chainLength = 0;
  private readonly keeper: FragmentStore | null;
  /** Per entry: HAS_VALUE, WAITING or POISONED. */
  private readonly states: Uint8Array;
  /** Per entry: the first of its kept copies in the store, or NO_SLOT. */
  private readonly kept: Int32Array;

  /** After store() returned false: true when the datagram had lost a fragment, false when the table was full. */
  refusedLost = false;

  /** After lookup() returned true: the value stored for the datagram. */
  value = 0;

  /** Statistics (nfqlb's ctStats/fragStats names where there is one). */
  inserts = 0;
  /** Stores refused: chain at its bound or no overflow entry free. */
  rejected = 0;
  lookups = 0;
  hits = 0;
  misses = 0;
  /** Stores that found their home slot taken. */
  collisions = 0;
  /** Expired entries freed (nfqlb objGC). */
  expired = 0;
  bucketsAllocated = 0;
  bucketsUsed = 0;
  /** Entries read by store/lookup since construction: the work the table did. */
  probes = 0;

  constructor(options: FragmentTableOptions) {
    this.hashSize = Math.max(1, Math.floor(options.hashSize));
    this.extraBuckets = Math.max(0, Math.floor(options.extraBuckets));
    this.capacity = this.hashSize + this.extraBuckets;
    this.ttlMs = options.ttlMs;
    this.maxChain = Math.max(0, Math.floor(options.maxChain ?? DEFAULT_MAX_CHAIN));
    this.seed = (options.seed ?? Math.floor(Math.random() * 0x100000000)) | 0;
    const n = this.capacity;
    this.used = new Uint8Array(n);
    this.fingerprints = new Int32Array(n);
    this.addrs = new Uint8Array(n * KEY_ADDR_END);
    this.ids = new Uint32Array(n);
    this.values = new Float64Array(n);
    this.born = new Float64Array(n);
    this.next = new Int32Array(n).fill(NONE);
    this.homeOf = new Int32Array(n).fill(NONE);
    this.older = new Int32Array(n).fill(NONE);
    this.newer = new Int32Array(n).fill(NONE);
    this.keeper = options.store ?? null;
    this.states = new Uint8Array(n);
    this.kept = new Int32Array(n).fill(NO_SLOT);
    for (let e = n - 1; e >= this.hashSize; e--) {
      this.next[e] = this.freeHead;
      this.freeHead = e;
    }
  }

  /** Bytes held by the table; constant for its life. */
  get byteLength(): number {
    return (
      this.used.byteLength + this.fingerprints.byteLength + this.addrs.byteLength + this.ids.byteLength + this.values.byteLength +
      this.born.byteLength + this.next.byteLength + this.homeOf.byteLength + this.older.byteLength + this.newer.byteLength +
      this.states.byteLength + this.kept.byteLength
    );
  }

  /**
   * Remembers `value` for the datagram of a first fragment (addresses in
   * key[0..32), `fragId`). Returns false when no entry is free, or when the
   * datagram already lost a fragment (refusedLost tells which); the caller
   * drops the fragment. Copies kept for the datagram go to the store's
   * re-injection list.
   */
  store(key: Uint8Array, fragId: number, value: number, nowMs: number): boolean {
    this.inserts++;
    // Clock sweep, one home slot per store: frees what expired in buckets no
    // packet touches and moves their chains home, so the overflow pool holds
    // only what collisions need.
    this.find(this.hand, null, 0, 0, nowMs);
    this.hand = this.hand + 1 === this.hashSize ? 0 : this.hand + 1;
    const id = fragId >>> 0;
    const fp = this.fingerprint(key, id);
    const home = (fp >>> 0) % this.hashSize;
    let e = this.find(home, key, id, fp, nowMs);
    if (e !== NONE) {
      if (this.states[e] === POISONED) {
        this.refusedLost = true;
        return false;
      }
      this.values[e] = value;
      this.born[e] = nowMs;
      if (e >= this.hashSize) {
        this.unlinkAge(e);
        this.appendAge(e);
      }
      if (this.states[e] === WAITING) {
        this.states[e] = HAS_VALUE;
        if (this.kept[e] !== NO_SLOT) {
          (this.keeper as FragmentStore).queue(this.kept[e]);
          this.kept[e] = NO_SLOT;
        }
      }
      return true;
    }
    e = this.insert(home, key, id, fp, nowMs);
    if (e === NONE) {
      this.refusedLost = false;
      return false;
    }
    this.values[e] = value;
    return true;
  }

  /**
   * For a later fragment when a store is given: HOLD_FOUND with the value in
   * `value` when the first fragment was stored; else a copy of pkt[off,
   * off+len) is kept for re-injection (HOLD_KEPT), creating the entry if
   * needed; HOLD_LOST when the datagram lost a fragment (this one included,
   * when it cannot be kept: the entry is poisoned and its copies dropped);
   * HOLD_FULL when no entry is free.
   */
  hold(key: Uint8Array, fragId: number, nowMs: number, pkt: Uint8Array, off: number, len: number): number {
    const keeper = this.keeper as FragmentStore;
    this.lookups++;
    const id = fragId >>> 0;
    const fp = this.fingerprint(key, id);
    const home = (fp >>> 0) % this.hashSize;
    let e = this.find(home, key, id, fp, nowMs);
    if (e !== NONE) {
      const state = this.states[e];
      if (state === HAS_VALUE) {
        this.hits++;
        this.value = this.values[e];
        return HOLD_FOUND;
      }
      this.misses++;
      if (state === POISONED) return HOLD_LOST;
    } else {
      this.misses++;
      this.inserts++;
      // As store(): the clock sweep moves on with every insert.
      this.find(this.hand, null, 0, 0, nowMs);
      this.hand = this.hand + 1 === this.hashSize ? 0 : this.hand + 1;
      e = this.find(home, key, id, fp, nowMs);
      if (e === NONE) e = this.insert(home, key, id, fp, nowMs);
      if (e === NONE) return HOLD_FULL;
      this.states[e] = WAITING;
    }
    const head = keeper.keep(this.kept[e], pkt, off, len);
    if (head === NO_SLOT) {
      keeper.drop(this.kept[e], FSTORE_DISCARDED);
      this.kept[e] = NO_SLOT;
      this.states[e] = POISONED;
      return HOLD_LOST;
    }
    this.kept[e] = head;
    return HOLD_KEPT;
  }

  /**
   * A new entry for (key, id) in home slot `home` or its chain, with its
   * addresses, id and birth set and state HAS_VALUE; NONE when none is free
   * (counted as rejected). Prerequisite: find(home, key, ...) found none.
   */
  private insert(home: number, key: Uint8Array, id: number, fp: number, nowMs: number): number {
    let e: number;
    if (this.used[home] === 0) {
      e = home;
    } else {
      this.collisions++;
      if (this.chainLength >= this.maxChain) {
        this.rejected++;
        return NONE;
      }
      e = this.allocate(nowMs);
      if (e === NONE) {
        this.rejected++;
        return NONE;
      }
      // allocate() may have shortened this chain; link at its head either way.
      this.next[e] = this.next[home];
      this.next[home] = e;
      this.homeOf[e] = home;
    }
    this.used[e] = 1;
    this.fingerprints[e] = fp;
    const base = e * KEY_ADDR_END;
    for (let i = 0; i < KEY_ADDR_END; i++) this.addrs[base + i] = key[i];
    this.ids[e] = id;
    this.born[e] = nowMs;
    this.states[e] = HAS_VALUE;
    this.kept[e] = NO_SLOT;
    return e;
  }

  /**
   * True when a live value is stored for the datagram of a later fragment;
   * the value is then in `value`.
   */
  lookup(key: Uint8Array, fragId: number, nowMs: number): boolean {
    this.lookups++;
    const id = fragId >>> 0;
    const fp = this.fingerprint(key, id);
    const e = this.find((fp >>> 0) % this.hashSize, key, id, fp, nowMs);
    if (e === NONE || this.states[e] !== HAS_VALUE) {
      this.misses++;
      return false;
    }
    this.hits++;
    this.value = this.values[e];
    return true;
  }

  /**
   * Frees every expired entry and returns the number of live ones. Reads the
   * whole table: for statistics (nfqlb runs a full GC when its stats are
   * read), never per packet.
   */
  sweep(nowMs: number): number {
    let live = 0;
    for (let h = 0; h < this.hashSize; h++) {
      this.find(h, null, 0, 0, nowMs);
      live += this.chainLength + this.used[h];
    }
    return live;
  }

  private isExpired(e: number, nowMs: number): boolean {
    return nowMs - this.born[e] >= this.ttlMs;
  }

  /**
   * Walks home slot `home` and its chain, frees expired entries and returns
   * the live entry for (key, id), or NONE. Leaves the chain's live length in
   * chainLength. A null key matches nothing (sweep).
   */
  private find(home: number, key: Uint8Array | null, id: number, fp: number, nowMs: number): number {
    let found = NONE;
    this.probes++;
    if (this.used[home] === 1) {
      if (this.isExpired(home, nowMs)) {
        this.used[home] = 0;
        this.forget(home);
        this.expired++;
      } else if (key !== null && this.matches(home, key, id, fp)) {
        found = home;
      }
    }
    let chain = 0;
    let prev = home;
    let e = this.next[home];
    while (e !== NONE) {
      this.probes++;
      const after = this.next[e];
      if (this.isExpired(e, nowMs)) {
        this.next[prev] = after;
        this.forget(e);
        this.release(e);
        this.expired++;
      } else {
        if (found === NONE && key !== null && this.matches(e, key, id, fp)) found = e;
        chain++;
        prev = e;
      }
      e = after;
    }
    // The home slot is the oldest entry of its bucket and expires first; move
    // the head of the chain into it, or live entries pile up in the overflow
    // pool while home slots stand empty.
    e = this.next[home];
    if (this.used[home] === 0 && e !== NONE) {
      this.used[home] = 1;
      this.fingerprints[home] = this.fingerprints[e];
      const from = e * KEY_ADDR_END;
      const to = home * KEY_ADDR_END;
      for (let i = 0; i < KEY_ADDR_END; i++) this.addrs[to + i] = this.addrs[from + i];
      this.ids[home] = this.ids[e];
      this.values[home] = this.values[e];
      this.born[home] = this.born[e];
      this.states[home] = this.states[e];
      this.kept[home] = this.kept[e];
      this.kept[e] = NO_SLOT;
      this.next[home] = this.next[e];
      this.release(e);
      if (found === e) found = home;
      chain--;
    }
    this.chainLength = chain;
    return found;
  }

  /** An entry expired: the copies kept for it go (counted as expired). */
  private forget(e: number): void {
    const head = this.kept[e];
    if (head === NO_SLOT) return;
    this.kept[e] = NO_SLOT;
    (this.keeper as FragmentStore).drop(head, FSTORE_EXPIRED);
  }

  private matches(e: number, key: Uint8Array, id: number, fp: number): boolean {
    if (this.fingerprints[e] !== fp || this.ids[e] !== id) return false;
    const base = e * KEY_ADDR_END;
    for (let i = 0; i < KEY_ADDR_END; i++) if (this.addrs[base + i] !== key[i]) return false;
    return true;
  }

  /** A free overflow entry, or the oldest one if it has expired, or NONE. */
  private allocate(nowMs: number): number {
    let e = this.freeHead;
    if (e !== NONE) {
      this.freeHead = this.next[e];
    } else {
      e = this.oldest;
      this.probes++;
      if (e === NONE || !this.isExpired(e, nowMs)) return NONE;
      // Unlink it from the chain of the home slot it belongs to.
      let prev = this.homeOf[e];
      let steps = 0;
      while (prev !== NONE && this.next[prev] !== e && steps++ <= this.maxChain) {
        prev = this.next[prev];
        this.probes++;
      }
      // Not in its chain: the lists disagree, which cannot happen; refuse rather than corrupt.
      if (prev === NONE || this.next[prev] !== e) return NONE;
      this.next[prev] = this.next[e];
      this.unlinkAge(e);
      this.forget(e);
      this.expired++;
      this.bucketsUsed--;
    }
    this.appendAge(e);
    this.bucketsUsed++;
    this.bucketsAllocated++;
    this.used[e] = 1;
    return e;
  }

  private release(e: number): void {
    this.used[e] = 0;
    this.unlinkAge(e);
    this.homeOf[e] = NONE;
    this.next[e] = this.freeHead;
    this.freeHead = e;
    this.bucketsUsed--;
  }

  private appendAge(e: number): void {
    this.older[e] = this.newest;
    this.newer[e] = NONE;
    if (this.newest !== NONE) this.newer[this.newest] = e;
    else this.oldest = e;
    this.newest = e;
  }

  private unlinkAge(e: number): void {
    const o = this.older[e];
    const n = this.newer[e];
    if (o !== NONE) this.newer[o] = n;
    else this.oldest = n;
    if (n !== NONE) this.older[n] = o;
    else this.newest = o;
    this.older[e] = NONE;
    this.newer[e] = NONE;
  }

  /** Seeded 32-bit mix (murmur3 rounds) of the addresses and the id; also the home slot's hash. */
  private fingerprint(key: Uint8Array, id: number): number {
    let h = this.seed;
    for (let i = 0; i <= KEY_ADDR_END; i += 4) {
      let w = i < KEY_ADDR_END ? (key[i] << 24) | (key[i + 1] << 16) | (key[i + 2] << 8) | key[i + 3] : id | 0;
      w = Math.imul(w, 0xcc9e2d51);
      w = (w << 15) | (w >>> 17);
      w = Math.imul(w, 0x1b873593);
      h ^= w;
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h;
  }
}
