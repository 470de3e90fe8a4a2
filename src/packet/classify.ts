/**
 * Packet classification: reduce one raw IPv4/IPv6 packet (as NFQUEUE delivers
 * it, no link header) to nfqlb's 40-byte hash key and a classification code
 * (as nfqlb's getHashKey() does). This is on the per-packet path: it writes into a caller-owned
 * PacketInfo, allocates nothing, never throws, and never reads outside
 * pkt[off, off+len).
 *
 * Validity rule (where this diverges from nfqlb): a packet is valid when every byte
 * the key needs lies inside it. nfqlb wants one byte more than it reads
 * (IN_BOUNDS uses '<'), reads the ICMP type and echo id unchecked, and walks
 * IPv6 extension headers as hdrlen*8; here bounds are exact and extension
 * headers are (hdrlen+1)*8 as RFC 8200 says.
 */
import { KEY_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from './hashkey';

/** Classification bits, as nfqlb's getHashKey() returns them. */
export const RC_INVALID = -1;
export const RC_FIRST_FRAGMENT = 1;
export const RC_LATER_FRAGMENT = 2;
export const RC_UDP_ENCAP = 4;
export const RC_ICMP_ERROR = 8;
export const RC_ICMP_OTHER = 16;
export const RC_OTHER_PROTO = 32;

/** What classify() found out about one packet. Reused across packets. */
export class PacketInfo {
  /** The hash key (layout in hashkey.ts). */
  readonly key = new Uint8Array(KEY_LEN);
  /** The key as 32-bit words, so clearing it per packet is ten stores, not a call into TypedArray.prototype.fill's builtin. */
  readonly keyWords = new Int32Array(this.key.buffer, 0, KEY_LEN >> 2);
  /** Classification bit set, or RC_INVALID. */
  rc = RC_INVALID;
  /**
   * 6 when the version nibble is 6, else 4 (the header is parsed as IPv4, see
   * classify()); also set for invalid packets; 0 for an empty range.
   */
  ipVersion = 0;
  /** Protocol in the key (after SCTP-over-UDP and ICMP-error handling). */
  proto = 0;
  /** Ports in the key, host order. */
  sport = 0;
  dport = 0;
  /**
   * Fragment identification when rc has bit 1 or 2, else 0: the IPv4 id
   * (0..65535) or the IPv6 ident (0..2^32-1), read as a big-endian number.
   * With the addresses in key[0..32) it names the datagram: a first and a
   * later fragment of one datagram have equal key[0..32) and fragId.
   */
  fragId = 0;
  /**
   * When rc has bit 1 or 2: where this fragment's data lies in the original
   * datagram's fragmentable part (bytes), how many bytes it carries (from the
   * IP header's length fields, so a packet cut by the copy range still counts
   * whole; -1 when the header's lengths are impossible), and 1 when more
   * fragments follow (MF / M flag). For the reassembly bookkeeping.
   */
  fragOffset = 0;
  fragLength = -1;
  fragMore = 0;
  /**
   * Offset in the packet buffer of the L4 header whose fields fill the key
   * (inner header for ICMP errors and SCTP over UDP), and the bytes available
   * from it to the end of the packet; -1 and 0 when there is none.
   * For other ICMP (rc bit 16) it is the ICMP header when its type byte is present.
   */
  l4Offset = -1;
  l4Len = 0;
  /** ICMP/ICMPv6 type and code of the outer ICMP header, -1 when not ICMP (or not present). */
  icmpType = -1;
  icmpCode = -1;
}

const IPV4_HDR_LEN = 20;
const IPV6_HDR_LEN = 40;
const IPV6_FRAG_HDR_LEN = 8;
/** The offending datagram starts 8 bytes into an ICMP error (RFC 792, RFC 4443). */
const ICMP_ERROR_HDR_LEN = 8;
const UDP_HDR_LEN = 8;

const IPV6_HOPOPTS = 0;
const IPV6_ROUTING = 43;
const IPV6_FRAGMENT = 44;
const IPV6_DSTOPTS = 60;

const ICMP_DEST_UNREACH = 3;
const ICMP_SOURCE_QUENCH = 4;
const ICMP_REDIRECT = 5;
const ICMP_ECHO = 8;
const ICMP_TIME_EXCEEDED = 11;
const ICMP6_DST_UNREACH = 1;
const ICMP6_PACKET_TOO_BIG = 2;
const ICMP6_ECHO_REQUEST = 128;

/**
 * Classifies pkt[off, off+len) into `info` and returns info.rc.
 * `udpencap` is the UDP port carrying SCTP (0: none).
 * On RC_INVALID the key is all zero and the other fields are at their defaults
 * (except ipVersion). A range outside pkt is classified invalid.
 */
export function classify(pkt: Uint8Array, off: number, len: number, udpencap: number, info: PacketInfo): number {
  reset(info);
  let rc = RC_INVALID;
  if (off >= 0 && len > 0 && off + len <= pkt.length) {
    const end = off + len;
    // nfqlb dispatches on the L2 protocol NFQUEUE reports, which we are not
    // given; the kernel drops packets whose version nibble disagrees with it
    // before netfilter, so this only matters for synthetic input. The
    // reference was keyed as IPv6 for nibble 6 and as IPv4 otherwise (k1
    // i=905 has nibble 8 and is keyed as IPv4): do the same. An invalid
    // packet is reset again so no partial result leaks to callers that read
    // fields without checking rc.
    if (pkt[off] >> 4 === 6) {
      rc = classify6(pkt, off, end, udpencap, info);
      if (rc === RC_INVALID) reset(info);
      info.ipVersion = 6;
    } else {
      rc = classify4(pkt, off, end, udpencap, info);
      if (rc === RC_INVALID) reset(info);
      info.ipVersion = 4;
    }
  }
  info.rc = rc;
  return rc;
}

function reset(info: PacketInfo): void {
  const words = info.keyWords;
  for (let i = 0; i < words.length; i++) words[i] = 0;
  info.rc = RC_INVALID;
  info.ipVersion = 0;
  info.proto = 0;
  info.sport = 0;
  info.dport = 0;
  info.fragId = 0;
  info.fragOffset = 0;
  info.fragLength = -1;
  info.fragMore = 0;
  info.l4Offset = -1;
  info.l4Len = 0;
  info.icmpType = -1;
  info.icmpCode = -1;
}

function u16(pkt: Uint8Array, p: number): number {
  return (pkt[p] << 8) | pkt[p + 1];
}

function isPortProto(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP;
}

function isIpv6ExtHdr(nxt: number): boolean {
  // AH and ESP are not walked, as in nfqlb: they are "other protocols".
  return nxt === IPV6_HOPOPTS || nxt === IPV6_ROUTING || nxt === IPV6_FRAGMENT || nxt === IPV6_DSTOPTS;
}

/** IPv4 addresses as ::ffff:a.b.c.d; src/dst are offsets of the 4-byte addresses. */
function setAddr4(key: Uint8Array, pkt: Uint8Array, src: number, dst: number): void {
  key[10] = 0xff;
  key[11] = 0xff;
  key[26] = 0xff;
  key[27] = 0xff;
  for (let i = 0; i < 4; i++) {
    key[12 + i] = pkt[src + i];
    key[28 + i] = pkt[dst + i];
  }
}

function setAddr6(key: Uint8Array, pkt: Uint8Array, src: number, dst: number): void {
  for (let i = 0; i < 16; i++) {
    key[i] = pkt[src + i];
    key[16 + i] = pkt[dst + i];
  }
}

function setProto(info: PacketInfo, proto: number): void {
  info.proto = proto;
  info.key[34] = proto & 0xff;
  info.key[35] = proto >> 8;
}

/**
 * Ports from the L4 header at `l4` into the key. `swapped` is for the datagram
 * inside an ICMP error: it travelled the other way, so its source port is the
 * key's destination port, and the SCTP-over-UDP test is on its source port.
 * Returns rc (plus RC_UDP_ENCAP when the UDP payload is taken as SCTP) or RC_INVALID.
 */
function setPorts(
  pkt: Uint8Array, l4: number, end: number, udpencap: number, info: PacketInfo,
  proto: number, rc: number, swapped: boolean,
): number {
  if (l4 + 4 > end) return RC_INVALID;
  let p = l4;
  if (udpencap !== 0 && proto === IPPROTO_UDP && u16(pkt, swapped ? l4 : l4 + 2) === udpencap) {
    p = l4 + UDP_HDR_LEN;
    if (p + 4 > end) return RC_INVALID;
    proto = IPPROTO_SCTP;
    rc |= RC_UDP_ENCAP;
  }
  const key = info.key;
  setProto(info, proto);
  if (swapped) {
    key[36] = pkt[p + 2];
    key[37] = pkt[p + 3];
    key[38] = pkt[p];
    key[39] = pkt[p + 1];
  } else {
    key[36] = pkt[p];
    key[37] = pkt[p + 1];
    key[38] = pkt[p + 2];
    key[39] = pkt[p + 3];
  }
  info.sport = (key[36] << 8) | key[37];
  info.dport = (key[38] << 8) | key[39];
  info.l4Offset = p;
  info.l4Len = end - p;
  return rc;
}

/**
 * ICMP that is not an error: addresses, proto, and for an echo request the
 * echo id (ICMP bytes 4-5, wire order) in key bytes 32-33. `icmp` is the ICMP
 * header offset, possibly at or beyond `end` (then the type is unknown and the
 * key is addresses + proto, as the reference wants for a bare IPv4 header).
 */
function icmpOther(pkt: Uint8Array, icmp: number, end: number, info: PacketInfo, echoType: number, proto: number, rc: number): number {
  setProto(info, proto);
  if (icmp >= end) return rc | RC_ICMP_OTHER;
  if (info.icmpType === echoType) {
    if (icmp + 6 > end) return RC_INVALID;
    info.key[32] = pkt[icmp + 4];
    info.key[33] = pkt[icmp + 5];
  }
  info.l4Offset = icmp;
  info.l4Len = end - icmp;
  return rc | RC_ICMP_OTHER;
}

function setIcmpTypeCode(pkt: Uint8Array, icmp: number, end: number, info: PacketInfo): void {
  if (icmp < end) info.icmpType = pkt[icmp];
  if (icmp + 1 < end) info.icmpCode = pkt[icmp + 1];
}

function classify4(pkt: Uint8Array, off: number, end: number, udpencap: number, info: PacketInfo): number {
  if (off + IPV4_HDR_LEN > end) return RC_INVALID;
  const ihl = (pkt[off] & 0x0f) * 4;
  if (ihl < IPV4_HDR_LEN) return RC_INVALID;
  const key = info.key;
  let rc = 0;
  const fragOff = u16(pkt, off + 6);
  if ((fragOff & 0x3fff) !== 0) {
    info.fragId = u16(pkt, off + 4);
    const totLen = u16(pkt, off + 2);
    info.fragOffset = (fragOff & 0x1fff) * 8;
    info.fragLength = totLen >= ihl ? totLen - ihl : -1;
    info.fragMore = (fragOff & 0x2000) >>> 13;
    if ((fragOff & 0x1fff) !== 0) {
      setAddr4(key, pkt, off + 12, off + 16);
      key[32] = pkt[off + 4];
      key[33] = pkt[off + 5];
      return RC_LATER_FRAGMENT;
    }
    rc = RC_FIRST_FRAGMENT;
  }
  const proto = pkt[off + 9];
  const l4 = off + ihl;
  if (proto === IPPROTO_ICMP) {
    setIcmpTypeCode(pkt, l4, end, info);
    const type = info.icmpType;
    if (type === ICMP_DEST_UNREACH || type === ICMP_SOURCE_QUENCH || type === ICMP_REDIRECT || type === ICMP_TIME_EXCEEDED) {
      // A fragmented error cannot be keyed on the embedded datagram's ports.
      if (rc !== 0) return RC_INVALID;
      return icmpError4(pkt, l4 + ICMP_ERROR_HDR_LEN, end, udpencap, info);
    }
    setAddr4(key, pkt, off + 12, off + 16);
    return icmpOther(pkt, l4, end, info, ICMP_ECHO, IPPROTO_ICMP, rc);
  }
  setAddr4(key, pkt, off + 12, off + 16);
  if (!isPortProto(proto)) {
    setProto(info, proto);
    return rc | RC_OTHER_PROTO;
  }
  return setPorts(pkt, l4, end, udpencap, info, proto, rc, false);
}

/** The IPv4 datagram embedded in an ICMP error at `ip`, keyed as the reverse direction. */
function icmpError4(pkt: Uint8Array, ip: number, end: number, udpencap: number, info: PacketInfo): number {
  if (ip + IPV4_HDR_LEN > end) return RC_INVALID;
  const ihl = (pkt[ip] & 0x0f) * 4;
  if (ihl < IPV4_HDR_LEN) return RC_INVALID;
  setAddr4(info.key, pkt, ip + 16, ip + 12);
  const proto = pkt[ip + 9];
  if (!isPortProto(proto)) {
    setProto(info, proto);
    return RC_ICMP_ERROR | RC_OTHER_PROTO;
  }
  return setPorts(pkt, ip + ihl, end, udpencap, info, proto, RC_ICMP_ERROR, true);
}

/** Length of the IPv6 extension header at p of type nxt (RFC 8200: the fragment header is always 8). */
function ipv6ExtLen(pkt: Uint8Array, p: number, nxt: number): number {
  return nxt === IPV6_FRAGMENT ? IPV6_FRAG_HDR_LEN : (pkt[p + 1] + 1) * 8;
}

function classify6(pkt: Uint8Array, off: number, end: number, udpencap: number, info: PacketInfo): number {
  if (off + IPV6_HDR_LEN > end) return RC_INVALID;
  const key = info.key;
  let nxt = pkt[off + 6];
  let p = off + IPV6_HDR_LEN;
  let rc = 0;
  // Each step advances at least 8 bytes, so the loop ends within len/8 steps.
  while (isIpv6ExtHdr(nxt)) {
    if (nxt === IPV6_FRAGMENT && rc === 0) {
      if (p + IPV6_FRAG_HDR_LEN > end) return RC_INVALID;
      info.fragId = ((pkt[p + 4] << 24) | (pkt[p + 5] << 16) | (pkt[p + 6] << 8) | pkt[p + 7]) >>> 0;
      const offlg = u16(pkt, p + 2);
      // The payload length field counts everything after the fixed header;
      // this fragment's data starts after the fragment header (RFC 8200 §4.5).
      const fragLength = off + IPV6_HDR_LEN + u16(pkt, off + 4) - (p + IPV6_FRAG_HDR_LEN);
      info.fragOffset = offlg & 0xfff8;
      info.fragLength = fragLength >= 0 ? fragLength : -1;
      info.fragMore = offlg & 1;
      if ((offlg & 0xfff8) !== 0) {
        setAddr6(key, pkt, off + 8, off + 24);
        for (let i = 0; i < 4; i++) key[32 + i] = pkt[p + 4 + i];
        return RC_LATER_FRAGMENT;
      }
      // Offset 0 is a first fragment even without M (an atomic fragment), as in nfqlb.
      rc = RC_FIRST_FRAGMENT;
    } else if (p + 2 > end) {
      return RC_INVALID;
    }
    const next = pkt[p];
    p += ipv6ExtLen(pkt, p, nxt);
    nxt = next;
  }
  if (nxt === IPPROTO_ICMPV6) {
    setIcmpTypeCode(pkt, p, end, info);
    const type = info.icmpType;
    if (type === ICMP6_DST_UNREACH || type === ICMP6_PACKET_TOO_BIG) {
      if (rc !== 0) return RC_INVALID;
      return icmpError6(pkt, p + ICMP_ERROR_HDR_LEN, end, udpencap, info);
    }
    setAddr6(key, pkt, off + 8, off + 24);
    return icmpOther(pkt, p, end, info, ICMP6_ECHO_REQUEST, IPPROTO_ICMPV6, rc);
  }
  setAddr6(key, pkt, off + 8, off + 24);
  if (!isPortProto(nxt)) {
    setProto(info, nxt);
    return rc | RC_OTHER_PROTO;
  }
  return setPorts(pkt, p, end, udpencap, info, nxt, rc, false);
}

/** The IPv6 datagram embedded in an ICMPv6 error at `ip`, keyed as the reverse direction. */
function icmpError6(pkt: Uint8Array, ip: number, end: number, udpencap: number, info: PacketInfo): number {
  if (ip + IPV6_HDR_LEN > end) return RC_INVALID;
  let nxt = pkt[ip + 6];
  let p = ip + IPV6_HDR_LEN;
  while (isIpv6ExtHdr(nxt)) {
    if (p + 2 > end) return RC_INVALID;
    const next = pkt[p];
    p += ipv6ExtLen(pkt, p, nxt);
    nxt = next;
  }
  setAddr6(info.key, pkt, ip + 24, ip + 8);
  if (!isPortProto(nxt)) {
    setProto(info, nxt);
    return RC_ICMP_ERROR | RC_OTHER_PROTO;
  }
  return setPorts(pkt, p, end, udpencap, info, nxt, RC_ICMP_ERROR, true);
}
