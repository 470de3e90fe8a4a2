/**
 * The fragment table: a later IP fragment has no ports, so it must follow the
 * choice made for the first fragment of the same datagram. Entries are keyed
 * by (source, destination, fragment id) and live until no fragment of their
 * datagram has been seen for more than `ttlMs` (nfqlb's --ft_ttl: its
 * conntrack entries expire `ttl` after they were last referred to), or, with
 * a reassembler (--reassembler=N), until every byte of the datagram has been
 * seen.
 *
 * Layout, as nfqlb's conntrack table (ct + bucket pool): `hashSize` home slots
 * (--ft_size) and `extraBuckets` overflow entries (--ft_buckets) shared by all
 * home slots for hash collisions. Everything lives in typed arrays allocated
 * at construction (the entries: entries.ts, their links: chains.ts); store
 * and lookup allocate nothing.
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
 * entry when it expires or is freed. Without a store, later fragments only
 * look up.
 */
import { FSTORE_DISCARDED, FSTORE_EXPIRED, NO_SLOT, type FragmentStore } from './store';
import { Reassembler, REASSEMBLY_COMPLETE } from './reassembler';
import { NONE } from './chains';
import { FragmentEntries, HAS_VALUE, POISONED, WAITING } from './entries';
import {
  FRAG_STATS_FIELDS, FS_ACTIVE, FS_BUCKETS_ALLOCATED, FS_BUCKETS_USED, FS_COLLISIONS, FS_EXPIRED, FS_FRAGS_ALLOCATED, FS_FRAGS_DISCARDED,
  FS_HITS, FS_INSERTS, FS_LOOKUPS, FS_MISSES, FS_PROBES, FS_REASSEMBLED, FS_REASSEMBLER_FULL, FS_REJECTED,
} from './tablestats';


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
  /**
   * Where to keep the statistics (FRAG_STATS_FIELDS doubles), e.g. a view
   * into a SharedArrayBuffer that another thread sums; a private array when absent.
   */
  stats?: Float64Array;
  /** Hole descriptors of the reassembly bookkeeping (--reassembler); 0: none. */
  reassemblerSize?: number;
  /** Where copies of out-of-order later fragments are kept (--tun); none when absent. */
  store?: FragmentStore | null;
}

/** hold() results. */
export const HOLD_FOUND = 0;
export const HOLD_KEPT = 1;
/** The datagram lost a fragment (this one could not be kept, or an earlier one): drop. */
export const HOLD_LOST = 2;
/** No entry could be had for the datagram: drop. */
export const HOLD_FULL = 3;

export class FragmentTable extends FragmentEntries {
  readonly ttlMs: number;
  /** The home slot the clock sweep visits next. */
  private hand = 0;
  /** Live overflow entries in the chain last walked by find(). */
  private chainLength = 0;
  private readonly reassembler: Reassembler | null;
  /** The entry the last successful store() or lookup() found, for fragmentSeen(); NONE after a free. */
  private lastEntry = NONE;
  private readonly keeper: FragmentStore | null;

  /** After store() returned false: true when the datagram had lost a fragment, false when the table was full. */
  refusedLost = false;

  /** After lookup() returned true: the value stored for the datagram. */
  value = 0;

  /** Statistics, indexed by the FS_* constants. */
  readonly stats: Float64Array;

  constructor(options: FragmentTableOptions) {
    super(options.hashSize, options.extraBuckets, options.maxChain ?? DEFAULT_MAX_CHAIN, options.seed);
    this.ttlMs = options.ttlMs;
    this.stats = options.stats ?? new Float64Array(FRAG_STATS_FIELDS);
    if (this.stats.length < FRAG_STATS_FIELDS) throw new RangeError(`fragment table statistics need ${FRAG_STATS_FIELDS} fields, got ${this.stats.length}`);
    const rsize = Math.max(0, Math.floor(options.reassemblerSize ?? 0));
    this.reassembler = rsize > 0 ? new Reassembler(rsize) : null;
    this.keeper = options.store ?? null;
  }

