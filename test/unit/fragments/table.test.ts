/**
 * The fragment table: bounded work whatever the history, bounded memory under
 * a flood of never-completed datagrams, expiry and reclaim, and no sentinel a
 * stored value can equal. Work is counted in entries read (`probes`), not time.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { FragmentTable } from '../../../src/fragments/table';
import { FRAG_STATS_FIELDS, FS_ACTIVE, FS_HITS, FS_INSERTS, FS_LOOKUPS, FS_MISSES, sumFragmentStats } from '../../../src/fragments/tablestats';
import { KEY_LEN } from '../../../src/packet/hashkey';
import { MaglevTable } from '../../../src/tables/maglev';
import { Pipeline, REASON_FRAGMENT_HIT, REASON_FRAGMENT_MISS, REASON_FRAGMENT_TABLE_FULL, REASON_TARGET } from '../../../src/datapath/pipeline';
import { Target } from '../../../src/tables/targets';
import { ipv4, udp } from '../../helpers/packets';
import { prng } from '../../helpers/prng';

/** A full garbage collection, so heap numbers show what is retained rather than what waits to be collected. */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

const FT_SIZE = 500;
const FT_BUCKETS = 500;
const TTL = 200;

function randomKey(rand: () => number, key: Uint8Array): void {
  for (let i = 0; i < 32; i++) key[i] = (rand() * 256) | 0;
}

function table(opts: Partial<ConstructorParameters<typeof FragmentTable>[0]> = {}): FragmentTable {
  return new FragmentTable({ hashSize: FT_SIZE, extraBuckets: FT_BUCKETS, ttlMs: TTL, seed: 1, ...opts });
}

/** The home slot a key lands on (white-box: tests need keys that collide). */
function homeOf(ft: FragmentTable, key: Uint8Array, id: number): number {
  const fp = (ft as unknown as { fingerprint(k: Uint8Array, i: number): number }).fingerprint(key, id >>> 0);
  return (fp >>> 0) % ft.hashSize;
}

/**
 * One datagram's worth of traffic: its first fragment is stored, a later
 * fragment finds it, and a later fragment with a random id (an attacker's, or
 * one whose first fragment was lost) misses. Returns the entries read.
 */
function datagram(ft: FragmentTable, rand: () => number, key: Uint8Array, now: number, counts: { max: number }): number {
  randomKey(rand, key);
  const id = (rand() * 0x100000000) >>> 0;
  let before = ft.probes;
  expect(ft.store(key, id, id & 0xffff, now)).toBe(true);
  counts.max = Math.max(counts.max, ft.probes - before);
  before = ft.probes;
  expect(ft.lookup(key, id, now)).toBe(true);
  counts.max = Math.max(counts.max, ft.probes - before);
  before = ft.probes;
  randomKey(rand, key);
  ft.lookup(key, (rand() * 0x100000000) >>> 0, now);
  counts.max = Math.max(counts.max, ft.probes - before);
  return ft.probes;
}

