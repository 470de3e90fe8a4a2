/**
 * The keys the flow index files flows under, and probes packets with: five
 * int32 words, the first a tag saying what the other four are.
 *
 *   TAG_ANY  | list: the "any" list of a dimension (0-3: the port
 *              dimension's protocol classes, ANY_DST, ANY_SRC);
 *   TAG_PORT | class << 8 | level: word 1 is port >> level (portblocks.ts);
 *   TAG_DST / TAG_SRC | prefix length: words 1-4 the masked address.
 *
 * A flow is filed once per list it belongs to: per protocol class it can
 * match, under each of its port blocks (or that class's "any" list), and
 * under each outermost destination and source CIDR (or the "any" lists).
 */
import { IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../packet/hashkey';
import { hashKey5 } from './keytable';
import { protoBit, type Flow } from './match';
import { portBlocks, sortedRanges } from './portblocks';
import { cidrPrefix, outermostCidrs } from './prefixes';

/** The protocol classes of the port dimension and a protocol of each (0: none of tcp/udp/sctp). */
export const CLASS_PROTO = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, 0] as const;
export const CLASS_OTHER = 3;

export const TAG_ANY = 1 << 24;
export const TAG_PORT = 2 << 24;
export const TAG_DST = 3 << 24;
export const TAG_SRC = 4 << 24;
export const TAG_MASK = 0xff << 24;
/** The "any" lists after the four protocol classes'. */
export const ANY_DST = 4;
export const ANY_SRC = 5;
export const ANY_LISTS = 6;

/** Words per key in flowKeys(): the 5 key words and their hashKey5(). */
export const KEY_WORDS = 6;

/** The port dimension's class of an IP protocol. */
export function protoClass(proto: number): number {
  switch (proto) {
    case IPPROTO_TCP:
      return 0;
    case IPPROTO_UDP:
      return 1;
    case IPPROTO_SCTP:
      return 2;
    default:
      return CLASS_OTHER;
  }
}

/** The keys of each flow seen, made once: flows are immutable, a redefinition is a new Flow. */
const keysOfFlow = new WeakMap<object, Int32Array>();

/** The index keys flow f is filed under (KEY_WORDS each), one per list it belongs to. */
export function flowKeys<T>(f: Flow<T>): Int32Array {
  let k = keysOfFlow.get(f);
  if (k !== undefined) return k;
  const out: number[] = [];
  const push = (a: number, b: number, c: number, d: number, e: number): void => {
    const k5 = Int32Array.of(a, b, c, d, e);
    out.push(k5[0], k5[1], k5[2], k5[3], k5[4], hashKey5(k5, 0, -1));
  };
  const blocks: number[] = [];
  const blocksOk = f.dports !== null && sortedRanges(f.dports) && portBlocks(f.dports, blocks);
  for (let cls = 0; cls < 4; cls++) {
    if (f.protoMask !== 0 && (f.protoMask & protoBit(CLASS_PROTO[cls])) === 0) continue;
    if (!blocksOk) push(TAG_ANY | cls, 0, 0, 0, 0);
    else for (let b = 0; b < blocks.length; b += 2) push(TAG_PORT | (cls << 8) | blocks[b], blocks[b + 1], 0, 0, 0);
  }
  for (const [c, tag, any] of [[f.dsts, TAG_DST, ANY_DST], [f.srcs, TAG_SRC, ANY_SRC]] as const) {
    if (c === null) {
      push(TAG_ANY | any, 0, 0, 0, 0);
      continue;
    }
    for (const base of outermostCidrs(c)) {
      push(tag | cidrPrefix(c, base), c[base] & c[base + 4], c[base + 1] & c[base + 5], c[base + 2] & c[base + 6], c[base + 3] & c[base + 7]);
    }
  }
  k = Int32Array.from(out);
  keysOfFlow.set(f, k);
  return k;
}
