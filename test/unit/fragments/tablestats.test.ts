/**
 * The fragment table's statistics (tablestats.ts): fixed fields, summed
 * field by field over the tables of several packet workers, and nfqlb's
 * fragStats made from the sum and the configuration.
 */
import {
  FRAG_STATS_FIELDS, fragStatsOf, FS_ACTIVE, FS_BUCKETS_ALLOCATED, FS_BUCKETS_USED, FS_COLLISIONS, FS_EXPIRED, FS_FRAGS_ALLOCATED,
  FS_FRAGS_DISCARDED, FS_HITS, FS_INSERTS, FS_LOOKUPS, FS_MISSES, FS_PROBES, FS_REASSEMBLED, FS_REASSEMBLER_FULL, FS_REJECTED, sumFragmentStats,
} from '../../../src/fragments/tablestats';

const ALL = [
  FS_INSERTS, FS_REJECTED, FS_LOOKUPS, FS_HITS, FS_MISSES, FS_COLLISIONS, FS_EXPIRED, FS_BUCKETS_ALLOCATED, FS_BUCKETS_USED, FS_ACTIVE,
  FS_PROBES, FS_REASSEMBLED, FS_FRAGS_ALLOCATED, FS_FRAGS_DISCARDED, FS_REASSEMBLER_FULL,
];

describe('fragment table statistics', () => {
  test('the fields are 0..FRAG_STATS_FIELDS-1, each once', () => {
    expect([...ALL].sort((a, b) => a - b)).toEqual(Array.from({ length: FRAG_STATS_FIELDS }, (_, i) => i));
  });

  test('sumFragmentStats adds field by field into out, clearing it first', () => {
    const a = Float64Array.from({ length: FRAG_STATS_FIELDS }, (_, i) => i);
    const b = Float64Array.from({ length: FRAG_STATS_FIELDS }, (_, i) => 100 * i);
    const out = new Float64Array(FRAG_STATS_FIELDS).fill(7);
    expect(sumFragmentStats([a, b], out)).toBe(out);
    expect(Array.from(out)).toEqual(Array.from({ length: FRAG_STATS_FIELDS }, (_, i) => 101 * i));
    expect(Array.from(sumFragmentStats([], out))).toEqual(new Array(FRAG_STATS_FIELDS).fill(0));
  });

  test('fragStatsOf: each nfqlb field from its FS_* field or the configuration; the ttl in ns', () => {
    const s = new Float64Array(FRAG_STATS_FIELDS);
    for (const f of ALL) s[f] = 1000 + f;
    expect(fragStatsOf(s, { size: 500, bucketsMax: 25, ttlMs: 200.4, mtu: 1500, fragsMax: 100 })).toEqual({
      ttlNanos: 200000000n,
      size: 500,
      active: 1000 + FS_ACTIVE,
      collisions: 1000 + FS_COLLISIONS,
      inserts: 1000 + FS_INSERTS,
      rejectedInserts: 1000 + FS_REJECTED,
      lookups: 1000 + FS_LOOKUPS,
      objGC: 1000 + FS_EXPIRED,
      mtu: 1500,
      bucketsMax: 25,
      bucketsAllocated: 1000 + FS_BUCKETS_ALLOCATED,
      bucketsUsed: 1000 + FS_BUCKETS_USED,
      fragsMax: 100,
      fragsDiscarded: 1000 + FS_FRAGS_DISCARDED,
      fragsAllocated: 1000 + FS_FRAGS_ALLOCATED,
      reAssembled: 1000 + FS_REASSEMBLED,
    });
    expect(fragStatsOf(s, { size: 1, bucketsMax: 0, ttlMs: -5, mtu: 0, fragsMax: 0 }).ttlNanos).toBe(0n);
  });
});
