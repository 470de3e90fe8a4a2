/**
 * One registry's view of the daemon during a scrape: what the metric
 * families (families.ts) read, with the costlier readings made at most once
 * per scrape.
 */
import type { QueueProcEntry } from '../../addon/queue';
import type { FragmentStatsReading, MetricsLog, MetricsSource, QueueCounts } from './source';
import { oncePerScrape } from './totals';

/**
 * What the families read in one scrape: the source, the NFQUEUE proc lines of
 * the queues held, and the summed fragment and connection-table statistics,
 * each read at most once per scrape.
 */
export class ScrapeReadings {
  /** The fragment tables' statistics, summed (null: none). */
  readonly fragments: () => FragmentStatsReading | null;
  /** The connection tables' capacity and statistics, summed (null: --conntrack is off). */
  readonly conntrack: () => { capacity: number; stats: Float64Array } | null;
  private readonly procEntries: () => ReadonlyMap<string, QueueProcEntry> | null;
  private procError: string | null = null;

  constructor(
    readonly source: MetricsSource,
    readProc: () => readonly QueueProcEntry[],
    private readonly log: MetricsLog | undefined,
  ) {
    this.fragments = oncePerScrape(() => source.fragments?.() ?? null);
    this.conntrack = oncePerScrape(() => source.conntrack?.() ?? null);
    // Every collect() of one registry.metrics() call runs in the same turn, so
    // the three queue families of a scrape share one read of /proc.
    this.procEntries = oncePerScrape(() => {
      const map = new Map<string, QueueProcEntry>();
      try {
        for (const e of readProc()) map.set(`${e.queue}/${e.portid}`, e);
        this.procError = null;
      } catch (err) {
        // A scrape without queue-proc series beats a failed scrape; the error
        // surfaces in the log once per distinct message.
        const msg = (err as Error).message;
        if (msg !== this.procError) this.log?.warn({ err: msg }, 'metrics: cannot read the NFQUEUE proc table');
        this.procError = msg;
      }
      return map;
    });
  }

  /** The queues held now with their proc line (queue number AND portid must match: another process may hold the number). */
  heldProc(each: (q: QueueCounts, e: QueueProcEntry) => void): void {
    const queues = this.source.queues();
    if (queues.length === 0) return;
    const proc = this.procEntries();
    if (proc === null) return;
    for (const q of queues) {
      const e = proc.get(`${q.queueNum}/${q.portid}`);
      if (e !== undefined) each(q, e);
    }
  }
}
