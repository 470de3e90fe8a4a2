/**
 * Counters that never go down while the process lives, folded from the
 * source's readings, and the label values they carry.
 *
 * nfqlb restarts a flow's `matches` at 0 when the flow is set again, and a
 * re-bound queue gets fresh kernel counters: a reading below the last one, or
 * another `instance`, is taken as a restart and never exported as a decrease.
 * Series of things that went away keep their last value for a retention time
 * and at least one more scrape, then go (docs/metrics.md).
 */
import { isUtf8 } from 'node:buffer';
import type { Counter } from 'prom-client';

export type Labels<L extends string> = Record<L, string>;

interface Series<L extends string> {
  labels: Labels<L>;
  instance: unknown;
  /** The source's value at the previous update. */
  last: number;
  /** What is exported: the sum of all increases seen. */
  total: number;
  /** The round (scrape) of the last update. */
  round: number;
  /** When the source was first seen without this series (ms), or -1 while it is there. */
  goneSince: number;
  /** Exported in a scrape after it went away. */
  shownGone: boolean;
}

/** The retention of vanished series, shared by the MonotonicTotals of one registry. */
export interface Retention {
  ms: number;
  now: () => number;
}

/**
 * Turns "current value of a source counter" readings into a monotonic total
 * per label set. Increase since the last reading is added; a reading below the
 * last one, or a changed `instance`, means the source counter restarted from 0,
 * so the whole reading is new and is added. A series whose source is no longer
 * reported (a deleted flow) keeps its last value for the retention, then is
 * removed; if it comes back later it starts again from its new reading, which
 * Prometheus takes as a counter reset (rate() and increase() handle it).
 * Their number is bounded by what the operator configures, not by traffic.
 */
export class MonotonicTotals<L extends string> {
  private readonly series = new Map<string, Series<L>>();
  private round = 0;

  constructor(private readonly retention: Retention) {}

  /** `key` must identify the label set (see labelKey); `labels` is only kept for a new series. */
  update(key: string, labels: Labels<L>, current: number, instance?: unknown): void {
    const s = this.series.get(key);
    if (s === undefined) {
      this.series.set(key, { labels, instance, last: current, total: current, round: this.round, goneSince: -1, shownGone: false });
      return;
    }
    s.round = this.round;
    s.goneSince = -1;
    s.shownGone = false;
    if (s.instance !== instance || current < s.last) s.total += current;
    else s.total += current - s.last;
    s.last = current;
    s.instance = instance;
  }

  /**
   * Makes sure a series exists, at 0 if the source has not reported it: a
   * counter that appears only at its first increment starts at 1, and
   * Prometheus' rate() and increase() never see that first one (an alert on
   * the first failed flow-set would not fire).
   */
  seed(key: string, labels: Labels<L>): void {
    const s = this.series.get(key);
    if (s === undefined) this.series.set(key, { labels, instance: undefined, last: 0, total: 0, round: this.round, goneSince: -1, shownGone: false });
    else if (s.round !== this.round) {
      s.round = this.round;
      s.goneSince = -1;
      s.shownGone = false;
    }
  }

  /**
   * Makes `counter` hold exactly the totals. reset() + inc(total) rather than
   * inc(delta): the totals here are the one source of truth, so the exported
   * value stays right even if someone resets the registry's metrics.
   */
  writeTo(counter: Counter<L>): void {
    counter.reset();
    const now = this.retention.now();
    for (const [key, s] of this.series) {
      if (s.round !== this.round) {
        if (s.goneSince < 0) s.goneSince = now;
        else if (s.shownGone && now - s.goneSince >= this.retention.ms) {
          this.series.delete(key);
          continue;
        }
        s.shownGone = true;
      }
      counter.inc(s.labels, s.total);
    }
    this.round++;
  }
}

/**
 * A flow or target name as a label value. The daemon holds names as byte
 * strings (one char per byte, as its control server reads them); bytes that
 * are UTF-8 are decoded, so the label shows the name as it was typed. Other
 * strings are used as they are. NUL, which the text format cannot carry, is
 * never emitted (U+FFFD). prom-client then escapes `\\`, `"` and newline as the
 * Prometheus text format wants.
 */
export function labelText(name: string): string {
  let text = name;
  if (/[\x80-\xff]/.test(text) && !/[^\x00-\xff]/.test(text)) {
    const bytes = Buffer.from(text, 'latin1');
    if (isUtf8(bytes)) text = bytes.toString('utf8');
  }
  return text.includes('\0') ? text.replace(/\0/g, '\ufffd') : text;
}

/** An unambiguous map key for a list of label values (length-prefixed, so "a|b"+"c" ≠ "a"+"b|c"). */
export function labelKey(...values: string[]): string {
  let k = '';
  for (const v of values) k += `${v.length}:${v}`;
  return k;
}

/**
 * `read` called at most once per scrape: the first collect() of a scrape
 * reads, the others of the same scrape (same tick) get that reading.
 */
export function oncePerScrape<T>(read: () => T | null): () => T | null {
  let cached: T | null | undefined;
  return () => {
    if (cached === undefined) {
      cached = read();
      queueMicrotask(() => {
        cached = undefined;
      });
    }
    return cached;
  };
}
