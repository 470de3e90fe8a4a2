/**
 * Hot-path counters: what the daemon bumps per packet or per batch, and what
 * src/services/metrics.ts reads when Prometheus scrapes.
 *
 * Why not prom-client directly: a prom-client `inc(labels)` hashes the label
 * object and validates it on every call — fine for a web app, too much per
 * packet. These classes are plain typed-array arithmetic; metrics.ts folds them
 * into prom-client at scrape time, so the packet path pays for a counter only
 * what an array store costs.
 *
 * Everything here is single-threaded (one event loop): no atomics needed.
 */

// ---------------------------------------------------------------------------
// FwmarkCounter

/** Smallest table; a power of two so a slot is `hash & mask`. */
const FWMARK_MIN_CAPACITY = 16;

/**
 * Packets per fwmark (or any int32 key), for `nfqlb_target_packets_total{target,fwmark}`.
 *
 * Contract:
 * - `add(fwmark, n)` adds n (default 1) to the count of `fwmark`. Every int32
 *   is a valid key, 0 and negative ones included (nfqlb stores fwmarks as
 *   int32; -1 means "no target"). A key outside int32 is reduced with `| 0`,
 *   the same way a store into an Int32Array would, so it is counted under the
 *   int32 it wraps to. `n` should be a non-negative finite number; the counter
 *   does not check (that would cost on every packet).
 * - `add()` does not allocate, except when a new key makes the table more
 *   than half full: then the arrays double (a one-off O(capacity) copy). The
 *   number of distinct fwmarks is the number of targets ever active (tens to a
 *   few hundred), so after warm-up this never happens again. Pass the expected
 *   count to the constructor to skip even the warm-up growth.
 * - Keys are never removed: a Prometheus counter must not go away or go down
 *   while the process lives.
 * - `forEach` visits every key once, in no particular order; do not call
 *   `add` from inside the callback (a growth would reorder the slots).
 */
export class FwmarkCounter {
  /** Slot keys; meaningful only where `used[slot]` is 1 (0 is a valid key, so no sentinel). */
  private keys: Int32Array;
  /** Counts as doubles: exact up to 2^53, which no packet counter reaches. */
  private counts: Float64Array;
  private used: Uint8Array;
  private mask: number;
  private size_ = 0;

  /** `expected`: distinct keys to hold without growing (rounded up to a power of two, doubled). */
  constructor(expected = 8) {
    let cap = FWMARK_MIN_CAPACITY;
    while (cap < expected * 2) cap *= 2;
    this.keys = new Int32Array(cap);
    this.counts = new Float64Array(cap);
    this.used = new Uint8Array(cap);
    this.mask = cap - 1;
  }

  /** Number of distinct keys counted so far. */
  get size(): number {
    return this.size_;
  }

  /** Slots in the table (grows by doubling); exposed for tests. */
  get capacity(): number {
    return this.mask + 1;
  }

  add(fwmark: number, n = 1): void {
    const key = fwmark | 0;
    const mask = this.mask;
    // Fibonacci hashing: fwmarks are often small consecutive numbers, and a
    // multiplicative hash spreads them over the whole table.
    let slot = Math.imul(key, 0x9e3779b1) & mask;
    // Linear probing; terminates because the table is never more than half full.
    while (this.used[slot] === 1) {
      if (this.keys[slot] === key) {
        this.counts[slot] += n;
        return;
      }
      slot = (slot + 1) & mask;
    }
    if ((this.size_ + 1) * 2 > mask + 1) {
      this.grow();
      this.add(key, n);
      return;
    }
    this.used[slot] = 1;
    this.keys[slot] = key;
    this.counts[slot] = n;
    this.size_++;
  }

  /** The count of `fwmark` (0 when never added). */
  get(fwmark: number): number {
    const key = fwmark | 0;
    const mask = this.mask;
    let slot = Math.imul(key, 0x9e3779b1) & mask;
    while (this.used[slot] === 1) {
      if (this.keys[slot] === key) return this.counts[slot];
      slot = (slot + 1) & mask;
    }
    return 0;
  }