describe('fragment table: found / not found, never a sentinel', () => {
  it('every value round-trips, -2 and 0xfffffffe included; a miss says so', () => {
    const ft = table();
    const key = new Uint8Array(KEY_LEN);
    const values = [-2, -1, 0, 1, 0xfffffffe, 0xffffffff, 0x7fffffff, -0x80000000];
    values.forEach((v, i) => {
      key[0] = i;
      expect(ft.store(key, 1000 + i, v, 0)).toBe(true);
    });
    values.forEach((v, i) => {
      key[0] = i;
      expect(ft.lookup(key, 1000 + i, 1)).toBe(true);
      expect(ft.value).toBe(v);
    });
    key[0] = 99;
    expect(ft.lookup(key, 1000, 1)).toBe(false);
    expect(ft.hits).toBe(values.length);
    expect(ft.misses).toBe(1);
  });

  it('lb mode: a later fragment gets its first fragment\'s fwmark back, even after the table changed (as nfqlb 1.2.0)', () => {
    const lb = MaglevTable.create(97, 4, 0, 'lb');
    lb.activate([11, 12, 13]);
    const pipeline = new Pipeline<MaglevTable>(null, { fixedTarget: new Target('lb', lb), hashMode: 0 });
    const rand = prng(9);
    for (let n = 0; n < 300; n++) {
      const src = `198.51.100.${1 + ((rand() * 250) | 0)}`;
      const id = (rand() * 65536) | 0;
      const first = ipv4(src, '192.0.2.1', 17, udp(1024 + n, 53, Array(24).fill(0)), { id, moreFragments: true });
      const later = ipv4(src, '192.0.2.1', 17, Array(16).fill(0), { id, fragOffset: 4 });
      const fw = pipeline.decide(first, 0, first.length, n);
      expect(pipeline.last.reason).toBe(REASON_TARGET);
      lb.deactivate([fw]);
      expect(pipeline.decide(later, 0, later.length, n)).toBe(fw);
      expect(pipeline.last.reason).toBe(REASON_FRAGMENT_HIT);
      lb.activate([fw]);
    }
  });
});

