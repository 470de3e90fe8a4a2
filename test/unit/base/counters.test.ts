/**
 * The hot-path counters (src/base/counters.ts): FwmarkCounter against a Map model,
 * through growth and for every kind of int32 key; BatchSizeHistogram's
 * buckets against a linear search; LabeledCounter and KeyCounter bounded by
 * folding what is past their limit into "other", totals kept.
 */
import { BATCH_SIZE_BUCKETS, BatchSizeHistogram, FwmarkCounter, KeyCounter, LABEL_OVERFLOW, LabeledCounter } from '../../../src/base/counters';

describe('FwmarkCounter', () => {
  test('counts 0, negative and extreme int32 keys separately', () => {
    const c = new FwmarkCounter();
    const keys = [0, -1, 1, 2 ** 31 - 1, -(2 ** 31), 100, -100];
    keys.forEach((k, i) => c.add(k, i + 1));
    c.add(0);
    c.add(-1, 10);
    expect(c.size).toBe(keys.length);
    expect(c.get(0)).toBe(2);
    expect(c.get(-1)).toBe(12);
    expect(c.get(2 ** 31 - 1)).toBe(4);
    expect(c.get(-(2 ** 31))).toBe(5);
    expect(c.get(42)).toBe(0);
    const seen = new Map<number, number>();
    c.forEach((k, n) => {
      expect(seen.has(k)).toBe(false);
      seen.set(k, n);
    });
    expect(seen.size).toBe(keys.length);
    expect(seen.get(-100)).toBe(7);
  });

  test('a key outside int32 is counted under the int32 it wraps to', () => {
    const c = new FwmarkCounter();
    c.add(2 ** 32 + 5);
    c.add(5);
    c.add(0xffffffff); // uint32 view of -1
    expect(c.get(5)).toBe(2);
    expect(c.get(-1)).toBe(1);
  });

  test('grows, keeping every count, and matches a Map model for many distinct marks', () => {
    const c = new FwmarkCounter();
    expect(c.capacity).toBe(16);
    const model = new Map<number, number>();
    let seed = 12345;
    const rnd = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) | 0;
      return seed;
    };
    for (let i = 0; i < 50_000; i++) {
      // Mix of small consecutive marks (the usual case) and arbitrary int32s.
      const k = i % 3 === 0 ? rnd() : (rnd() >>> 0) % 5000;
      c.add(k);
      model.set(k, (model.get(k) ?? 0) + 1);
    }
    expect(c.size).toBe(model.size);
    expect(c.capacity).toBeGreaterThanOrEqual(model.size * 2);
    expect(c.capacity & (c.capacity - 1)).toBe(0);
    // Compared in bulk: one expect per key would take seconds.
    const seen = new Map<number, number>();
    let dupes = 0;
    c.forEach((k, n) => {
      if (seen.has(k)) dupes++;
      seen.set(k, n);
    });
    expect(dupes).toBe(0);
    expect(seen).toEqual(model);
    const wrong = [...model].filter(([k, n]) => c.get(k) !== n);
    expect(wrong).toEqual([]);
  });

  test('sized at construction, it does not grow for that many keys', () => {
    const c = new FwmarkCounter(300);
    const cap = c.capacity;
    for (let k = 0; k < 300; k++) c.add(k * 7919);
    expect(c.capacity).toBe(cap);
    expect(c.size).toBe(300);
  });
});

describe('BatchSizeHistogram', () => {
  test('puts each size in the first bucket whose bound is >= size', () => {
    const h = new BatchSizeHistogram();
    const sizes = [0, 1, 2, 3, 4, 5, 8, 9, 1023, 1024, 1025, 5000, 2 ** 40];
    for (const s of sizes) h.observe(s);
    const expected = new Float64Array(BATCH_SIZE_BUCKETS.length + 1);
    for (const s of sizes) {
      const i = BATCH_SIZE_BUCKETS.findIndex((b) => s <= b);
      expected[i < 0 ? BATCH_SIZE_BUCKETS.length : i]++;
    }
    expect(Array.from(h.bucketCounts)).toEqual(Array.from(expected));
    expect(h.count).toBe(sizes.length);
    expect(h.sum).toBe(sizes.reduce((a, b) => a + b, 0));
  });

  test('every size 0..1100 lands where a linear search says', () => {
    for (let s = 0; s <= 1100; s++) {
      const h = new BatchSizeHistogram();
      h.observe(s);
      const i = BATCH_SIZE_BUCKETS.findIndex((b) => s <= b);
      expect(h.bucketCounts.indexOf(1)).toBe(i < 0 ? BATCH_SIZE_BUCKETS.length : i);
    }
  });
});

describe('LabeledCounter', () => {
  test('counts pairs and folds pairs beyond the limit into other/other', () => {
    const c = new LabeledCounter(3);
    c.inc('set', 'ok');
    c.inc('set', 'ok', 2);
    c.inc('set', 'fail');
    c.inc('list', 'ok');
    c.inc('x1', 'ok');
    c.inc('x2', 'ok', 4);
    c.inc('set', 'ok');
    expect(c.get('set', 'ok')).toBe(4);
    expect(c.get('set', 'fail')).toBe(1);
    expect(c.get('x1', 'ok')).toBe(0);
    expect(c.get(LABEL_OVERFLOW, LABEL_OVERFLOW)).toBe(5);
    expect(c.size).toBe(4);
    const entries = c.entries();
    expect(entries.reduce((a, e) => a + e.count, 0)).toBe(11);
    entries[0].count = 1000; // a snapshot: changing it changes nothing
    expect(c.get(entries[0].action, entries[0].result)).not.toBe(1000);
  });
});

// ---------------------------------------------------------------------------
// Server

describe('KeyCounter', () => {
  test('counts keys and folds keys beyond the limit into other, keeping the total', () => {
    const c = new KeyCounter(3);
    for (const k of ['timeout', 'too_large', 'timeout', 'invalid_param']) c.inc(k);
    c.inc('line_too_long', 5);
    c.inc('timeout', 2);
    expect([c.get('timeout'), c.get('too_large'), c.get('invalid_param'), c.get('line_too_long'), c.get(LABEL_OVERFLOW), c.get('never')]).toEqual([4, 1, 1, 0, 5, 0]);
    expect(c.entries().reduce((n, e) => n + e.count, 0)).toBe(11);
  });
});