  forEach(cb: (fwmark: number, count: number) => void): void {
    const used = this.used;
    for (let slot = 0; slot < used.length; slot++) {
      if (used[slot] === 1) cb(this.keys[slot], this.counts[slot]);
    }
  }

  /** The rare allocation: doubles the arrays and re-inserts every key. */
  private grow(): void {
    const oldKeys = this.keys;
    const oldCounts = this.counts;
    const oldUsed = this.used;
    const cap = (this.mask + 1) * 2;
    this.keys = new Int32Array(cap);
    this.counts = new Float64Array(cap);
    this.used = new Uint8Array(cap);
    this.mask = cap - 1;
    for (let i = 0; i < oldUsed.length; i++) {
      if (oldUsed[i] !== 1) continue;
      const key = oldKeys[i];
      let slot = Math.imul(key, 0x9e3779b1) & this.mask;
      while (this.used[slot] === 1) slot = (slot + 1) & this.mask;
      this.used[slot] = 1;
      this.keys[slot] = key;
      this.counts[slot] = oldCounts[i];
    }
  }
}

// ---------------------------------------------------------------------------
// BatchSizeHistogram

/**
 * Upper bounds (`le`) of `nfqlb_batch_size`, packets per receive batch.
 * BatchSizeHistogram.observe() relies on these being 2^0..2^10: change both together.
 */
export const BATCH_SIZE_BUCKETS: readonly number[] = Object.freeze([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]);

/**
 * Packets per receive batch, as a Prometheus histogram with the fixed buckets
 * BATCH_SIZE_BUCKETS (+Inf implied).
 *
 * Contract:
 * - `observe(size)` counts one batch of `size` packets; no allocation, O(1)
 *   (the bucket of a power-of-two bound is found with clz32, no search).
 *   Sizes ≤ 1 (0 included) land in the `le="1"` bucket; non-integers are
 *   rounded up first (a batch is a whole number of packets; rounding up keeps
 *   `size ≤ le` true for the bucket chosen); sizes > 1024 land in +Inf.
 * - `bucketCounts[i]` is the number of batches in bucket i alone (NOT
 *   cumulative): i < BATCH_SIZE_BUCKETS.length for `le = BATCH_SIZE_BUCKETS[i]`,
 *   the last element for sizes above the largest bound. The exposition
 *   (metrics.ts) makes them cumulative. Read-only for everyone but this class.
 * - `size` must be a non-negative finite number (not checked: this runs per
 *   batch); NaN would poison `sum`, a negative one make it go down.
 * - `sum` is the total of the observed sizes, `count` the number of batches.
 *   All only grow.
 * - The counts may live in memory another thread reads (a packet thread's
 *   ThreadCounters): give the arrays to the constructor, and observe() writes
 *   there directly instead of being copied after every batch.
 */
export class BatchSizeHistogram {
  /** BATCH_SIZE_BUCKETS.length + 1 bucket counts. */
  static readonly BUCKETS = BATCH_SIZE_BUCKETS.length + 1;

  /** `totals` holds [sum, count]. */
  constructor(
    readonly bucketCounts: Float64Array = new Float64Array(BatchSizeHistogram.BUCKETS),
    private readonly totals: Float64Array = new Float64Array(2),
  ) {
    if (bucketCounts.length !== BatchSizeHistogram.BUCKETS || totals.length !== 2) throw new RangeError(`a batch size histogram needs ${BatchSizeHistogram.BUCKETS} buckets and 2 totals`);
  }

  get sum(): number {
    return this.totals[0];
  }

  set sum(v: number) {
    this.totals[0] = v;
  }

  get count(): number {
    return this.totals[1];
  }

  set count(v: number) {
    this.totals[1] = v;
  }

