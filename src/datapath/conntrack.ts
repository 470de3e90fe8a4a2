/**
 * `--conntrack=N`: the connections the daemon has seen, and the target each
 * one went to, so that a new target (scale-out) does not move connections that
 * are already open elsewhere. nfqlb is stateless: Maglev moves about 1/(N+1)
 * of the table to a new target, and the connections in that share, open on
 * another target, are reset. The Maglev paper (§3.3) pairs consistent hashing
 * with exactly this local table.
 *
 * What an entry says: "the packets with this hash key (all 40 bytes,
 * compared, never a hash alone) went to slot S of target T with fwmark F".
 * The pipeline sends a known connection to F while slot S of T still holds F
 * (so deactivating a target frees its connections to move at once, and a
 * flow that now names another table, or a table opened again, is a new
 * Target whose serial no entry has); otherwise Maglev decides and the entry
 * is rewritten. Entries expire after an idle time per list (streams: TCP and
 * SCTP; others: UDP, ICMP...) and, when the table is full, the least recently
 * used one of the older list is evicted.
 *
 * Layout: everything lives in one ArrayBuffer (a SharedArrayBuffer with
 * packet threads, so the main thread can read a thread's table for metrics
 * and `nfqlb conntrack` without a message): statistics, then per entry the
 * last-seen time, hash, links and choice, then the keys. Entry and bucket
 * links are stored as index + 1, so a zero-filled buffer is an empty table
 * and nothing needs initialising (the OS hands the pages in lazily). Nothing
 * here allocates after construction; every operation is O(1) amortised.
 * One writer (the pipeline's thread); readers from another thread may see an
 * entry half written, which `peek` tolerates (it is for inspection only).
 */
import { KEY_LEN, KEY_PROTO, IPPROTO_SCTP, IPPROTO_TCP } from '../packet/hashkey';

/** Statistics, indexes into ConnTable.stats. */
export const CT_HITS = 0;
export const CT_MISSES = 1;
export const CT_INSERTS = 2;
export const CT_EXPIRED = 3;
export const CT_EVICTED = 4;
/** Hits whose remembered fwmark Maglev would not have chosen now: the connections the table kept in place. */
export const CT_SAVED = 5;
/** Known connections whose target had gone (deactivated, or the flow's table changed): decided again. */
export const CT_MOVED = 6;
export const CT_ENTRIES = 7;
export const CT_STAT_FIELDS = 8;
export const CT_STAT_NAMES = ['hits', 'misses', 'inserts', 'expired', 'evicted', 'saved', 'moved', 'entries'] as const;

/** The two LRU lists: streams (TCP, SCTP) and the rest; each has its own idle time. */
export const CT_LIST_STREAM = 0;
export const CT_LIST_OTHER = 1;

/** Bytes per entry, bucket share included (stated at start). */
export const CT_ENTRY_BYTES = 8 /* lastSeen */ + 4 * 7 /* hash, chain, prev, next, fwmark, slot, serial */ + 2 * 4 /* two buckets */ + 1 /* list */ + KEY_LEN;

// Meta words (Int32): free list head, fresh entries handed out, LRU head/tail per list.
const M_FREE = 0;
const M_FRESH = 1;
const M_NEWEST = 2; // + list
const M_OLDEST = 4; // + list
const META_WORDS = 8;

function bucketsFor(capacity: number): number {
  let b = 1;
  while (b < 2 * capacity) b *= 2;
  return b;
}

/** --conntrack and its idle times, as the daemon gets them. */
export interface ConnTrackOptions extends ConnTableOptions {
  /** Entries in all (split evenly over the packet threads). */
  capacity: number;
}

/** Entries each of `threads` tables gets for a total of `capacity`. */
export function entriesPerTable(capacity: number, threads: number): number {
  return Math.max(1, Math.ceil(capacity / Math.max(1, threads)));
}

/** The CT_* statistics of several tables summed into `out` (entries included). */
export function sumConnStats(tables: readonly ConnTable[], out: Float64Array): Float64Array {
  out.fill(0);
  for (const t of tables) for (let i = 0; i < CT_STAT_FIELDS; i++) out[i] += t.stats[i];
  return out;
}

export interface ConnTableOptions {
  /** Idle time of TCP and SCTP connections, ms. */
  streamTtlMs: number;
  /** Idle time of UDP, ICMP and other connections, ms. */
  otherTtlMs: number;
}

export class ConnTable {
  readonly capacity: number;
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  /** CT_* counters (entries is a gauge). */
  readonly stats: Float64Array;
  /**
   * [0]: performance.timeOrigin of the writer's thread. Times in the table
   * are that thread's performance.now(); a reader in another thread (whose
   * clock starts elsewhere) converts with it.
   */
  readonly clockOrigin: Float64Array;
  private readonly lastSeen: Float64Array;
  private readonly meta: Int32Array;
  private readonly hashes: Uint32Array;
  private readonly chain: Int32Array;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  /** The remembered choice: fwmark, slot of the table, serial of the Target. */
  readonly fwmarks: Int32Array;
  readonly slots: Int32Array;
  readonly serials: Uint32Array;
  private readonly heads: Int32Array;
  private readonly lists: Uint8Array;
  private readonly keys: Uint8Array;
  private readonly mask: number;
  private readonly ttl = new Float64Array(2);

