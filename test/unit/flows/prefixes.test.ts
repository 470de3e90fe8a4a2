/**
 * Prefixes for the flow index (prefixes.ts): mask words per prefix length,
 * a CIDR's length from its mask, the outermost CIDRs of a list (disjoint,
 * covering the same addresses), and the tables of lengths in use.
 */
import { cidrPrefix, maskWord, outermostCidrs, popcount, prefixTables } from '../../../src/flows/prefixes';
import { CIDR_WORDS, type Flow } from '../../../src/flows/match';
import { compileFlow } from '../../../src/flows/parse';
import { prng } from '../../helpers/prng';

function dsts(text: string): Int32Array {
  const f = compileFlow<null>({ name: 'f', target: null, dsts: text }) as Flow<null>;
  return f.dsts as Int32Array;
}

/** The CIDR at c[base..] as (bigint network, length). */
function cidrAt(c: Int32Array, base: number): { net: bigint; len: number } {
  let net = 0n;
  for (let w = 0; w < 4; w++) net = (net << 32n) | BigInt(c[base + w] >>> 0);
  return { net, len: cidrPrefix(c, base) };
}

const inside = (a: bigint, n: { net: bigint; len: number }): boolean => n.len === 0 || a >> BigInt(128 - n.len) === n.net >> BigInt(128 - n.len);

describe('masks and lengths', () => {
  test('maskWord: the 4 words of /0, /1, /32, /33, /96, /120, /128', () => {
    const words = (len: number): number[] => [0, 1, 2, 3].map((w) => maskWord(len, w));
    expect(words(0)).toEqual([0, 0, 0, 0]);
    expect(words(1)).toEqual([0x80000000 | 0, 0, 0, 0]);
    expect(words(32)).toEqual([-1, 0, 0, 0]);
    expect(words(33)).toEqual([-1, 0x80000000 | 0, 0, 0]);
    expect(words(96)).toEqual([-1, -1, -1, 0]);
    expect(words(120)).toEqual([-1, -1, -1, 0xffffff00 | 0]);
    expect(words(128)).toEqual([-1, -1, -1, -1]);
  });

  test('popcount of 32-bit words; cidrPrefix of compiled CIDRs', () => {
    expect([0, 1, -1, 0x80000000 | 0, 0x0f0f0f0f].map(popcount)).toEqual([0, 1, 32, 1, 16]);
    const c = dsts('192.0.2.0/24,2001:db8::/33,::/0');
    expect([0, 1, 2].map((i) => cidrPrefix(c, i * CIDR_WORDS))).toEqual([120, 33, 0]);
  });

  test('prefixTables: the lengths in use, longest first, with their mask words', () => {
    const used = new Uint8Array(129);
    used[0] = used[120] = used[33] = 1;
    const [lens, masks] = prefixTables(used);
    expect(Array.from(lens)).toEqual([120, 33, 0]);
    expect(Array.from(masks)).toEqual([-1, -1, -1, 0xffffff00 | 0, -1, 0x80000000 | 0, 0, 0, 0, 0, 0, 0]);
    expect(prefixTables(new Uint8Array(129)).map((a) => a.length)).toEqual([0, 0]);
  });
});

describe('outermostCidrs', () => {
  test('nested and duplicate CIDRs: the outer one stays, a duplicate keeps its first copy', () => {
    const c = dsts('192.0.2.0/26,192.0.2.0/24,198.51.100.7/32,192.0.2.128/25,198.51.100.7/32');
    expect(outermostCidrs(c)).toEqual([1 * CIDR_WORDS, 2 * CIDR_WORDS]);
    expect(outermostCidrs(dsts('::/0,2001:db8::/32'))).toEqual([0]);
  });

  test('random lists: what is kept is pairwise disjoint and covers every address the list covers', () => {
    const rnd = prng(13);
    const bases = ['192.0.2.0', '192.0.2.128', '198.51.100.0', '2001:db8::', '2001:db8:8000::', '::'];
    for (let round = 0; round < 300; round++) {
      const items = Array.from({ length: 1 + Math.floor(rnd() * 8) }, () => {
        const b = bases[Math.floor(rnd() * bases.length)];
        const v6 = b.includes(':');
        return `${b}/${Math.floor(rnd() * (v6 ? 129 : 33))}`;
      });
      const c = dsts(items.join(','));
      const all = Array.from({ length: c.length / CIDR_WORDS }, (_, i) => cidrAt(c, i * CIDR_WORDS));
      const kept = outermostCidrs(c).map((b) => cidrAt(c, b));
      for (let i = 0; i < kept.length; i++) {
        for (let j = i + 1; j < kept.length; j++) {
          const [a, b] = [kept[i], kept[j]];
          if (inside(a.net, b) || inside(b.net, a)) throw new Error(`${items.join(',')}: kept ${i} and ${j} overlap`);
        }
      }
      // Every CIDR of the list lies inside a kept one.
      for (const x of all) if (!kept.some((k) => k.len <= x.len && inside(x.net, k))) throw new Error(`${items.join(',')}: nothing kept covers one`);
    }
  });
});
