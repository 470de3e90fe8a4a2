/**
 * MonotonicTotals: source readings folded into totals that never go down (a
 * lower reading or another instance is a restart), vanished series kept for
 * the retention and at least one more scrape, seeded series at 0; label
 * values from byte strings; keys that cannot collide; one read per scrape.
 */
import { Counter, Registry } from 'prom-client';
import { labelKey, labelText, MonotonicTotals, oncePerScrape, type Retention } from '../../../../src/services/metrics/totals';

/** A counter in a registry of its own, and what it exports now. */
function exported(): { counter: Counter<'k'>; values: () => Promise<Record<string, number>> } {
  const registry = new Registry();
  const counter = new Counter({ name: 't_total', help: 'test', labelNames: ['k'], registers: [registry] });
  const values = async (): Promise<Record<string, number>> =>
    Object.fromEntries((await counter.get()).values.map((v) => [String(v.labels.k), v.value]));
  return { counter, values };
}

describe('MonotonicTotals', () => {
  let t = 0;
  const retention: Retention = { ms: 100, now: () => t };
  beforeEach(() => {
    t = 0;
  });

  it('adds increases, and a whole reading after a restart (lower value or another instance)', async () => {
    const { counter, values } = exported();
    const totals = new MonotonicTotals<'k'>(retention);
    const a = {};
    totals.update('a', { k: 'a' }, 5, a);
    totals.writeTo(counter);
    expect(await values()).toEqual({ a: 5 });
    totals.update('a', { k: 'a' }, 8, a);
    totals.writeTo(counter);
    expect(await values()).toEqual({ a: 8 });
    totals.update('a', { k: 'a' }, 2, a); // went down: restarted at 0, 2 new
    totals.writeTo(counter);
    expect(await values()).toEqual({ a: 10 });
    totals.update('a', { k: 'a' }, 4, {}); // another instance: 4 new, though it grew
    totals.writeTo(counter);
    expect(await values()).toEqual({ a: 14 });
  });

  it('keeps a vanished series for the retention and at least one more scrape, then drops it', async () => {
    const { counter, values } = exported();
    const totals = new MonotonicTotals<'k'>(retention);
    totals.update('a', { k: 'a' }, 3);
    totals.writeTo(counter);
    t = 10;
    totals.writeTo(counter); // first scrape without it
    expect(await values()).toEqual({ a: 3 });
    t = 1000; // past the retention, and it was shown once gone
    totals.writeTo(counter);
    expect(await values()).toEqual({});
  });

  it('shows a vanished series once more even when the retention passed before that scrape', async () => {
    const { counter, values } = exported();
    const totals = new MonotonicTotals<'k'>(retention);
    totals.update('a', { k: 'a' }, 3);
    totals.writeTo(counter);
    t = 1000;
    totals.writeTo(counter);
    expect(await values()).toEqual({ a: 3 });
  });

  it('exports seeded series at 0 and keeps them', async () => {
    const { counter, values } = exported();
    const totals = new MonotonicTotals<'k'>(retention);
    totals.seed('s', { k: 's' });
    totals.writeTo(counter);
    t = 1000;
    totals.seed('s', { k: 's' });
    totals.writeTo(counter);
    expect(await values()).toEqual({ s: 0 });
  });
});

describe('labels', () => {
  it('decodes byte strings that are UTF-8 and never emits NUL', () => {
    expect(labelText('caf\xc3\xa9')).toBe('café');
    expect(labelText('\xff\xfe')).toBe('\xff\xfe'); // not UTF-8: as it is
    expect(labelText('a\0b')).toBe('a\ufffdb');
    expect(labelText('plain')).toBe('plain');
  });

  it('makes keys that do not collide across value boundaries', () => {
    expect(labelKey('a|b', 'c')).not.toBe(labelKey('a', 'b|c'));
    expect(labelKey('ab', '')).not.toBe(labelKey('a', 'b'));
  });
});

describe('oncePerScrape', () => {
  it('reads once per turn of the event loop', async () => {
    let reads = 0;
    const read = oncePerScrape(() => ++reads);
    expect([read(), read(), read()]).toEqual([1, 1, 1]);
    await Promise.resolve();
    expect(read()).toBe(2);
  });
});
