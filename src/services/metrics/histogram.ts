/**
 * nfqlb_batch_size, a histogram whose buckets are counted elsewhere: the
 * packet path fills a BatchSizeHistogram (src/base/counters.ts) and this
 * exports it. prom-client's Histogram only takes single observations (one
 * observe() per batch would make a scrape cost O(batches)), so this is a
 * metric whose get(), the public read the registry formats, answers with a
 * histogram family: name, help, type and aggregator from a prom-client
 * Histogram that is never observed nor registered, and as values the
 * pre-aggregated buckets: cumulative `_bucket{le}` lines ending with
 * le="+Inf" (= `_count`), then `_sum` and `_count`. It is a Gauge only to be
 * a metric a Registry takes; no gauge value of its own is ever shown.
 *
 * Like the counters it keeps its own monotonic totals, so a replaced source
 * histogram (another object, or a count that went down) never makes the
 * exported one go down.
 */
import { Gauge, Histogram, type Registry } from 'prom-client';
import { BATCH_SIZE_BUCKETS, type BatchSizeHistogram } from '../../base/counters';

type HistogramReading = Awaited<ReturnType<Histogram['get']>>;

export class PreaggregatedHistogram extends Gauge {
  /** The family's description, as prom-client gives a histogram's. */
  private readonly shape: Histogram;
  /** Since-start totals per bucket; the last entry is the bucket above the largest bound. */
  private readonly totals = new Float64Array(BATCH_SIZE_BUCKETS.length + 1);
  private readonly last = new Float64Array(BATCH_SIZE_BUCKETS.length + 1);
  private totalSum = 0;
  private lastSum = 0;
  private lastCount = 0;
  private lastInstance: BatchSizeHistogram | null = null;

  constructor(name: string, help: string, registry: Registry, private readonly source: () => BatchSizeHistogram) {
    super({ name, help, registers: [registry] });
    this.shape = new Histogram({ name, help, buckets: [...BATCH_SIZE_BUCKETS], registers: [] });
  }

  /** The family as prom-client describes it (name, help, type, aggregator), with the source's buckets as its values. */
  override async get(): Promise<HistogramReading> {
    const family = await this.shape.get();
    this.fold();
    const values: HistogramReading['values'] = [];
    let cumulative = 0;
    for (let i = 0; i < BATCH_SIZE_BUCKETS.length; i++) {
      cumulative += this.totals[i];
      values.push({ metricName: `${family.name}_bucket`, labels: { le: String(BATCH_SIZE_BUCKETS[i]) }, value: cumulative });
    }
    // +Inf and _count are every observation: derived from the buckets, so the
    // three are consistent by construction.
    cumulative += this.totals[BATCH_SIZE_BUCKETS.length];
    values.push({ metricName: `${family.name}_bucket`, labels: { le: '+Inf' }, value: cumulative });
    values.push({ metricName: `${family.name}_sum`, labels: {}, value: this.totalSum });
    values.push({ metricName: `${family.name}_count`, labels: {}, value: cumulative });
    return { ...family, values };
  }

  private fold(): void {
    const h = this.source();
    // Bucket counts, sum and count of one histogram only grow together, so
    // `count` going down (or another object) is enough to detect a restart.
    const restarted = h !== this.lastInstance || h.count < this.lastCount;
    for (let i = 0; i < this.totals.length; i++) {
      const cur = h.bucketCounts[i];
      this.totals[i] += restarted ? cur : cur - this.last[i];
      this.last[i] = cur;
    }
    this.totalSum += restarted ? h.sum : h.sum - this.lastSum;
    this.lastSum = h.sum;
    this.lastCount = h.count;
    this.lastInstance = h;
  }
}