  /** Bytes a table of `capacity` entries takes (all of it in one buffer). */
  static bytes(capacity: number): number {
    const n = Math.max(1, Math.floor(capacity));
    return 8 * (CT_STAT_FIELDS + 1 + n) + 4 * (META_WORDS + 7 * n + bucketsFor(n)) + n * (1 + KEY_LEN);
  }

  /** A table over `buffer` (zero-filled when new; one made here by default). */
  constructor(capacity: number, options: ConnTableOptions, buffer?: ArrayBuffer | SharedArrayBuffer) {
    const n = Math.max(1, Math.floor(capacity));
    const bytes = ConnTable.bytes(n);
    this.buffer = buffer ?? new ArrayBuffer(bytes);
    if (this.buffer.byteLength < bytes) throw new RangeError(`a connection table of ${n} entries needs ${bytes} bytes`);
    this.capacity = n;
    const buckets = bucketsFor(n);
    this.mask = buckets - 1;
    let off = 0;
    const f64 = (len: number): Float64Array => {
      const a = new Float64Array(this.buffer, off, len);
      off += 8 * len;
      return a;
    };
    const i32 = (len: number): Int32Array => {
      const a = new Int32Array(this.buffer, off, len);
      off += 4 * len;
      return a;
    };
    this.stats = f64(CT_STAT_FIELDS);
    this.clockOrigin = f64(1);
    this.lastSeen = f64(n);
    this.meta = i32(META_WORDS);
    this.hashes = new Uint32Array(this.buffer, off, n);
    off += 4 * n;
    this.chain = i32(n);
    this.prev = i32(n);
    this.next = i32(n);
    this.fwmarks = i32(n);
    this.slots = i32(n);
    this.serials = new Uint32Array(this.buffer, off, n);
    off += 4 * n;
    this.heads = i32(buckets);
    this.lists = new Uint8Array(this.buffer, off, n);
    off += n;
    this.keys = new Uint8Array(this.buffer, off, n * KEY_LEN);
    this.ttl[CT_LIST_STREAM] = options.streamTtlMs;
    this.ttl[CT_LIST_OTHER] = options.otherTtlMs;
  }

  /**
   * Touches every page of the buffer once, so the memory stated at start is
   * committed then, not page by page on the packet path (a first-touch page
   * fault per new connection cost about 3 µs per packet in the bench until
   * the table was warm). Call once, from the thread that made the buffer.
   */
  prefault(): void {
    const bytes = new Uint8Array(this.buffer);
    for (let i = 0; i < bytes.length; i += 4096) bytes[i] = 0;
  }

  /** Entries in use. */
  get entries(): number {
    return this.stats[CT_ENTRIES];
  }

  /**
   * The entry of `key` (KEY_LEN bytes at key[0..]) whose full-key hash is
   * `hash`, or -1. An entry idle for longer than its list's ttl is removed
   * (counted as expired) and not returned.
   */
  find(key: Uint8Array, hash: number, now: number): number {
    const h = hash >>> 0;
    let link = this.heads[h & this.mask];
    while (link !== 0) {
      const e = link - 1;
      if (this.hashes[e] === h && this.sameKey(e, key)) {
        if (now - this.lastSeen[e] > this.ttl[this.lists[e]]) {
          this.remove(e);
          this.stats[CT_EXPIRED]++;
          return -1;
        }
        return e;
      }
      link = this.chain[e];
    }
    return -1;
  }

  /** Marks entry `e` used now (most recent of its list). */
  touch(e: number, now: number): void {
    this.lastSeen[e] = now;
    const list = this.lists[e];
    if (this.meta[M_NEWEST + list] === e + 1) return;
    this.unlinkLru(e, list);
    this.pushNewest(e, list);
  }

  /** Rewrites the choice of entry `e` (and touches it). */
  update(e: number, fwmark: number, slot: number, serial: number, now: number): void {
    this.fwmarks[e] = fwmark;
    this.slots[e] = slot;
    this.serials[e] = serial;
    this.touch(e, now);
  }

