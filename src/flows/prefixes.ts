/**
 * Address prefixes for the flow index, over 128-bit addresses as four int32
 * words (IPv4 CIDRs are ::ffff:0:0/96 + n, as the flows store them): mask
 * words per prefix length, the prefix length of a stored CIDR, and the
 * outermost CIDRs of a flow's list. Build time only; the packet path reads
 * the tables prefixTables() made.
 */
import { CIDR_WORDS } from './match';

/** The 32-bit mask word w (0-3) of a /prefix over 128 bits. */
export function maskWord(prefix: number, w: number): number {
  const bits = Math.min(32, Math.max(0, prefix - 32 * w));
  return bits === 0 ? 0 : bits === 32 ? -1 : (-1 << (32 - bits)) | 0;
}

export function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/** The prefix length of the CIDR at c[base..base+CIDR_WORDS): the bits set in its 4 mask words. */
export function cidrPrefix(c: Int32Array, base: number): number {
  return popcount(c[base + 4]) + popcount(c[base + 5]) + popcount(c[base + 6]) + popcount(c[base + 7]);
}

/**
 * The CIDR entries of c (CIDR_WORDS each; returned as their offsets into c)
 * that are not inside another entry of the same list (a duplicate keeps its
 * first copy): what is left is pairwise disjoint, so an address is in at
 * most one and a flow is a candidate at most once per packet.
 */
export function outermostCidrs(c: Int32Array): number[] {
  const n = c.length / CIDR_WORDS;
  const keep: number[] = [];
  for (let i = 0; i < n; i++) {
    const bi = i * CIDR_WORDS;
    const li = cidrPrefix(c, bi);
    let inside = false;
    for (let j = 0; j < n && !inside; j++) {
      if (j === i) continue;
      const bj = j * CIDR_WORDS;
      const lj = cidrPrefix(c, bj);
      if (lj > li || (lj === li && j > i)) continue;
      inside = true;
      for (let w = 0; w < 4; w++) if ((c[bi + w] & c[bj + 4 + w]) !== c[bj + w]) inside = false;
    }
    if (!inside) keep.push(bi);
  }
  return keep;
}

/** The 4 mask words of every prefix length 0..128. */
const PREFIX_MASKS = Int32Array.from({ length: 4 * 129 }, (_, i) => maskWord(i >> 2, i & 3));

/** The prefix lengths marked in `used` (129 entries; longest first) and their 4 mask words each. */
export function prefixTables(used: Uint8Array): [Int32Array, Int32Array] {
  const lens: number[] = [];
  for (let l = 128; l >= 0; l--) if (used[l] !== 0) lens.push(l);
  const masks = new Int32Array(4 * lens.length);
  lens.forEach((l, i) => masks.set(PREFIX_MASKS.subarray(4 * l, 4 * l + 4), 4 * i));
  return [Int32Array.from(lens), masks];
}
