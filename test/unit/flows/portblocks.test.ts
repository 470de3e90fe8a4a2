/**
 * Port ranges as aligned power-of-two blocks (portblocks.ts): the blocks
 * cover exactly the ports of the ranges, no port twice, each block aligned
 * to its size, and a set that needs too many blocks is refused.
 */
import { MAX_PORT_BLOCKS, portBlocks, sortedRanges } from '../../../src/flows/portblocks';
import { prng } from '../../helpers/prng';

/** The ports the blocks (level, port >> level) cover, each once, or throws on a port covered twice or a misaligned block. */
function covered(blocks: number[]): Set<number> {
  const ports = new Set<number>();
  for (let b = 0; b < blocks.length; b += 2) {
    const level = blocks[b];
    const first = blocks[b + 1] << level;
    if (level < 0 || level > 16) throw new Error(`level ${level}`);
    for (let p = first; p < first + (1 << level); p++) {
      if (ports.has(p)) throw new Error(`port ${p} in two blocks`);
      ports.add(p);
    }
  }
  return ports;
}

describe('portBlocks', () => {
  test('single ports, aligned ranges, the whole space', () => {
    const out: number[] = [];
    expect(portBlocks(Int32Array.of(80, 80), out)).toBe(true);
    expect(out).toEqual([0, 80]);
    expect(portBlocks(Int32Array.of(1024, 2047), out)).toBe(true);
    expect(out).toEqual([10, 1]);
    expect(portBlocks(Int32Array.of(0, 65535), out)).toBe(true);
    expect(out).toEqual([16, 0]);
    expect(portBlocks(Int32Array.of(1, 6), out)).toBe(true);
    expect(out).toEqual([0, 1, 1, 1, 1, 2, 0, 6]); // 1, 2-3, 4-5, 6
  });

  test('random sets: exactly their ports, or refused when they need more than MAX_PORT_BLOCKS blocks', () => {
    const rnd = prng(9);
    const out: number[] = [];
    let refused = 0;
    for (let round = 0; round < 300; round++) {
      const pairs: number[] = [];
      let at = Math.floor(rnd() * 3000);
      for (let n = 1 + Math.floor(rnd() * 4); n > 0 && at <= 65535; n--) {
        const hi = Math.min(65535, at + Math.floor(rnd() * (rnd() < 0.5 ? 64 : 20000)));
        pairs.push(at, hi);
        at = hi + 1 + Math.floor(rnd() * 2000); // adjacent ranges (gap 0) too: merged
      }
      const want = new Set<number>();
      for (let i = 0; i < pairs.length; i += 2) for (let p = pairs[i]; p <= pairs[i + 1]; p++) want.add(p);
      if (!portBlocks(Int32Array.from(pairs), out)) {
        refused++;
        continue;
      }
      expect(out.length).toBeLessThanOrEqual(2 * MAX_PORT_BLOCKS);
      const got = covered(out);
      if (got.size !== want.size || [...want].some((p) => !got.has(p))) throw new Error(`ranges ${pairs.join(',')}: blocks ${out.join(',')}`);
    }
    expect(refused).toBeGreaterThan(0);
    expect(refused).toBeLessThan(300);
  });

  test('overlapping ranges (a hand-made flow) are merged first: no port in two blocks', () => {
    const out: number[] = [];
    expect(portBlocks(Int32Array.of(10, 20, 15, 30, 31, 31), out)).toBe(true);
    expect([...covered(out)].sort((a, b) => a - b)).toEqual(Array.from({ length: 22 }, (_, i) => 10 + i));
  });

  test('the odd range 1-65535 needs 16 blocks; an alternating set of 33 single ports is refused', () => {
    const out: number[] = [];
    expect(portBlocks(Int32Array.of(1, 65535), out)).toBe(true);
    expect(out.length / 2).toBe(16);
    const alternating = Int32Array.from(Array.from({ length: MAX_PORT_BLOCKS + 1 }, (_, i) => [2 * i + 1, 2 * i + 1]).flat());
    expect(portBlocks(alternating, out)).toBe(false);
    expect(portBlocks(alternating.subarray(0, 2 * MAX_PORT_BLOCKS), out)).toBe(true);
  });
});

describe('sortedRanges', () => {
  test('by start', () => {
    expect(sortedRanges(Int32Array.of(1, 5, 3, 4))).toBe(true);
    expect(sortedRanges(Int32Array.of(5, 6, 1, 2))).toBe(false);
    expect(sortedRanges(new Int32Array(0))).toBe(true);
  });
});
