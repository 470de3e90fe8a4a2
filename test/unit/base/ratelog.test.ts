/**
 * Rate-limited log lines: the first occurrence of a key is written at once,
 * a flood becomes one line per key per interval with the count, keys are
 * bounded, and peer bytes are escaped and cut. Time is a fake clock.
 */
import { escapeBytes, MAX_KEYS, RateLimitedLog } from '../../../src/base/ratelog';

function harness(): { log: RateLimitedLog; lines: Array<[string, number, string | undefined]>; advance(ms: number): void } {
  let t = 0;
  const lines: Array<[string, number, string | undefined]> = [];
  const log = new RateLimitedLog((k, c, d) => lines.push([k, c, d]), 1000, () => t);
  return { log, lines, advance: (ms) => (t += ms) };
}

describe('RateLimitedLog', () => {
  it('writes the first occurrence at once and counts the rest until the interval passed', () => {
    const h = harness();
    h.log.note('refused:timeout', 'a');
    expect(h.lines).toEqual([['refused:timeout', 1, 'a']]);
    for (let i = 0; i < 1999; i++) h.log.note('refused:timeout', `x${i}`);
    h.log.flush();
    expect(h.lines).toHaveLength(1);
    h.advance(1000);
    h.log.flush();
    expect(h.lines).toEqual([
      ['refused:timeout', 1, 'a'],
      ['refused:timeout', 1999, 'x1998'],
    ]);
    h.advance(5000);
    h.log.flush();
    expect(h.lines).toHaveLength(2);
  });

  it('keeps keys apart and counts n at a time', () => {
    const h = harness();
    h.log.note('packets:invalid', undefined, 40);
    h.log.note('queue:send', 'q0', 3);
    expect(h.lines).toEqual([
      ['packets:invalid', 40, undefined],
      ['queue:send', 3, 'q0'],
    ]);
  });

  it('folds keys beyond MAX_KEYS into "other"', () => {
    const h = harness();
    for (let i = 0; i < MAX_KEYS + 10; i++) h.log.note(`k${i}`);
    expect(h.lines.filter(([k]) => k === 'other')).toHaveLength(1);
    expect(new Set(h.lines.map(([k]) => k)).size).toBe(MAX_KEYS + 1);
  });
});

describe('escapeBytes', () => {
  it('keeps printable ASCII, escapes the rest and cuts long input', () => {
    expect(escapeBytes('FAIL: invalid param [ok]')).toBe('FAIL: invalid param [ok]');
    expect(escapeBytes('a\nb\x00\\\xff')).toBe('a\\x0ab\\x00\\x5c\\xff');
    const long = 'x'.repeat(1000);
    const out = escapeBytes(long, 80);
    expect(out).toBe(`${'x'.repeat(80)}...(+920 chars)`);
    expect(escapeBytes('\x01'.repeat(100), 8)).toBe('\\x01\\x01...(+98 chars)');
  });
});