describe('fragment table: expiry and reclaim', () => {
  it('an entry lives until it was unused for more than ttl ms (nfqlb\'s --ft_ttl); a store or a hit renews it', () => {
    const ft = table();
    const key = new Uint8Array(KEY_LEN).fill(7);
    ft.store(key, 5, 101, 1000);
    expect(ft.lookup(key, 5, 1200)).toBe(true); // exactly ttl unused: still there, as nfqlb's "> ttl"
    expect(ft.lookup(key, 5, 1400)).toBe(true); // renewed at 1200
    expect(ft.lookup(key, 5, 1601)).toBe(false);
    expect(ft.expired).toBe(1);
    expect(ft.active).toBe(0);
    ft.store(key, 5, 102, 2000);
    ft.store(key, 5, 103, 2150);
    expect(ft.lookup(key, 5, 2350)).toBe(true);
    expect(ft.value).toBe(103);
    expect(ft.active).toBe(1);
    expect(ft.sweep(2550)).toBe(1);
    expect(ft.sweep(2551)).toBe(0);
    expect(ft.active).toBe(0);
    expect(ft.expired).toBe(2);
  });

  it('expiry with injected time: a full table empties after ttl, its active count falls back to 0 and it takes new entries', () => {
    const ft = table({ hashSize: 50, extraBuckets: 50 });
    const rand = prng(11);
    const key = new Uint8Array(KEY_LEN);
    let stored = 0;
    for (let i = 0; i < 1000; i++) {
      randomKey(rand, key);
      if (ft.store(key, i, i, 10 + i / 100)) stored++;
    }
    expect(ft.active).toBe(stored);
    expect(ft.active).toBeLessThanOrEqual(100);
    expect(ft.rejected).toBe(1000 - stored);
    expect(ft.sweep(10 + TTL)).toBe(stored); // the oldest is exactly TTL old: not yet expired
    expect(ft.active).toBe(stored);
    expect(ft.sweep(20 + TTL + 1)).toBe(0);
    expect([ft.active, ft.bucketsUsed, ft.expired]).toEqual([0, 0, stored]);
    randomKey(rand, key);
    expect(ft.store(key, 1, 1, 1000)).toBe(true);
    expect(ft.active).toBe(1);
  });

  it('keeps its statistics in a caller-given array (e.g. over a SharedArrayBuffer), summed across tables', () => {
    const sab = new SharedArrayBuffer(2 * FRAG_STATS_FIELDS * 8);
    const a = table({ stats: new Float64Array(sab, 0, FRAG_STATS_FIELDS) });
    const b = table({ stats: new Float64Array(sab, FRAG_STATS_FIELDS * 8, FRAG_STATS_FIELDS), seed: 2 });
    const key = new Uint8Array(KEY_LEN).fill(3);
    a.store(key, 1, 1, 0);
    a.lookup(key, 1, 1);
    b.store(key, 2, 1, 0);
    b.lookup(key, 3, 1);
    const seen = new Float64Array(sab, 0, 2 * FRAG_STATS_FIELDS);
    expect(seen[FS_INSERTS]).toBe(1);
    expect(seen[FRAG_STATS_FIELDS + FS_MISSES]).toBe(1);
    const sum = sumFragmentStats([a.stats, b.stats], new Float64Array(FRAG_STATS_FIELDS));
    expect([sum[FS_INSERTS], sum[FS_LOOKUPS], sum[FS_HITS], sum[FS_MISSES], sum[FS_ACTIVE]]).toEqual([2, 4, 1, 1, 2]);
    expect(() => table({ stats: new Float64Array(3) })).toThrow(RangeError);
  });

  it('when the overflow pool is empty, an expired entry of an untouched chain is reclaimed', () => {
    const ft = table({ hashSize: 2, extraBuckets: 2 });
    const rand = prng(3);
    const onHome = (h: number, count: number): Uint8Array[] => {
      const keys: Uint8Array[] = [];
      while (keys.length < count) {
        const k = new Uint8Array(KEY_LEN);
        randomKey(rand, k);
        if (homeOf(ft, k, 1) === h) keys.push(k);
      }
      return keys;
    };
    // Home 0 and its two overflow entries: the pool is empty.
    for (const k of onHome(0, 3)) expect(ft.store(k, 1, 0, 0)).toBe(true);
    const [a, b] = onHome(1, 2);
    expect(ft.store(a, 1, 0, 10)).toBe(true);
    expect(ft.store(b, 1, 0, 10)).toBe(false);
    expect(ft.rejected).toBe(1);
    // Home 0's chain expires but nothing touches it: home 1 still gets an entry.
    expect(ft.store(b, 1, 42, TTL + 5)).toBe(true);
    expect(ft.lookup(b, 1, TTL + 6)).toBe(true);
    expect(ft.value).toBe(42);
    expect(ft.expired).toBeGreaterThanOrEqual(1);
    expect(ft.bucketsUsed).toBe(2);
  });

  it('a chain never grows beyond its bound: a lookup reads at most 1 + maxChain entries, a store 3 × that', () => {
    const ft = table({ hashSize: 1, extraBuckets: 1000, maxChain: 4 });
    const key = new Uint8Array(KEY_LEN);
    let stored = 0;
    let maxStore = 0;
    let maxLookup = 0;
    for (let id = 0; id < 100; id++) {
      let before = ft.probes;
      if (ft.store(key, id, id, 0)) stored++;
      maxStore = Math.max(maxStore, ft.probes - before);
      before = ft.probes;
      ft.lookup(key, id + 1000, 0);
      maxLookup = Math.max(maxLookup, ft.probes - before);
    }
    expect(stored).toBe(5);
    expect(ft.rejected).toBe(95);
    expect(maxLookup).toBe(5);
    expect(maxStore).toBeLessThanOrEqual(3 * 5);
  });
});

