/**
 * The fragment table's statistics: fixed fields of a Float64Array
 * (FragmentTable.stats, or a view into a SharedArrayBuffer that another
 * thread reads), indexed by the FS_* constants below; how several tables
 * (one per packet worker) are summed; and nfqlb's fragStats made from the
 * sum, for ftshm (stats.ts) and the metrics.
 *
 * Counters only grow; FS_ACTIVE and FS_BUCKETS_USED are levels. FS_FRAGS_*
 * count the copies of out-of-order fragments (with a store, --tun).
 */
import type { FragStats } from './stats';

/** Attempts to add a datagram (a first fragment not already in the table), refused ones included (nfqlb inserts). */
export const FS_INSERTS = 0;
/** Stores refused: chain at its bound or no overflow entry free (nfqlb rejectedInserts). */
export const FS_REJECTED = 1;
/** Table accesses: every store and every lookup (nfqlb counts a ctLookup for both). */
export const FS_LOOKUPS = 2;
export const FS_HITS = 3;
export const FS_MISSES = 4;
/** Stores that found their home slot taken (nfqlb collisions). */
export const FS_COLLISIONS = 5;
/** Entries freed because they expired (nfqlb objGC). */
export const FS_EXPIRED = 6;
export const FS_BUCKETS_ALLOCATED = 7;
export const FS_BUCKETS_USED = 8;
/** Live entries now (expired ones count until they are freed; a sweep frees them). */
export const FS_ACTIVE = 9;
/** Entries read by store/lookup: the work the table did. */
export const FS_PROBES = 10;
/** Entries freed early because all of their datagram was seen (nfqlb reAssembled). */
export const FS_REASSEMBLED = 11;
/** Copies of out-of-order fragments kept (nfqlb fragsAllocated). */
export const FS_FRAGS_ALLOCATED = 12;
/** Kept copies dropped unsent: their entry expired, was freed, or lost a fragment (nfqlb fragsDiscarded). */
export const FS_FRAGS_DISCARDED = 13;
/** Datagrams without bookkeeping because the reassembler had no free hole descriptor. */
export const FS_REASSEMBLER_FULL = 14;
export const FRAG_STATS_FIELDS = 15;

/** Adds the statistics arrays of several tables into `out` (length FRAG_STATS_FIELDS), field by field. */
export function sumFragmentStats(tables: readonly Float64Array[], out: Float64Array): Float64Array {
  out.fill(0);
  for (const s of tables) for (let i = 0; i < FRAG_STATS_FIELDS; i++) out[i] += s[i];
  return out;
}

/** The configuration part of the stats: what the daemon was started with (per table; with packet workers each has a table of this shape). */
export interface FragStatsConfig {
  /** --ft_size */
  size: number;
  /** --ft_buckets */
  bucketsMax: number;
  /** --ft_ttl, ms */
  ttlMs: number;
  /** --mtu */
  mtu: number;
  /** Fragments that may be stored (--ft_frag with --tun, else 0 as in nfqlb). */
  fragsMax: number;
}

/** nfqlb's fragStats from the (summed) FS_* statistics of the fragment tables. */
export function fragStatsOf(stats: Float64Array, config: FragStatsConfig): FragStats {
  return {
    ttlNanos: BigInt(Math.max(0, Math.round(config.ttlMs))) * 1000000n,
    size: config.size,
    active: stats[FS_ACTIVE],
    collisions: stats[FS_COLLISIONS],
    inserts: stats[FS_INSERTS],
    rejectedInserts: stats[FS_REJECTED],
    lookups: stats[FS_LOOKUPS],
    objGC: stats[FS_EXPIRED],
    mtu: config.mtu,
    bucketsMax: config.bucketsMax,
    bucketsAllocated: stats[FS_BUCKETS_ALLOCATED],
    bucketsUsed: stats[FS_BUCKETS_USED],
    fragsMax: config.fragsMax,
    fragsDiscarded: stats[FS_FRAGS_DISCARDED],
    fragsAllocated: stats[FS_FRAGS_ALLOCATED],
    reAssembled: stats[FS_REASSEMBLED],
  };
}
