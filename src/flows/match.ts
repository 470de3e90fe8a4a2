/**
 * A compiled flow and the tests of one packet against it — nfqlb's
 * flowLookup() per-flow test: CIDR sets, port ranges (rangeset.c), protocol
 * mask and byte matches (match.c). Both the flow set's linear walk (flowset.ts)
 * and the flow index (lookup.ts) use these, so the two always agree.
 *
 * Per packet: everything here reads typed arrays made when the flow was
 * compiled (parse.ts); no allocation, no exceptions, no string work.
 */
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, KEY_DST, KEY_ID, KEY_SRC } from '../packet/hashkey';
import { RC_ICMP_ERROR, type PacketInfo } from '../packet/classify';

export const PROTO_BIT_TCP = 1;
export const PROTO_BIT_UDP = 2;
export const PROTO_BIT_SCTP = 4;

/** The bit of an L4 protocol in a flow's protocol mask; 0 for anything else. */
export function protoBit(proto: number): number {
  switch (proto) {
    case IPPROTO_TCP:
      return PROTO_BIT_TCP;
    case IPPROTO_UDP:
      return PROTO_BIT_UDP;
    case IPPROTO_SCTP:
      return PROTO_BIT_SCTP;
    default:
      return 0;
  }
}

/** Fixed header length a byte match may address (match.c headerlength). */
export function headerLength(proto: number): number {
  switch (proto) {
    case IPPROTO_SCTP:
      return 12;
    case IPPROTO_TCP:
      return 20;
    case IPPROTO_UDP:
      return 8;
    default:
      return 0;
  }
}

/** Words per compiled CIDR: 4 address words (pre-masked) then 4 mask words. */
export const CIDR_WORDS = 8;

/** Words per compiled match statement: proto, offset, nbytes, mask, value. */
export const MATCH_WORDS = 5;

/** One flow, compiled. Treat every field as read-only except `matches`. */
export class Flow<T> {
  /** Packets this flow matched (nfqlb's matches_count). Starts at 0 on every set. */
  matches = 0;

  constructor(
    readonly name: string,
    readonly priority: number,
    readonly target: T | null,
    readonly udpencap: number,
    /** PROTO_BIT_* of the allowed protocols; 0: protocols not given (any protocol). */
    readonly protoMask: number,
    /** CIDR_WORDS per entry; null: any address. */
    readonly dsts: Int32Array | null,
    readonly srcs: Int32Array | null,
    /** Sorted disjoint [lo, hi] pairs; null: any port. */
    readonly dports: Int32Array | null,
    readonly sports: Int32Array | null,
    /** MATCH_WORDS per statement; null: no byte match. */
    readonly match: Uint32Array | null,
    /** Listing texts, made once at define time. */
    readonly dstsText: readonly string[] | null,
    readonly srcsText: readonly string[] | null,
  ) {}
}

/** A set of ports, binary searched. */
export function inRanges(r: Int32Array, v: number): boolean {
  let lo = 0;
  let hi = (r.length >> 1) - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (v < r[2 * mid]) hi = mid - 1;
    else if (v > r[2 * mid + 1]) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Whether the address in w[at..at+4) is in any of the CIDRs. */
export function inCidrs(c: Int32Array, w: Int32Array, at: number): boolean {
  const w0 = w[at];
  const w1 = w[at + 1];
  const w2 = w[at + 2];
  const w3 = w[at + 3];
  for (let i = 0; i < c.length; i += CIDR_WORDS) {
    if ((w0 & c[i + 4]) === c[i] && (w1 & c[i + 5]) === c[i + 1] && (w2 & c[i + 6]) === c[i + 2] && (w3 & c[i + 7]) === c[i + 3]) {
      return true;
    }
  }
  return false;
}

/**
 * The byte-match statements of a flow against one packet; statements for
 * another protocol than the packet's are ignored (match.c). The header the
 * ports came from must be whole, as in nfqlb; bytes are only read inside
 * pkt and inside info.l4Len.
 * ICMP errors: nfqlb finds the outer ICMP header, so every statement is
 * ignored; the same here (the inner header is the reverse direction anyway).
 */
export function matchBytes(m: Uint32Array, proto: number, info: PacketInfo, pkt: Uint8Array): boolean {
  if (info.rc > 0 && (info.rc & RC_ICMP_ERROR) !== 0) return true;
  const hlen = headerLength(proto);
  if (hlen === 0) return true;
  const l4 = info.l4Offset;
  const avail = Math.min(info.l4Len, pkt.length - l4);
  if (!(l4 >= 0) || !(avail >= hlen)) return false;
  for (let i = 0; i < m.length; i += MATCH_WORDS) {
    if (m[i] !== proto) continue;
    const p = l4 + m[i + 1];
    const n = m[i + 2];
    let x: number;
    if (n === 1) x = pkt[p];
    else if (n === 2) x = (pkt[p] << 8) | pkt[p + 1];
    else x = ((pkt[p] << 24) | (pkt[p + 1] << 16) | (pkt[p + 2] << 8) | pkt[p + 3]) >>> 0;
    const mask = m[i + 3];
    if (mask !== 0) x = (x & mask) >>> 0;
    if (x !== m[i + 4]) return false;
  }
  return true;
}

/**
 * Whether a packet is a ping that --promiscuous_ping lets match on addresses
 * alone: ICMP or ICMPv6 with a non-zero echo id in the key (nfqlb's rule).
 */
export function isPromiscuousPing(key: Uint8Array, proto: number): boolean {
  return (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) && (key[KEY_ID] | key[KEY_ID + 1]) !== 0;
}

/**
 * Loads a hash key's addresses as the matchers read them: w[0..3] the source,
 * w[4..7] the destination, each a big-endian 32-bit word of the 16-byte field.
 * Prerequisite: key.length >= 32, w.length >= 8 (w is the caller's scratch, so nothing is allocated).
 */
export function loadAddressWords(key: Uint8Array, w: Int32Array): void {
  for (let i = 0; i < 4; i++) {
    const s = KEY_SRC + 4 * i;
    const d = KEY_DST + 4 * i;
    w[i] = (key[s] << 24) | (key[s + 1] << 16) | (key[s + 2] << 8) | key[s + 3];
    w[4 + i] = (key[d] << 24) | (key[d + 1] << 16) | (key[d + 2] << 8) | key[d + 3];
  }
}

/**
 * Whether flow f contains the packet: the test lookupLinear() makes of each
 * flow, for the flow index (lookup.ts). w: the packet's addresses as
 * lookupLinear() loads them (src words 0-3, dst 4-7); ping: the packet is a
 * promiscuous ping, so only the addresses count.
 */
export function flowContains<T>(
  f: Flow<T>, w: Int32Array, proto: number, sport: number, dport: number, ping: boolean, info: PacketInfo, pkt: Uint8Array,
): boolean {
  if (f.dsts !== null && !inCidrs(f.dsts, w, 4)) return false;
  if (f.srcs !== null && !inCidrs(f.srcs, w, 0)) return false;
  if (ping) return true;
  if (f.protoMask !== 0 && (f.protoMask & protoBit(proto)) === 0) return false;
  if (f.dports !== null && !inRanges(f.dports, dport)) return false;
  if (f.sports !== null && !inRanges(f.sports, sport)) return false;
  return f.match === null || matchBytes(f.match, proto, info, pkt);
}