describe('fragment table: bounded work whatever the history', () => {
  it(`after 10 × ft_size random datagrams each store and lookup reads what it read on a fresh table`, () => {
    const measure = (ft: FragmentTable, rand: () => number, key: Uint8Array, t0: number, n: number, counts: { max: number }): number => {
      const start = ft.probes;
      // 0.5 ms apart: 400 datagrams live per ttl (the default table holds 1,000).
      for (let i = 0; i < n; i++) datagram(ft, rand, key, t0 + i * 0.5, counts);
      return (ft.probes - start) / (3 * n);
    };
    const key = new Uint8Array(KEY_LEN);
    const window = FT_SIZE;

    const fresh = table();
    const freshCounts = { max: 0 };
    const freshWork = measure(fresh, prng(1), key, 0, window, freshCounts);

    const used = table();
    const rand = prng(2);
    measure(used, rand, key, 0, 10 * FT_SIZE, { max: 0 });
    const t = 10 * FT_SIZE * 0.5;
    expect(used.expired).toBeGreaterThan(8 * FT_SIZE);
    const usedCounts = { max: 0 };
    const usedWork = measure(used, rand, key, t, window, usedCounts);

    process.stdout.write(`fragment table work per operation: fresh ${freshWork.toFixed(3)}, after 10 x ft_size ${usedWork.toFixed(3)} entries read (max ${freshCounts.max} / ${usedCounts.max})\n`);
    // Fresh: the table fills from empty during the window; used: it is at its
    // steady state (400 live). Both stay within one entry read per operation.
    expect(freshWork).toBeGreaterThanOrEqual(1);
    expect(usedWork).toBeLessThan(freshWork + 1);
    expect(usedCounts.max).toBeLessThanOrEqual(3 * (1 + used.maxChain));
    expect(used.rejected).toBe(0);
  });

  it('a flood of random later fragments and never-completed first fragments: flat memory, flat work, then drained', () => {
    const ft = table();
    const bytes = ft.byteLength;
    const rand = prng(4);
    const key = new Uint8Array(KEY_LEN);
    let maxOp = 0;
    let stored = 0;
    const N = 100 * (FT_SIZE + FT_BUCKETS);
    collectGarbage();
    const heapBefore = process.memoryUsage().heapUsed;
    // Time stands still: nothing expires, the table fills and then refuses.
    for (let i = 0; i < N; i++) {
      randomKey(rand, key);
      const id = (rand() * 0x100000000) >>> 0;
      const before = ft.probes;
      if (i % 2 === 0) {
        if (ft.store(key, id, 1, 0)) stored++;
      } else {
        ft.lookup(key, id, 0);
      }
      maxOp = Math.max(maxOp, ft.probes - before);
    }
    collectGarbage();
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
    expect(ft.byteLength).toBe(bytes);
    expect(stored).toBeLessThanOrEqual(ft.capacity);
    expect(stored).toBeGreaterThan(0.9 * ft.capacity);
    expect(ft.sweep(0)).toBe(stored);
    expect(maxOp).toBeLessThanOrEqual(3 * (1 + ft.maxChain));
    expect(ft.probes / N).toBeLessThan(5);
    // Nothing retained per operation: 100,000 operations leave the heap as it was.
    expect(heapGrowth).toBeLessThan(1 << 20);
    // After the ttl every entry is reclaimed and new datagrams are stored again.
    expect(ft.sweep(TTL + 1)).toBe(0);
    expect(ft.bucketsUsed).toBe(0);
    expect(ft.active).toBe(0);
    randomKey(rand, key);
    expect(ft.store(key, 1, 1, TTL + 1)).toBe(true);
  });

  it('through the pipeline: a full table refuses first fragments as fragment_table_full, later fragments miss', () => {
    const lb = MaglevTable.create(97, 4, 0, 'lb');
    lb.activate([11]);
    const pipeline = new Pipeline<MaglevTable>(null, { fixedTarget: new Target('lb', lb), fragmentCapacity: 8, fragmentHashSize: 4, fragmentTtlMs: 100 });
    const rand = prng(5);
    let full = 0;
    for (let n = 0; n < 200; n++) {
      const src = `198.51.100.${1 + ((rand() * 250) | 0)}`;
      const id = (rand() * 65536) | 0;
      const first = ipv4(src, '192.0.2.1', 17, udp(1024, 53, Array(24).fill(0)), { id, moreFragments: true });
      pipeline.decide(first, 0, first.length, 0);
      if (pipeline.last.reason === REASON_FRAGMENT_TABLE_FULL) full++;
      const later = ipv4(src, '192.0.2.1', 17, Array(16).fill(0), { id: id ^ 1, fragOffset: 4 });
      pipeline.decide(later, 0, later.length, 0);
      expect(pipeline.last.reason).toBe(REASON_FRAGMENT_MISS);
    }
    expect(full).toBeGreaterThanOrEqual(192);
    expect(pipeline.fragments.sweep(0)).toBeLessThanOrEqual(8);
  });
});