  /** Bytes held by the table; constant for its life. */
  override get byteLength(): number {
    return super.byteLength + (this.reassembler?.byteLength ?? 0);
  }

  // Statistics by name (the FS_* fields of `stats`).
  get inserts(): number { return this.stats[FS_INSERTS]; }
  get rejected(): number { return this.stats[FS_REJECTED]; }
  get lookups(): number { return this.stats[FS_LOOKUPS]; }
  get hits(): number { return this.stats[FS_HITS]; }
  get misses(): number { return this.stats[FS_MISSES]; }
  get collisions(): number { return this.stats[FS_COLLISIONS]; }
  get expired(): number { return this.stats[FS_EXPIRED]; }
  get bucketsAllocated(): number { return this.stats[FS_BUCKETS_ALLOCATED]; }
  get bucketsUsed(): number { return this.stats[FS_BUCKETS_USED]; }
  get active(): number { return this.stats[FS_ACTIVE]; }
  get probes(): number { return this.stats[FS_PROBES]; }
  get reassembled(): number { return this.stats[FS_REASSEMBLED]; }

  /**
   * Remembers `value` for the datagram of a first fragment (addresses in
   * key[0..32), `fragId`). Returns false when no entry is free, or when the
   * datagram already lost a fragment (refusedLost tells which); the caller
   * drops the fragment. Copies kept for the datagram go to the store's
   * re-injection list.
   */
  store(key: Uint8Array, fragId: number, value: number, nowMs: number): boolean {
    const stats = this.stats;
    stats[FS_LOOKUPS]++;
    this.lastEntry = NONE;
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
      this.touch(e, nowMs);
      if (this.states[e] === WAITING) {
        this.states[e] = HAS_VALUE;
        if (this.kept[e] !== NO_SLOT) {
          (this.keeper as FragmentStore).queue(this.kept[e]);
          this.kept[e] = NO_SLOT;
        }
      }
      this.lastEntry = e;
      return true;
    }
    e = this.insert(home, key, id, fp, nowMs);
    if (e === NONE) {
      this.refusedLost = false;
      return false;
    }
    this.values[e] = value;
    this.lastEntry = e;
    return true;
  }

  /**
   * For a later fragment when a store is given: HOLD_FOUND with the value in
   * `value` when the first fragment was stored; else a copy of pkt[off,
   * off+len) is kept for re-injection (HOLD_KEPT), creating the entry if
   * needed; HOLD_LOST when the datagram lost a fragment (this one included,
   * when it cannot be kept: the entry is poisoned and its copies dropped);
   * HOLD_FULL when no entry is free. As lookup(), a found entry is renewed.
   */
  hold(key: Uint8Array, fragId: number, nowMs: number, pkt: Uint8Array, off: number, len: number): number {
    const keeper = this.keeper as FragmentStore;
    const stats = this.stats;
    stats[FS_LOOKUPS]++;
    this.lastEntry = NONE;
    const id = fragId >>> 0;
    const fp = this.fingerprint(key, id);
    const home = (fp >>> 0) % this.hashSize;
    let e = this.find(home, key, id, fp, nowMs);
    if (e !== NONE) {
      this.touch(e, nowMs);
      const state = this.states[e];
      if (state === HAS_VALUE) {
        stats[FS_HITS]++;
        this.value = this.values[e];
        this.lastEntry = e;
        return HOLD_FOUND;
      }
      stats[FS_MISSES]++;
      if (state === POISONED) return HOLD_LOST;
    } else {
      stats[FS_MISSES]++;
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
      this.states[e] = POISONED;
      this.forget(e, FSTORE_DISCARDED);
      return HOLD_LOST;
    }
    this.kept[e] = head;
    stats[FS_FRAGS_ALLOCATED]++;
    return HOLD_KEPT;
  }

  /**
   * A new entry for (key, id) in home slot `home` or its chain, with its
   * addresses, id and lastSeen set and state HAS_VALUE; NONE when none is
   * free (counted as rejected). Prerequisite: find(home, key, ...) found none.
   */
  private insert(home: number, key: Uint8Array, id: number, fp: number, nowMs: number): number {
    const stats = this.stats;
    // As nfqlb: an insert is an attempt to add a datagram (refused ones included).
    stats[FS_INSERTS]++;
    let e: number;
    if (this.used[home] === 0) {
      e = home;
    } else {
      stats[FS_COLLISIONS]++;
      if (this.chainLength >= this.maxChain) {
        stats[FS_REJECTED]++;
        return NONE;
      }
      e = this.allocate(nowMs);
      if (e === NONE) {
        stats[FS_REJECTED]++;
        return NONE;
      }
      // allocate() may have shortened this chain; link at its head either way.
      this.chains.linkAtHead(home, e);
    }
    this.used[e] = 1;
    stats[FS_ACTIVE]++;
    this.setKey(e, key, id, fp);
    this.lastSeen[e] = nowMs;
    this.states[e] = HAS_VALUE;
    this.kept[e] = NO_SLOT;
    if (this.reassembler !== null) {
      const h = this.reassembler.begin();
      this.holes[e] = h;
      if (h === NONE) stats[FS_REASSEMBLER_FULL]++;
    }
    return e;
  }

  /**
   * True when a live value is stored for the datagram of a later fragment;
   * the value is then in `value`. A hit renews the entry's time to live.
   */
  lookup(key: Uint8Array, fragId: number, nowMs: number): boolean {
    const stats = this.stats;
    stats[FS_LOOKUPS]++;
    const id = fragId >>> 0;
    const fp = this.fingerprint(key, id);
    const e = this.find((fp >>> 0) % this.hashSize, key, id, fp, nowMs);
    if (e === NONE || this.states[e] !== HAS_VALUE) {
      stats[FS_MISSES]++;
      this.lastEntry = NONE;
      return false;
    }
    stats[FS_HITS]++;
    this.value = this.values[e];
    this.touch(e, nowMs);
    this.lastEntry = e;
    return true;
  }

  /**
   * Reassembly bookkeeping for the fragment just passed to a successful
   * store() or lookup(): it carried bytes [offset, offset+length) of its
   * datagram, `more` is its MF flag. When that completes the datagram, its
   * entry is freed at once (counted in FS_REASSEMBLED) and true is returned.
   * Without a reassembler, after a failed store/lookup, or with an impossible
   * length (< 0), nothing happens.
   */
  fragmentSeen(offset: number, length: number, more: number, nowMs: number): boolean {
    const e = this.lastEntry;
    const ra = this.reassembler;
    if (ra === null || e === NONE || length < 0 || this.holes[e] === NONE) return false;
    const rc = ra.add(this.holes, e, offset, length, more);
    if (rc === REASSEMBLY_COMPLETE) {
      this.stats[FS_REASSEMBLED]++;
      this.free(e, nowMs);
      return true;
    }
    if (this.holes[e] === NONE) this.stats[FS_REASSEMBLER_FULL]++;
    return false;
  }

  /**
   * Frees every expired entry and returns the number of live ones. Reads the
   * whole table: for statistics and housekeeping (nfqlb runs a full GC when
   * its stats are read), never per packet.
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
    // As nfqlb's conntrack: expired when unused for MORE than the ttl.
    return nowMs - this.lastSeen[e] > this.ttlMs;
  }

  /** The entry was used now: its ttl starts again (and it becomes the newest overflow entry). */
  private touch(e: number, nowMs: number): void {
    this.lastSeen[e] = nowMs;
    this.chains.touch(e);
  }

  /** Frees live entry `e` before its time (its datagram is complete). */
  private free(e: number, nowMs: number): void {
    this.lastEntry = NONE;
    // Its copies go with it, unsent. None are expected (a datagram completes
    // only after its first fragment released them), but a slot must not leak.
    this.forget(e, FSTORE_DISCARDED);
    this.stats[FS_ACTIVE]--;
    if (e < this.hashSize) {
      this.used[e] = 0;
      this.releaseHoles(e);
      // Pull the chain's head into the home slot (find() does that; the
      // chain is bounded, and nothing expires that was not expired anyway).
      this.find(e, null, 0, 0, nowMs);
      return;
    }
    if (!this.chains.unchain(e)) return; // Cannot happen: the lists agree.
    this.release(e);
  }

  private releaseHoles(e: number): void {
    if (this.reassembler !== null && this.holes[e] !== NONE) {
      this.reassembler.release(this.holes[e]);
      this.holes[e] = NONE;
    }
  }

  /**
   * Walks home slot `home` and its chain, frees expired entries and returns
   * the live entry for (key, id), or NONE. Leaves the chain's live length in
   * chainLength. A null key matches nothing (sweep).
   */
  private find(home: number, key: Uint8Array | null, id: number, fp: number, nowMs: number): number {
    const stats = this.stats;
    let found = NONE;
    stats[FS_PROBES]++;
    if (this.used[home] === 1) {
      if (this.isExpired(home, nowMs)) {
        this.used[home] = 0;
        this.releaseHoles(home);
        this.forget(home, FSTORE_EXPIRED);
        stats[FS_EXPIRED]++;
        stats[FS_ACTIVE]--;
      } else if (key !== null && this.matches(home, key, id, fp)) {
        found = home;
      }
    }
    let chain = 0;
    let prev = home;
    let e = this.next[home];
    while (e !== NONE) {
      stats[FS_PROBES]++;
      const after = this.next[e];
      if (this.isExpired(e, nowMs)) {
        this.next[prev] = after;
        this.forget(e, FSTORE_EXPIRED);
        this.release(e);
        stats[FS_EXPIRED]++;
        stats[FS_ACTIVE]--;
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
      this.moveToHome(e, home);
      this.next[home] = this.next[e];
      this.release(e);
      if (found === e) found = home;
      chain--;
    }
    this.chainLength = chain;
    return found;
  }

  /** Entry `e` goes (expired, or freed early): the copies kept for it are dropped, counted under `why` (FSTORE_EXPIRED, FSTORE_DISCARDED). */
  private forget(e: number, why: number): void {
    const head = this.kept[e];
    if (head === NO_SLOT) return;
    this.kept[e] = NO_SLOT;
    this.stats[FS_FRAGS_DISCARDED] += (this.keeper as FragmentStore).drop(head, why);
  }

  /** A free overflow entry, or the oldest one if it has expired, or NONE. */
  private allocate(nowMs: number): number {
    const chains = this.chains;
    let e = chains.takeFree();
    if (e === NONE) {
      e = chains.oldest;
      this.stats[FS_PROBES]++;
      if (e === NONE || !this.isExpired(e, nowMs)) return NONE;
      // Unlink it from the chain of the home slot it belongs to.
      const unchained = chains.unchain(e);
      this.stats[FS_PROBES] += chains.followed;
      // Not in its chain: the lists disagree, which cannot happen; refuse rather than corrupt.
      if (!unchained) return NONE;
      chains.unlinkAge(e);
      this.releaseHoles(e);
      this.forget(e, FSTORE_EXPIRED);
      this.stats[FS_EXPIRED]++;
      this.stats[FS_ACTIVE]--;
      this.stats[FS_BUCKETS_USED]--;
    }
    chains.appendAge(e);
    this.stats[FS_BUCKETS_USED]++;
    this.stats[FS_BUCKETS_ALLOCATED]++;
    this.used[e] = 1;
    return e;
  }

  private release(e: number): void {
    this.used[e] = 0;
    this.releaseHoles(e);
    this.chains.release(e);
    this.stats[FS_BUCKETS_USED]--;
  }
}
