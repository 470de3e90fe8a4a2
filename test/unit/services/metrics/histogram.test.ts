/**
 * nfqlb_batch_size from pre-aggregated buckets: the standard histogram
 * exposition (cumulative buckets, +Inf = _count, _sum) through a Registry's
 * public metrics() and getMetricsAsJSON(), totals that never go down when the
 * source histogram is replaced or restarts, and a cost per scrape that does
 * not depend on the number of batches.
 */
import { Registry } from 'prom-client';
import { BATCH_SIZE_BUCKETS, BatchSizeHistogram } from '../../../../src/base/counters';
import { PreaggregatedHistogram } from '../../../../src/services/metrics/histogram';

function setup(): { registry: Registry; source: { h: BatchSizeHistogram } } {
  const registry = new Registry();
  const source = { h: new BatchSizeHistogram() };
  new PreaggregatedHistogram('b_size', 'Packets per batch.', registry, () => source.h);
  return { registry, source };
}

const sample = (text: string, line: string): number => {
  const m = new RegExp(`^${line.replace(/[{}+"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  if (m === null) throw new Error(`no sample ${line} in:\n${text}`);
  return Number(m[1]);
};

describe('PreaggregatedHistogram', () => {
  it('exports the buckets as a cumulative histogram, in the text format', async () => {
    const { registry, source } = setup();
    for (const n of [1, 3, 3, 64, 2000]) source.h.observe(n);
    const text = await registry.metrics();
    expect(text).toContain('# HELP b_size Packets per batch.\n# TYPE b_size histogram\n');
    expect(sample(text, 'b_size_bucket{le="1"}')).toBe(1);
    expect(sample(text, 'b_size_bucket{le="2"}')).toBe(1);
    expect(sample(text, 'b_size_bucket{le="4"}')).toBe(3);
    expect(sample(text, 'b_size_bucket{le="64"}')).toBe(4);
    expect(sample(text, 'b_size_bucket{le="1024"}')).toBe(4);
    expect(sample(text, 'b_size_bucket{le="+Inf"}')).toBe(5);
    expect(sample(text, 'b_size_count')).toBe(5);
    expect(sample(text, 'b_size_sum')).toBe(2071);
    // One line per bound, +Inf, _sum, _count: nothing of the Gauge it is registered as.
    expect(text.split('\n').filter((l) => l.startsWith('b_size'))).toHaveLength(BATCH_SIZE_BUCKETS.length + 3);
  });

  it('is a histogram family in getMetricsAsJSON()', async () => {
    const { registry, source } = setup();
    source.h.observe(8);
    const [family] = await registry.getMetricsAsJSON();
    expect(family).toMatchObject({ name: 'b_size', type: 'histogram' });
    expect(family.values).toContainEqual({ metricName: 'b_size_count', labels: {}, value: 1 });
  });

  it('never goes down: a replaced source histogram or a lower count is a restart', async () => {
    const { registry, source } = setup();
    source.h.observe(4);
    source.h.observe(4);
    await registry.metrics();
    source.h = new BatchSizeHistogram();
    source.h.observe(16);
    let text = await registry.metrics();
    expect(sample(text, 'b_size_count')).toBe(3);
    expect(sample(text, 'b_size_sum')).toBe(24);
    expect(sample(text, 'b_size_bucket{le="4"}')).toBe(2);
    source.h.observe(1);
    text = await registry.metrics();
    expect(sample(text, 'b_size_count')).toBe(4);
    expect(sample(text, 'b_size_bucket{le="1"}')).toBe(1);
  });

  it('takes counts of any size: no observation per batch', async () => {
    const { registry, source } = setup();
    source.h.bucketCounts[3] = 1e12;
    source.h.count = 1e12;
    source.h.sum = 8e12;
    const text = await registry.metrics();
    expect(sample(text, 'b_size_count')).toBe(1e12);
  });

  it('is left as it is by resetMetrics(): since-start totals', async () => {
    const { registry, source } = setup();
    source.h.observe(2);
    await registry.metrics();
    registry.resetMetrics();
    expect(sample(await registry.metrics(), 'b_size_count')).toBe(1);
  });
});
