/**
 * Log lines that something hostile or broken can trigger at any rate (refused
 * control requests, bad packets, verdict errors, signals) go through here: at
 * most one line per key per interval, carrying how many happened. A flood of
 * 2,000 junk requests is then a handful of lines, not 300 KB.
 *
 * Keys must come from a bounded vocabulary (reasons, signal names); past
 * MAX_KEYS any new key is counted under "other" (one more) so memory stays bounded.
 */

/** Distinct keys kept; more are folded into "other". */
export const MAX_KEYS = 64;

/** What is written: the key, how many times it happened since the last line, the latest detail. */
export type RateLogWriter = (key: string, count: number, detail: string | undefined) => void;

interface Pending {
  /** Occurrences not yet reported. */
  count: number;
  detail: string | undefined;
  /** When the last line for this key was written (ms, from `now`). */
  lastLine: number;
}

/**
 * Contract: the first occurrence of a key is written at once (count 1); later
 * ones within `intervalMs` of the last line are only counted, and written by
 * the next flush() (or note()) once the interval has passed, as one line with
 * the count and the latest detail. Call flush() from a timer (the daemon does
 * it every second); nothing here starts a timer.
 */
export class RateLimitedLog {
  private readonly keys = new Map<string, Pending>();

  constructor(
    private readonly write: RateLogWriter,
    private readonly intervalMs = 1000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Counts one occurrence of `key` (with an optional, already escaped, detail). */
  note(key: string, detail?: string, n = 1): void {
    let p = this.keys.get(key);
    if (p === undefined) {
      if (this.keys.size >= MAX_KEYS && key !== 'other') {
        this.note('other', detail, n);
        return;
      }
      p = { count: 0, detail, lastLine: -Infinity };
      this.keys.set(key, p);
    }
    p.count += n;
    p.detail = detail;
    this.report(key, p, this.now());
  }

  /** Writes the lines that are due. */
  flush(): void {
    const t = this.now();
    for (const [key, p] of this.keys) this.report(key, p, t);
  }

  private report(key: string, p: Pending, t: number): void {
    if (p.count === 0 || t - p.lastLine < this.intervalMs) return;
    const count = p.count;
    p.count = 0;
    p.lastLine = t;
    this.write(key, count, p.detail);
  }
}

/**
 * Bytes a peer sent, made safe for one log line: printable ASCII is kept,
 * anything else (and the backslash) becomes \xHH, and the result is cut at
 * `max` characters with a note of how much was left out.
 */
export function escapeBytes(text: string, max = 80): string {
  let out = '';
  let i = 0;
  for (; i < text.length && out.length < max; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x20 && c < 0x7f && c !== 0x5c) out += text[i];
    else out += `\\x${(c & 0xff).toString(16).padStart(2, '0')}`;
  }
  if (i < text.length) out += `...(+${text.length - i} chars)`;
  return out;
}