  observe(size: number): void {
    // Rounding up keeps `size <= le` true for the bucket chosen (2.5 goes to le=4).
    const s = Math.ceil(size);
    // For 2 <= s <= 1024, 32 - clz32(s - 1) = ceil(log2(s)) is the index of the
    // first power of two >= s. The range test comes first because clz32 works
    // on 32 bits and would wrap for huge sizes.
    const i = s > 1024 ? BATCH_SIZE_BUCKETS.length : s <= 1 ? 0 : 32 - Math.clz32(s - 1);
    this.bucketCounts[i]++;
    this.totals[0] += size;
    this.totals[1]++;
  }
}

// ---------------------------------------------------------------------------
// LabeledCounter

/** One (action, result) pair with its count, as LabeledCounter.entries() returns it. */
export interface LabeledCount {
  action: string;
  result: string;
  count: number;
}

/** Label value used for pairs beyond LabeledCounter's limit. */
export const LABEL_OVERFLOW = 'other';

/**
 * Counts keyed by two strings — control requests by (action, result), for
 * `nfqlb_control_requests_total{action,result}`. Off the packet path, so a Map.
 *
 * Contract:
 * - `inc(action, result, n = 1)` adds n. Pass bounded vocabularies (the known
 *   action names and e.g. "ok"/"fail"; map anything a client invents to
 *   "unknown"): every distinct pair becomes a Prometheus series forever.
 * - As a guard against a caller that forgets, after `limit` distinct pairs
 *   (default 256) any new pair is counted under (LABEL_OVERFLOW,
 *   LABEL_OVERFLOW) instead — the total stays right, memory stays bounded
 *   (at most limit + 1 pairs).
 * - `get(action, result)` is the current count (0 if never counted);
 *   `entries()` a fresh array of all pairs. Counts never go down.
 */
export class LabeledCounter {
  private readonly byAction = new Map<string, Map<string, LabeledCount>>();
  private pairs = 0;

  constructor(private readonly limit = 256) {}

  /** Number of distinct pairs. */
  get size(): number {
    return this.pairs;
  }

  inc(action: string, result: string, n = 1): void {
    let entry = this.byAction.get(action)?.get(result);
    if (entry === undefined) {
      if (this.pairs >= this.limit) {
        if (action !== LABEL_OVERFLOW || result !== LABEL_OVERFLOW) {
          this.inc(LABEL_OVERFLOW, LABEL_OVERFLOW, n);
          return;
        }
      }
      entry = { action, result, count: 0 };
      let byResult = this.byAction.get(action);
      if (byResult === undefined) {
        byResult = new Map();
        this.byAction.set(action, byResult);
      }
      byResult.set(result, entry);
      this.pairs++;
    }
    entry.count += n;
  }

  get(action: string, result: string): number {
    return this.byAction.get(action)?.get(result)?.count ?? 0;
  }

  /** Snapshot copies, so the caller may keep them across later inc() calls. */
  entries(): LabeledCount[] {
    const out: LabeledCount[] = [];
    for (const byResult of this.byAction.values()) {
      for (const e of byResult.values()) out.push({ action: e.action, result: e.result, count: e.count });
    }
    return out;
  }
}

// ---------------------------------------------------------------------------
// KeyCounter

/**
 * Counts by one string key — refused control requests by reason, table
 * faults by "target/fault". Off the packet path, so a Map. Same guard as
 * LabeledCounter: after `limit` distinct keys, new ones count under
 * LABEL_OVERFLOW. Counts never go down.
 */
export class KeyCounter {
  private readonly counts = new Map<string, number>();

  constructor(private readonly limit = 256) {}

  inc(key: string, n = 1): void {
    const cur = this.counts.get(key);
    if (cur === undefined && this.counts.size >= this.limit && key !== LABEL_OVERFLOW) {
      this.inc(LABEL_OVERFLOW, n);
      return;
    }
    this.counts.set(key, (cur ?? 0) + n);
  }

  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  /** Snapshot of every key with its count. */
  entries(): { key: string; count: number }[] {
    return [...this.counts].map(([key, count]) => ({ key, count }));
  }
}