  /**
   * Remembers a new connection: takes a free entry, else an expired one,
   * else evicts the least recently used one (of the list whose oldest entry
   * is older). Returns the entry.
   */
  insert(key: Uint8Array, hash: number, fwmark: number, slot: number, serial: number, now: number): number {
    let e = this.take(now);
    if (e < 0) {
      e = this.oldest();
      this.remove(e);
      this.stats[CT_EVICTED]++;
      e = this.take(now);
    }
    const h = hash >>> 0;
    const proto = key[KEY_PROTO] | (key[KEY_PROTO + 1] << 8);
    const list = proto === IPPROTO_TCP || proto === IPPROTO_SCTP ? CT_LIST_STREAM : CT_LIST_OTHER;
    const keys = this.keys;
    const base = e * KEY_LEN;
    for (let i = 0; i < KEY_LEN; i++) keys[base + i] = key[i]; // no subarray: nothing allocated per connection
    this.hashes[e] = h;
    this.lists[e] = list;
    this.fwmarks[e] = fwmark;
    this.slots[e] = slot;
    this.serials[e] = serial;
    this.lastSeen[e] = now;
    const b = h & this.mask;
    this.chain[e] = this.heads[b];
    this.heads[b] = e + 1;
    this.pushNewest(e, list);
    this.stats[CT_INSERTS]++;
    this.stats[CT_ENTRIES]++;
    return e;
  }

  /** Forgets entry `e`. */
  remove(e: number): void {
    const b = this.hashes[e] & this.mask;
    let link = this.heads[b];
    if (link === e + 1) {
      this.heads[b] = this.chain[e];
    } else {
      while (link !== 0) {
        const p = link - 1;
        if (this.chain[p] === e + 1) {
          this.chain[p] = this.chain[e];
          break;
        }
        link = this.chain[p];
      }
    }
    this.unlinkLru(e, this.lists[e]);
    this.chain[e] = this.meta[M_FREE];
    this.meta[M_FREE] = e + 1;
    this.stats[CT_ENTRIES]--;
  }

  /**
   * Removes up to `budget` expired entries, oldest first (the once-a-second
   * housekeeping, so the entry count falls back without traffic). Returns
   * how many it removed.
   */
  sweep(now: number, budget = 1 << 30): number {
    let removed = 0;
    for (let list = 0; list < 2; list++) {
      while (removed < budget) {
        const link = this.meta[M_OLDEST + list];
        if (link === 0 || now - this.lastSeen[link - 1] <= this.ttl[list]) break;
        this.remove(link - 1);
        this.stats[CT_EXPIRED]++;
        removed++;
      }
    }
    return removed;
  }

  /** Age (ms) and choice of the entry of `key`, without touching or expiring it: for inspection, from any thread. */
  peek(key: Uint8Array, hash: number, now: number): { idleMs: number; fwmark: number; slot: number; expired: boolean } | null {
    const h = hash >>> 0;
    let link = this.heads[h & this.mask];
    for (let steps = 0; link !== 0 && link <= this.capacity && steps <= this.capacity; steps++) {
      const e = link - 1;
      if (this.hashes[e] === h && this.sameKey(e, key)) {
        const idleMs = now - this.lastSeen[e];
        return { idleMs, fwmark: this.fwmarks[e], slot: this.slots[e], expired: idleMs > this.ttl[this.lists[e]] };
      }
      link = this.chain[e];
    }
    return null;
  }

  private sameKey(e: number, key: Uint8Array): boolean {
    const keys = this.keys;
    const base = e * KEY_LEN;
    for (let i = 0; i < KEY_LEN; i++) if (keys[base + i] !== key[i]) return false;
    return true;
  }

  /** A free entry (the free list, else a never-used one, else the oldest if expired), or -1. */
  private take(now: number): number {
    const free = this.meta[M_FREE];
    if (free !== 0) {
      this.meta[M_FREE] = this.chain[free - 1];
      return free - 1;
    }
    const fresh = this.meta[M_FRESH];
    if (fresh < this.capacity) {
      this.meta[M_FRESH] = fresh + 1;
      return fresh;
    }
    if (this.sweep(now, 1) === 1) return this.take(now);
    return -1;
  }

  /** The least recently used entry of the two lists (the one whose oldest is older). */
  private oldest(): number {
    const a = this.meta[M_OLDEST + CT_LIST_STREAM];
    const b = this.meta[M_OLDEST + CT_LIST_OTHER];
    if (a === 0) return b - 1;
    if (b === 0) return a - 1;
    return this.lastSeen[a - 1] <= this.lastSeen[b - 1] ? a - 1 : b - 1;
  }

  private pushNewest(e: number, list: number): void {
    const newest = this.meta[M_NEWEST + list];
    this.prev[e] = newest;
    this.next[e] = 0;
    if (newest !== 0) this.next[newest - 1] = e + 1;
    else this.meta[M_OLDEST + list] = e + 1;
    this.meta[M_NEWEST + list] = e + 1;
  }

  private unlinkLru(e: number, list: number): void {
    const p = this.prev[e];
    const n = this.next[e];
    if (p !== 0) this.next[p - 1] = n;
    else this.meta[M_OLDEST + list] = n;
    if (n !== 0) this.prev[n - 1] = p;
    else this.meta[M_NEWEST + list] = p;
    this.prev[e] = 0;
    this.next[e] = 0;
  }
}
