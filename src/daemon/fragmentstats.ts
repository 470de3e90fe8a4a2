/**
 * The daemon's fragment statistics: nfqlb's fragStats summed over every
 * fragment table (the single loop's, or each packet thread's shared
 * counters), the fragment store counters likewise, and --ft_shm written with
 * them every second and at stop.
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from '../base/log';
import type { KeyCounter } from '../base/counters';
import { DEFAULT_PIPELINE_OPTIONS, fragmentGeometry, type FragmentGeometry, type Pipeline, type PipelineOptions } from '../datapath/pipeline';
import { FSTORE_EVENT_NAMES, FSTORE_FIELDS, FSTORE_IN_USE } from '../fragments/store';
import { FRAG_STATS_FIELDS, fragStatsOf, FS_REASSEMBLER_FULL, sumFragmentStats } from '../fragments/tablestats';
import { FragStatsWriter, type FragStats } from '../fragments/stats';
import type { ServedTable } from '../tables/servedtable';
import type { FragmentStatsReading, FragmentStoreCounts } from '../services/metrics';
import { openRefusal } from './openrefusal';
import { CONNTRACK_SWEEP_BUDGET } from './packetthread';
import type { PacketThreads } from './packetthreads';

export interface FragmentStatsContext {
  readonly options: { readonly mtu: number; readonly ftShm?: string; readonly pipeline: Partial<PipelineOptions<ServedTable>> };
  readonly pipeline: Pipeline<ServedTable>;
  /** The packet threads once started (null before, and without threads). */
  threads(): PacketThreads | null;
  readonly log: Logger;
  readonly openRefused: KeyCounter;
}

export class FragmentStatistics {
  /** errno of the single loop's last failed re-injection write ([0], C's positive errno; 0: none). */
  readonly tunErrno = new Int32Array(1);
  /** The shape of every fragment table (the single loop's, or each packet thread's), from the options. */
  private readonly shape: FragmentGeometry;
  private readonly statsSum = new Float64Array(FRAG_STATS_FIELDS);
  private readonly storeSum = new Float64Array(FSTORE_FIELDS);
  private writer: FragStatsWriter | null = null;
  private writeFailed = false;

  constructor(private readonly c: FragmentStatsContext) {
    this.shape = fragmentGeometry({ ...DEFAULT_PIPELINE_OPTIONS, ...c.options.pipeline });
  }

  /**
   * --ft_shm at start: as nfqlb, the stats object exists from the start. One
   * that belongs to another user is logged and tried again every second
   * (nfqlb dies): as with nfqlb-trace, the daemon runs without root.
   */
  openFtShm(name: string): void {
    this.writer = new FragStatsWriter(name);
    this.write();
  }

  /** Whether --ft_shm is written (then once more at stop). */
  get writing(): boolean {
    return this.writer !== null;
  }

  /** The statistics arrays of every fragment table: one per packet thread (their shared counters), or the single loop's. */
  arrays(): Float64Array[] {
    const threads = this.c.threads();
    if (threads !== null) return threads.counters.map((c) => c.fragmentStats);
    return [this.c.pipeline.fragments.stats];
  }

  /** The fragment store counters (FSTORE_*), summed over the packet threads' stores; null without a store (no --tun). */
  storeCounters(): Float64Array | null {
    const threads = this.c.threads();
    if (threads === null) return this.c.pipeline.fragmentStore?.counters ?? null;
    if (this.storeSlots() === 0) return null;
    const sum = this.storeSum.fill(0);
    for (const c of threads.counters) for (let i = 0; i < FSTORE_FIELDS; i++) sum[i] += c.fragmentStore[i];
    return sum;
  }

  /** errno (C's positive) of a failed tun write: the single loop's, or the first thread's that has one; 0: none. */
  lastTunErrno(): number {
    const threads = this.c.threads();
    if (threads === null) return this.tunErrno[0];
    for (const c of threads.counters) if (c.tunErrno[0] !== 0) return c.tunErrno[0];
    return 0;
  }

  /** nfqlb's fragStats, summed over the fragment tables. */
  stats(): FragStats {
    const ft = this.shape;
    return fragStatsOf(sumFragmentStats(this.arrays(), this.statsSum), {
      size: ft.hashSize,
      bucketsMax: ft.extraBuckets,
      ttlMs: ft.ttlMs,
      mtu: this.c.options.mtu,
      // nfqlb's fragsMax: --ft_frag with --tun, else 0 (lb.ts sets no store then).
      fragsMax: this.storeSlots(),
    });
  }

  /** What metrics read: fragStats and the reassembler's misses. */
  reading(): FragmentStatsReading {
    return { ...this.stats(), reassemblerFull: this.statsSum[FS_REASSEMBLER_FULL] };
  }

  /** The fragment store as metrics read it; null without a store. */
  storeReading(): FragmentStoreCounts | null {
    const c = this.storeCounters();
    if (c === null) return null;
    // slots is per store (--ft_frag; each packet thread has one), the counts are sums.
    return { slots: this.storeSlots(), inUse: c[FSTORE_IN_USE], events: FSTORE_EVENT_NAMES.map((event, i) => ({ event, count: c[i] })) };
  }

  /** Copies one fragment store keeps (--ft_frag with --tun; each packet thread has a store of this size); 0: no store. */
  private storeSlots(): number {
    return this.c.options.pipeline.fragmentStoreSlots ?? 0;
  }

  /**
   * Every second and at stop: frees what expired in the fragment table (so
   * the active count falls back without traffic; nfqlb does this full GC when
   * its stats are read) and writes --ft_shm. A failed write is logged once
   * until a write succeeds again; the daemon keeps running.
   */
  write(): void {
    const now = performance.now();
    const pipeline = this.c.pipeline;
    pipeline.fragments.sweep(now);
    // The single loop's table only: a packet thread sweeps its own (one writer per table).
    if (this.c.threads() === null) pipeline.conntrack?.sweep(now, CONNTRACK_SWEEP_BUDGET);
    if (this.writer === null) return;
    try {
      this.writer.write(this.stats());
      this.writeFailed = false;
    } catch (err) {
      if (!this.writeFailed) {
        this.c.log.warn({ ftShm: this.writer.name, err: (err as Error).message }, 'fragment statistics not written');
        if (openRefusal(err) === 'not_file') this.c.openRefused.inc('ft_shm');
      }
      this.writeFailed = true;
    }
  }
}
