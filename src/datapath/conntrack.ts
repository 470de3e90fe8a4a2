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
 * and `nfqlb conntrack` without a message): statistics, then one 64-byte
 * record per entry holding all a lookup, an insert and an eviction read
 * (hash, bucket link, the key, LRU links, last-seen time), then per entry the
 * remembered choice, then the buckets. The bench's new-connection traffic
 * makes every packet a miss + insert + eviction in a table far larger than
 * the caches: the cost is the cache lines touched, so the fields live where
 * they are used together (one line per entry on the miss path, where nine
 * parallel arrays touched nine). Entry and bucket links are stored as
 * index + 1, so a zero-filled buffer is an empty table and nothing needs
 * initialising. Nothing here allocates after construction; every operation
 * is O(1) amortised. One writer (the pipeline's thread); readers from another
 * thread may see an entry half written, which `peek` tolerates (it is for
 * inspection only).
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

/**
 * An entry's record, in 32-bit words: everything a lookup, an insert and an
 * eviction touch, in one 64-byte cache line. The bucket walk reads the hash
 * and the chain link first; a hash match compares the key next to them.
 */
const E_HASH = 0;
const E_CHAIN = 1; // next entry of the bucket (+1); of the free list when free
const E_KEY = 2; // KEY_LEN bytes
const E_PREV = E_KEY + KEY_LEN / 4; // LRU: older neighbour (+1)
const E_NEXT = E_PREV + 1; // LRU: newer neighbour (+1)
const E_SEEN = E_NEXT + 1; // last-seen time, a float64 (two words, 8-byte aligned)
const E_WORDS = 16;
const E_BYTES = 4 * E_WORDS;
// The remembered choice, four words per entry (one line holds four entries' choices): read on a hit, written on an insert.
const C_FWMARK = 0;
const C_SLOT = 1;
const C_SERIAL = 2;
const C_WORDS = 4;

/** Bytes per entry, bucket share included (stated at start). */
export const CT_ENTRY_BYTES = E_BYTES + 4 * C_WORDS + 2 * 4 /* two buckets */;

// Meta words (Int32): free list head, fresh entries handed out, LRU head/tail per list.
const M_FREE = 0;
const M_FRESH = 1;
const M_NEWEST = 2; // + list
const M_OLDEST = 4; // + list
const META_WORDS = 8;
/** Statistics, clock origin and meta, rounded up so that the records start on a cache line of the buffer. */
const HEADER_BYTES = 128;

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
  private readonly meta: Int32Array;
  /** The records (E_WORDS per entry), as words, as float64 (last-seen) and as bytes (the key's protocol). */
  private readonly words: Int32Array;
  private readonly seen: Float64Array;
  private readonly bytes: Uint8Array;
  private readonly choice: Int32Array;
  private readonly heads: Int32Array;
  /** Bucket of a hash: its top bits after a multiply (djb2's low bits alone crowd some buckets). */
  private readonly bucketShift: number;
  private readonly ttl = new Float64Array(2);
  /** Where loadEvictionLines() puts what it read, so the loads are not optimised away. */
  private readonly loaded = new Int32Array(1);

  /** Bytes a table of `capacity` entries takes (all of it in one buffer). */
  static bytes(capacity: number): number {
    const n = Math.max(1, Math.floor(capacity));
    return HEADER_BYTES + n * (E_BYTES + 4 * C_WORDS) + 4 * bucketsFor(n);
  }

  /**
   * A key (KEY_LEN bytes) as the words find() and insert() take. The
   * pipeline makes a view over its own key once instead; this copy is for
   * callers off the packet path.
   */
  static keyWords(key: Uint8Array): Int32Array {
    const words = new Int32Array(KEY_LEN / 4);
    new Uint8Array(words.buffer).set(key.subarray(0, KEY_LEN));
    return words;
  }

  /** A table over `buffer` (zero-filled when new; one made here by default). */
  constructor(capacity: number, options: ConnTableOptions, buffer?: ArrayBuffer | SharedArrayBuffer) {
    const n = Math.max(1, Math.floor(capacity));
    const size = ConnTable.bytes(n);
    this.buffer = buffer ?? new ArrayBuffer(size);
    if (this.buffer.byteLength < size) throw new RangeError(`a connection table of ${n} entries needs ${size} bytes`);
    this.capacity = n;
    const buckets = bucketsFor(n);
    this.bucketShift = 32 - Math.log2(buckets);
    this.stats = new Float64Array(this.buffer, 0, CT_STAT_FIELDS);
    this.clockOrigin = new Float64Array(this.buffer, 8 * CT_STAT_FIELDS, 1);
    this.meta = new Int32Array(this.buffer, 8 * (CT_STAT_FIELDS + 1), META_WORDS);
    let off = HEADER_BYTES;
    this.words = new Int32Array(this.buffer, off, n * E_WORDS);
    this.seen = new Float64Array(this.buffer, off, n * (E_WORDS / 2));
    this.bytes = new Uint8Array(this.buffer, off, n * E_BYTES);
    off += n * E_BYTES;
    this.choice = new Int32Array(this.buffer, off, n * C_WORDS);
    off += 4 * n * C_WORDS;
    this.heads = new Int32Array(this.buffer, off, buckets);
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

  /** The remembered fwmark of entry `e`. */
  fwmarkOf(e: number): number {
    return this.choice[e * C_WORDS + C_FWMARK];
  }

  /** The slot of its table entry `e`'s fwmark was in. */
  slotOf(e: number): number {
    return this.choice[e * C_WORDS + C_SLOT];
  }

  /** The serial of the Target entry `e` was decided over (as int32 bits: compare with `serial | 0`). */
  serialOf(e: number): number {
    return this.choice[e * C_WORDS + C_SERIAL];
  }

  /**
   * The entry of `key` (ConnTable.keyWords) whose full-key hash is `hash`, or
   * -1. An entry idle for longer than its list's ttl is removed (counted as
   * expired) and not returned.
   */
  find(key: Int32Array, hash: number, now: number): number {
    const h = hash | 0;
    const words = this.words;
    if (this.meta[M_FREE] === 0 && this.meta[M_FRESH] === this.capacity) this.loadEvictionLines();
    let link = this.heads[this.bucketOf(h)];
    while (link !== 0) {
      const e = link - 1;
      const w = e * E_WORDS;
      if (words[w + E_HASH] === h && this.sameKey(w, key)) {
        if (now - this.seen[(w + E_SEEN) >> 1] > this.ttl[this.listOf(e)]) {
          this.remove(e);
          this.stats[CT_EXPIRED]++;
          return -1;
        }
        return e;
      }
      link = words[w + E_CHAIN];
    }
    return -1;
  }

  /** Marks entry `e` used now (most recent of its list). */
  touch(e: number, now: number): void {
    this.seen[(e * E_WORDS + E_SEEN) >> 1] = now;
    const list = this.listOf(e);
    if (this.meta[M_NEWEST + list] === e + 1) return;
    this.unlinkLru(e, list);
    this.pushNewest(e, list);
  }

  /** Rewrites the choice of entry `e` (and touches it). */
  update(e: number, fwmark: number, slot: number, serial: number, now: number): void {
    this.setChoice(e, fwmark, slot, serial);
    this.touch(e, now);
  }

  /**
   * Remembers a new connection: takes a free entry, else an expired one,
   * else evicts the least recently used one (of the list whose oldest entry
   * is older). Returns the entry.
   */
  insert(key: Int32Array, hash: number, fwmark: number, slot: number, serial: number, now: number): number {
    let e = this.take(now);
    if (e < 0) {
      e = this.oldest();
      this.remove(e);
      this.stats[CT_EVICTED]++;
      e = this.take(now);
    }
    const h = hash | 0;
    const words = this.words;
    const w = e * E_WORDS;
    for (let i = 0; i < KEY_LEN / 4; i++) words[w + E_KEY + i] = key[i];
    words[w + E_HASH] = h;
    this.seen[(w + E_SEEN) >> 1] = now;
    // Appended at the end of its bucket (lines a find of this key just walked):
    // the oldest entry then tends to be first in its bucket, so evicting it
    // needs no walk to its predecessor.
    words[w + E_CHAIN] = 0;
    const b = this.bucketOf(h);
    let link = this.heads[b];
    if (link === 0) {
      this.heads[b] = e + 1;
    } else {
      let tail = (link - 1) * E_WORDS;
      while ((link = words[tail + E_CHAIN]) !== 0) tail = (link - 1) * E_WORDS;
      words[tail + E_CHAIN] = e + 1;
    }
    this.pushNewest(e, this.listOf(e));
    this.setChoice(e, fwmark, slot, serial);
    this.stats[CT_INSERTS]++;
    this.stats[CT_ENTRIES]++;
    return e;
  }

  /** Forgets entry `e`. */
  remove(e: number): void {
    const words = this.words;
    const w = e * E_WORDS;
    const b = this.bucketOf(words[w + E_HASH]);
    let link = this.heads[b];
    if (link === e + 1) {
      this.heads[b] = words[w + E_CHAIN];
    } else {
      while (link !== 0) {
        const p = (link - 1) * E_WORDS;
        if (words[p + E_CHAIN] === e + 1) {
          words[p + E_CHAIN] = words[w + E_CHAIN];
          break;
        }
        link = words[p + E_CHAIN];
      }
    }
    this.unlinkLru(e, this.listOf(e));
    words[w + E_CHAIN] = this.meta[M_FREE];
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
        if (link === 0 || now - this.lastSeen(link - 1) <= this.ttl[list]) break;
        this.remove(link - 1);
        this.stats[CT_EXPIRED]++;
        removed++;
      }
    }
    return removed;
  }

  /** Age (ms) and choice of the entry of `key` (KEY_LEN bytes), without touching or expiring it: for inspection, from any thread. */
  peek(key: Uint8Array, hash: number, now: number): { idleMs: number; fwmark: number; slot: number; expired: boolean } | null {
    const h = hash | 0;
    const words = ConnTable.keyWords(key);
    let link = this.heads[this.bucketOf(h)];
    for (let steps = 0; link !== 0 && link <= this.capacity && steps <= this.capacity; steps++) {
      const e = link - 1;
      const w = e * E_WORDS;
      if (this.words[w + E_HASH] === h && this.sameKey(w, words)) {
        const idleMs = now - this.lastSeen(e);
        return { idleMs, fwmark: this.fwmarkOf(e), slot: this.slotOf(e), expired: idleMs > this.ttl[this.listOf(e)] };
      }
      link = this.words[w + E_CHAIN];
    }
    return null;
  }

  /**
   * With the table full, a miss evicts the oldest entry: reading now the
   * lines that eviction and the insert will write (its bucket, the entry
   * after it, its choice) lets their cache misses overlap the walk of the new
   * key's bucket instead of following it, one after the other.
   */
  private loadEvictionLines(): void {
    const o = this.oldest();
    if (o < 0) return;
    const words = this.words;
    const w = o * E_WORDS;
    const n = words[w + E_NEXT];
    this.loaded[0] = this.heads[this.bucketOf(words[w + E_HASH])] + (n === 0 ? 0 : words[(n - 1) * E_WORDS + E_PREV]) + this.choice[o * C_WORDS];
  }

  private bucketOf(hash: number): number {
    return Math.imul(hash, 0x9e3779b1) >>> this.bucketShift;
  }

  private lastSeen(e: number): number {
    return this.seen[(e * E_WORDS + E_SEEN) >> 1];
  }

  /** The LRU list of entry `e`, from its key's protocol (in the record's line: nothing else to read or store). */
  private listOf(e: number): number {
    const at = e * E_BYTES + 4 * E_KEY + KEY_PROTO;
    const bytes = this.bytes;
    const proto = bytes[at] | (bytes[at + 1] << 8);
    return proto === IPPROTO_TCP || proto === IPPROTO_SCTP ? CT_LIST_STREAM : CT_LIST_OTHER;
  }

  private setChoice(e: number, fwmark: number, slot: number, serial: number): void {
    const c = e * C_WORDS;
    this.choice[c + C_FWMARK] = fwmark;
    this.choice[c + C_SLOT] = slot;
    this.choice[c + C_SERIAL] = serial | 0;
  }

  private sameKey(w: number, key: Int32Array): boolean {
    const words = this.words;
    for (let i = 0; i < KEY_LEN / 4; i++) if (words[w + E_KEY + i] !== key[i]) return false;
    return true;
  }

  /** A free entry (the free list, else a never-used one, else the oldest if expired), or -1. */
  private take(now: number): number {
    const free = this.meta[M_FREE];
    if (free !== 0) {
      this.meta[M_FREE] = this.words[(free - 1) * E_WORDS + E_CHAIN];
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
    return this.lastSeen(a - 1) <= this.lastSeen(b - 1) ? a - 1 : b - 1;
  }

  private pushNewest(e: number, list: number): void {
    const words = this.words;
    const w = e * E_WORDS;
    const newest = this.meta[M_NEWEST + list];
    words[w + E_PREV] = newest;
    words[w + E_NEXT] = 0;
    if (newest !== 0) words[(newest - 1) * E_WORDS + E_NEXT] = e + 1;
    else this.meta[M_OLDEST + list] = e + 1;
    this.meta[M_NEWEST + list] = e + 1;
  }

  private unlinkLru(e: number, list: number): void {
    const words = this.words;
    const w = e * E_WORDS;
    const p = words[w + E_PREV];
    const n = words[w + E_NEXT];
    if (p !== 0) words[(p - 1) * E_WORDS + E_NEXT] = n;
    else this.meta[M_OLDEST + list] = n;
    if (n !== 0) words[(n - 1) * E_WORDS + E_PREV] = p;
    else this.meta[M_NEWEST + list] = p;
    words[w + E_PREV] = 0;
    words[w + E_NEXT] = 0;
  }
}
