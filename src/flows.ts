/**
 * Flows: which packets go to which table (SPEC.md §6). A re-implementation of
 * nfqlb's flow.c (FlowSet), of the flow half of its control server
 * (cmdFlowLb.c: cmd_set / cmd_delete with the hidden `#name` flow for SCTP
 * over UDP), of match.c (byte matches) and rangeset.c (port ranges), and of
 * the client-side checks of `nfqlb flow-set` (cmdFlow.c).
 *
 * The set is generic over the target: the daemon attaches a table, the
 * trace-flow set attaches the flow's name. Flows are parsed and compiled into
 * typed arrays when they are defined, so lookup() — the per-packet path —
 * allocates nothing, throws nothing and does no string work.
 *
 * Texts (errors, JSON listings) are nfqlb 1.2.0's, byte for byte. Where nfqlb
 * misbehaves this module does the right thing instead; each such place says
 * "Divergence".
 */
import { atoi } from './catoi';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, KEY_DPORT, KEY_DST, KEY_ID, KEY_PROTO, KEY_SPORT, KEY_SRC } from './hashkey';
import { RC_ICMP_ERROR, type PacketInfo } from './packet';

// ---------------------------------------------------------------------------
// Limits (nfqlb's)

/** flow.c MAX_NAME: a name must be shorter than this many bytes. */
const MAX_NAME = 1024;
/** flow.c MAX_CIDRS. */
const MAX_CIDRS = 32;
/** cmdFlow.c MAX_ARG_LEN: client-side limit for list arguments. */
const MAX_ARG_LEN = 1000;
/** The hidden flow's name is '#' + at most this many characters (strncpy into MAX_CMD_LINE-2). */
const MAX_HIDDEN_NAME = 1022;
/** flowDefine formats errors into a 128-byte buffer. */
const MAX_ERROR = 127;
/** match.c refuses longer statements. */
const MAX_MATCH_STATEMENT = 64;
/** rangeSetAddStr and the list printers work on 1024-byte copies. */
const MAX_STR = 1024;

const PROTO_BIT_TCP = 1;
const PROTO_BIT_UDP = 2;
const PROTO_BIT_SCTP = 4;

/** The bit of an L4 protocol in a flow's protocol mask; 0 for anything else. */
function protoBit(proto: number): number {
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
function headerLength(proto: number): number {
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

function protoName(proto: number): string {
  switch (proto) {
    case IPPROTO_TCP:
      return 'tcp';
    case IPPROTO_UDP:
      return 'udp';
    case IPPROTO_SCTP:
      return 'sctp';
    default:
      return '';
  }
}

// ---------------------------------------------------------------------------
// C string helpers: nfqlb parses with strtok, sscanf, strtol and atoi, and
// the texts users see depend on their quirks.

/** strcasecmp needs ASCII-only case folding (toLowerCase would fold non-ASCII too). */
function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

/** Bytes of a string as C's strlen sees it (names and arguments travel as UTF-8). */
function cStrlen(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/**
 * nfqlb's mkargv(): the non-empty tokens of `str` split on any character of
 * `delims` (strtok), or null when there are none — an empty list is the same
 * as an absent one.
 */
function mkargv(str: string | undefined, delims: string): string[] | null {
  if (str === undefined || str === '') return null;
  const out: string[] = [];
  let tok = '';
  for (let i = 0; i < str.length; i++) {
    const c = str[i];
    if (delims.includes(c)) {
      if (tok !== '') out.push(tok);
      tok = '';
    } else {
      tok += c;
    }
  }
  if (tok !== '') out.push(tok);
  return out.length === 0 ? null : out;
}

/** C's atoi(), see catoi.ts; kept under this name for the flow code's callers. */
export const cAtoi = atoi;

/**
 * The leading unsigned decimal number of `s` as sscanf("%u") reads it
 * (white space, optional '+', digits; trailing characters ignored), or -1.
 * Divergence: sscanf also takes a '-' sign and numbers ≥ 2^32 and wraps them
 * (nfqlb accepts `192.0.2.0/-1` as a /95 and port 4294967297 as 1); here they
 * are invalid. Numbers that do not fit `max` give max + 1.
 */
function scanUnsigned(s: string, max: number): number {
  const m = /^[ \t\n\v\f\r]*\+?(\d+)/.exec(s);
  if (m === null) return -1;
  const digits = m[1].replace(/^0+(?=\d)/, '');
  if (digits.length > 10) return max + 1;
  const v = Number(digits);
  return v > max ? max + 1 : v;
}

/**
 * strtol(s, NULL, 0) for the number forms match.c's regexp lets through
 * ("123", "0123" octal, "0x1f" hex), saturated at LONG_MAX like glibc.
 */
function strtol0(s: string): bigint {
  const t = s.replace(/^[ \t\n\v\f\r]+/, '');
  let m: RegExpExecArray | null;
  let v: bigint;
  if ((m = /^0[xX]([0-9a-fA-F]+)/.exec(t)) !== null) v = BigInt(`0x${m[1]}`);
  else if ((m = /^0([0-7]*)/.exec(t)) !== null) v = m[1] === '' ? 0n : BigInt(`0o${m[1]}`);
  else if ((m = /^(\d+)/.exec(t)) !== null) v = BigInt(m[1]);
  else v = 0n;
  const LONG_MAX = (1n << 63n) - 1n;
  return v > LONG_MAX ? LONG_MAX : v;
}

// ---------------------------------------------------------------------------
// Addresses: glibc's inet_pton/inet_ntop, because which CIDR texts are valid
// and how listings print them must be nfqlb's.

/** inet_pton(AF_INET) of s[start..end) into out[at..at+4): strict dotted quad, no leading zeros. */
function inetPton4(s: string, start: number, end: number, out: Uint8Array, at: number): boolean {
  let sawDigit = false;
  let octets = 0;
  let cur = 0;
  const tmp = [0, 0, 0, 0];
  let tp = 0;
  for (let i = start; i < end; i++) {
    const ch = s.charCodeAt(i);
    if (ch >= 48 && ch <= 57) {
      const nv = cur * 10 + (ch - 48);
      if (sawDigit && cur === 0) return false;
      if (nv > 255) return false;
      cur = nv;
      tmp[tp] = cur;
      if (!sawDigit) {
        if (++octets > 4) return false;
        sawDigit = true;
      }
    } else if (ch === 46 /* . */ && sawDigit) {
      if (octets === 4) return false;
      tp++;
      cur = 0;
      tmp[tp] = 0;
      sawDigit = false;
    } else {
      return false;
    }
  }
  if (octets < 4) return false;
  for (let k = 0; k < 4; k++) out[at + k] = tmp[k];
  return true;
}

function hexValue(ch: number): number {
  if (ch >= 48 && ch <= 57) return ch - 48;
  if (ch >= 97 && ch <= 102) return ch - 87;
  if (ch >= 65 && ch <= 70) return ch - 55;
  return -1;
}

/**
 * glibc's inet_pton(AF_INET6): parses `s` into out[0..16) and returns true,
 * or returns false (out is then unspecified). Accepts a trailing dotted quad,
 * refuses zone ids, empty strings and a "::" that stands for no group.
 */
export function inetPton6(s: string, out: Uint8Array): boolean {
  const n = s.length;
  const tmp = new Uint8Array(16);
  let i = 0;
  if (n === 0) return false;
  if (s.charCodeAt(0) === 58 /* : */) {
    i = 1;
    if (i >= n || s.charCodeAt(i) !== 58) return false;
  }
  let tp = 0;
  let colonp = -1;
  let curtok = i;
  let xdigits = 0;
  let val = 0;
  while (i < n) {
    const ch = s.charCodeAt(i++);
    const d = hexValue(ch);
    if (d >= 0) {
      if (xdigits === 4) return false;
      val = (val << 4) | d;
      xdigits++;
      continue;
    }
    if (ch === 58) {
      curtok = i;
      if (xdigits === 0) {
        if (colonp >= 0) return false;
        colonp = tp;
        continue;
      } else if (i >= n) {
        return false; // a trailing single ':'
      }
      if (tp + 2 > 16) return false;
      tmp[tp++] = (val >> 8) & 0xff;
      tmp[tp++] = val & 0xff;
      xdigits = 0;
      val = 0;
      continue;
    }
    if (ch === 46 && tp + 4 <= 16 && inetPton4(s, curtok, n, tmp, tp)) {
      tp += 4;
      xdigits = 0;
      break; // inet_pton4 consumed the rest of the string
    }
    return false;
  }
  if (xdigits > 0) {
    if (tp + 2 > 16) return false;
    tmp[tp++] = (val >> 8) & 0xff;
    tmp[tp++] = val & 0xff;
  }
  if (colonp >= 0) {
    if (tp === 16) return false;
    const moved = tp - colonp;
    for (let k = 1; k <= moved; k++) {
      tmp[16 - k] = tmp[colonp + moved - k];
      tmp[colonp + moved - k] = 0;
    }
    tp = 16;
  }
  if (tp !== 16) return false;
  out.set(tmp);
  return true;
}

/**
 * glibc's inet_ntop(AF_INET6) of b[off..off+16): the first longest run of two
 * or more zero groups becomes "::", and ::a.b.c.d / ::ffff:a.b.c.d keep the
 * dotted quad (so IPv4 flows list as "::ffff:192.0.2.1"). Not for the packet
 * path (it builds a string).
 */
export function inetNtop6(b: Uint8Array, off = 0): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((b[off + 2 * i] << 8) | b[off + 2 * i + 1]);
  let bestBase = -1;
  let bestLen = 0;
  let curBase = -1;
  let curLen = 0;
  for (let i = 0; i < 8; i++) {
    if (words[i] === 0) {
      if (curBase === -1) {
        curBase = i;
        curLen = 1;
      } else {
        curLen++;
      }
    } else if (curBase !== -1) {
      if (bestBase === -1 || curLen > bestLen) {
        bestBase = curBase;
        bestLen = curLen;
      }
      curBase = -1;
    }
  }
  if (curBase !== -1 && (bestBase === -1 || curLen > bestLen)) {
    bestBase = curBase;
    bestLen = curLen;
  }
  if (bestBase !== -1 && bestLen < 2) bestBase = -1;
  let s = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) s += ':';
      continue;
    }
    if (i !== 0) s += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      s += `${b[off + 12]}.${b[off + 13]}.${b[off + 14]}.${b[off + 15]}`;
      return s;
    }
    s += words[i].toString(16);
  }
  if (bestBase !== -1 && bestBase + bestLen === 8) s += ':';
  return s;
}

// ---------------------------------------------------------------------------
// Parsers for the parts of a flow. Each returns null when nfqlb would refuse.

/** Words per compiled CIDR: 4 address words (pre-masked) then 4 mask words. */
const CIDR_WORDS = 8;

interface ParsedCidrs {
  /** CIDR_WORDS int32 per entry, big-endian address words. */
  words: Int32Array;
  /** The listing texts, "addr/prefix". */
  text: string[];
}

/**
 * flow.c parseCidrs(): "a.b.c.d/n" (IPv4, mapped to ::ffff:0:0/96, prefix
 * n+96) or "IPv6/n"; the mask is required; at most 32 entries.
 * Divergence: nfqlb computes a /0 IPv6 mask with a 64-bit shift by 64
 * (undefined in C; on x86 a no-op), so "::/0" behaves and lists as "::/64".
 * Here /0 matches everything and lists as /0.
 */
function parseCidrs(list: string[]): ParsedCidrs | null {
  if (list.length === 0 || list.length > MAX_CIDRS) return null;
  const words = new Int32Array(list.length * CIDR_WORDS);
  const text: string[] = [];
  const addr = new Uint8Array(16);
  for (let i = 0; i < list.length; i++) {
    const arg = list[i];
    const isIpv4 = !arg.includes(':');
    // nfqlb copies into a 128-byte buffer (snprintf/strncpy).
    const s = (isIpv4 ? `::ffff:${arg}` : arg).slice(0, 127);
    const slash = s.indexOf('/');
    if (slash < 0) return null;
    let prefix = scanUnsigned(s.slice(slash + 1), 128);
    if (prefix < 0) return null;
    if (isIpv4) prefix += 96;
    if (prefix > 128) return null;
    if (!inetPton6(s.slice(0, slash), addr)) return null;
    const base = i * CIDR_WORDS;
    for (let w = 0; w < 4; w++) {
      const bits = Math.min(32, Math.max(0, prefix - 32 * w));
      // (-1 << 32) is -1 in JS, hence the special cases.
      const mask = bits === 0 ? 0 : bits === 32 ? -1 : (-1 << (32 - bits)) | 0;
      const a = (addr[4 * w] << 24) | (addr[4 * w + 1] << 16) | (addr[4 * w + 2] << 8) | addr[4 * w + 3];
      words[base + w] = a & mask;
      words[base + 4 + w] = mask;
    }
    for (let w = 0; w < 4; w++) {
      const a = words[base + w];
      addr[4 * w] = (a >>> 24) & 0xff;
      addr[4 * w + 1] = (a >>> 16) & 0xff;
      addr[4 * w + 2] = (a >>> 8) & 0xff;
      addr[4 * w + 3] = a & 0xff;
    }
    text.push(`${inetNtop6(addr)}/${prefix}`);
  }
  return { words, text };
}

/**
 * rangeset.c: "80,443,8000-8080" (comma or space separated, each 1..65535,
 * lo ≤ hi) → sorted, merged [lo, hi] pairs. An empty list is valid and
 * matches no port at all (nfqlb: an empty RangeSet); that is what
 * `--dports=` gives.
 */
function parsePorts(str: string): Int32Array | null {
  const toks = mkargv(str.slice(0, MAX_STR), ', ') ?? [];
  const ranges: Array<[number, number]> = [];
  for (const tok of toks) {
    let first: number;
    let last: number;
    if (tok.includes('-')) {
      // sscanf("%u-%u"): the literal '-' right after the first number.
      const m = /^([ \t\n\v\f\r]*\+?\d+)-([ \t\n\v\f\r]*\+?\d+)/.exec(tok);
      if (m === null) return null;
      first = scanUnsigned(m[1], 65535);
      last = scanUnsigned(m[2], 65535);
      if (last < first) return null;
    } else {
      first = last = scanUnsigned(tok, 65535);
      if (first < 0) return null;
    }
    if (first < 1 || last > 65535) return null;
    ranges.push([first, last]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const merged: number[] = [];
  for (const [lo, hi] of ranges) {
    const n = merged.length;
    if (n > 0 && merged[n - 1] + 1 >= lo) {
      if (hi > merged[n - 1]) merged[n - 1] = hi;
    } else {
      merged.push(lo, hi);
    }
  }
  return Int32Array.from(merged);
}

/** The listing items of a port set: "80", "8000-8080". */
function portsText(r: Int32Array): string[] {
  const out: string[] = [];
  for (let i = 0; i < r.length; i += 2) out.push(r[i] === r[i + 1] ? `${r[i]}` : `${r[i]}-${r[i + 1]}`);
  return out;
}

/** flow.c parseProtocol(): tcp/udp/sctp in any case, repeats allowed → bit mask, or -1. */
function parseProtocols(list: string[]): number {
  let bits = 0;
  for (const p of list) {
    const l = asciiLower(p);
    if (l === 'tcp') bits |= PROTO_BIT_TCP;
    else if (l === 'udp') bits |= PROTO_BIT_UDP;
    else if (l === 'sctp') bits |= PROTO_BIT_SCTP;
    else return -1;
  }
  return bits;
}

const MATCH_REGEXP = /^(sctp|tcp|udp)\[[0-9]+ *: *[124]\]( *& *0x[0-9a-f]+)? *= *([0-9]+|0x[0-9a-f]+)$/;

/** Words per compiled match statement: proto, offset, nbytes, mask, value. */
const MATCH_WORDS = 5;

/**
 * match.c matchParse(): one statement `proto[offset:n] (& mask)? = value`
 * into out[at..at+5), or nfqlb's error text. Numbers are C's strtol base 0
 * (so "010" is octal 8), mask and value keep their low 32 bits.
 * Divergence: nfqlb checks offset+n against the header length in 32-bit
 * arithmetic, so a huge offset wraps, passes and is read out of bounds later;
 * here it is "Out of bounds".
 */
function parseMatchStatement(str: string, out: Uint32Array, at: number): string | null {
  if (cStrlen(str) > MAX_MATCH_STATEMENT) return 'String too long';
  if (!MATCH_REGEXP.test(str)) return "Doesn't match regexp";
  const proto = str.startsWith('sctp') ? IPPROTO_SCTP : str.startsWith('tcp') ? IPPROTO_TCP : IPPROTO_UDP;
  const lb = str.indexOf('[');
  const colon = str.indexOf(':', lb);
  const offset = strtol0(str.slice(lb + 1, colon));
  const rb = str.indexOf(']', colon);
  const nbytes = Number(strtol0(str.slice(colon + 1, rb)));
  if (offset + BigInt(nbytes) > BigInt(headerLength(proto))) return 'Out of bounds';
  const amp = str.indexOf('&', rb);
  const eq = str.indexOf('=', rb);
  const mask = amp >= 0 ? Number(BigInt.asUintN(32, strtol0(str.slice(amp + 1, eq)))) : 0;
  const value = Number(BigInt.asUintN(32, strtol0(str.slice(eq + 1))));
  out[at] = proto;
  out[at + 1] = Number(offset);
  out[at + 2] = nbytes;
  out[at + 3] = mask;
  out[at + 4] = value;
  return null;
}

/**
 * match.c matchString() + flow.c printMatch(): the listing items. nfqlb
 * formats into a 1024-byte buffer and lists whatever fits, so this does too.
 */
function matchText(m: Uint32Array): string[] {
  const len = MAX_STR;
  let space = len;
  let buf = '';
  for (let i = 0; i < m.length; i += MATCH_WORDS) {
    if (space < len && space > 2) {
      buf += ',';
      space--;
    }
    const head = `${protoName(m[i])}[${m[i + 1]}:${m[i + 2]}]`;
    const item = m[i + 3] !== 0 ? `${head}&0x${m[i + 3].toString(16)}=0x${m[i + 4].toString(16)}` : `${head}=0x${m[i + 4].toString(16)}`;
    if (item.length >= space) {
      buf += item.slice(0, space - 1);
      break;
    }
    buf += item;
    space -= item.length;
  }
  return buf.split(/[, ]+/).filter((t) => t !== '');
}

// ---------------------------------------------------------------------------
// Flows

/** What `define()` takes: the values of one flow as the daemon receives them. */
export interface FlowDefinition<T> {
  /** Required; shorter than 1024 bytes. */
  name: string | undefined;
  /** Higher first. A C int: nfqlb parses it with atoi. */
  priority?: number;
  /** The table (or whatever the set carries); null for the hidden '#' flows. */
  target: T | null;
  /** Comma/space separated lists, exactly as on the control socket. Absent or empty: match all. */
  protocols?: string;
  dsts?: string;
  srcs?: string;
  /** Port ranges "80,443,8000-8080". Absent: all; empty string: none (as nfqlb). */
  dports?: string;
  sports?: string;
  /** Comma separated byte-match statements. */
  match?: string;
  /** UDP port carrying SCTP for this flow (0: none). Listed, and returned by delete. */
  udpencap?: number;
}

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
function inRanges(r: Int32Array, v: number): boolean {
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
function inCidrs(c: Int32Array, w: Int32Array, at: number): boolean {
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
function matchBytes(m: Uint32Array, proto: number, info: PacketInfo, pkt: Uint8Array): boolean {
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

/** What acquires and releases targets by name; TargetRegistry fits. */
export interface TargetSource<T> {
  /** The target named `name` with one more reference, or null when it cannot be opened. */
  acquire(name: string): T | null;
  /** Gives back one reference taken by acquire(). */
  release(target: T): void;
}

/** A `set` request as the control server has parsed it (nfqlb's struct FlowCmd). */
export interface FlowCmd {
  name?: string;
  target?: string;
  /** atoi() of the `priority` value; 0 when absent. */
  priority?: number;
  protocols?: string;
  dsts?: string;
  srcs?: string;
  dports?: string;
  sports?: string;
  match?: string;
  /** atoi() of the `udpencap` value; 0 when absent. Truncated to 16 bits like nfqlb's unsigned short. */
  udpencap?: number;
}

export interface FlowSetOptions<T> {
  /**
   * The name of a target: listed as `user_ref` (null targets list as "NULL"),
   * and compared by applySet() to see whether a flow changes table. Leave it
   * out for sets whose listing has no user_ref (trace flows).
   */
  targetName?: (target: T) => string;
  /** `--promiscuous_ping`: ICMP echo requests match on addresses alone. */
  promiscuousPing?: boolean;
}

/**
 * An ordered set of flows (nfqlb's struct FlowSet plus the flow commands of
 * its control server).
 *
 * Order: higher priority first; equal priorities keep the order in which the
 * names were first defined, because nfqlb appends new flows and re-sorts
 * with glibc's qsort, which is a stable merge sort. A re-defined flow keeps
 * its place. Divergence: nfqlb compares priorities by subtraction, which
 * overflows for differences beyond 2^31; here they compare as numbers.
 */
export class FlowSet<T> {
  /** `--promiscuous_ping` (may be changed at any time). */
  promiscuousPing: boolean;
  /**
   * After lookup(): the udpencap of the last flow that matched, 0 if none —
   * nfqlb's flowLookup() out parameter, which its caller compares with the
   * packet's UDP destination port to decide on SCTP-over-UDP re-classification.
   */
  lastUdpencap = 0;

  private readonly targetName: ((target: T) => string) | undefined;
  /** In priority order; lookup() walks it. Replaced or re-sorted on every change. */
  private list_: Flow<T>[] = [];
  /** The packet's addresses as big-endian int32 words: src 0-3, dst 4-7. */
  private readonly addr = new Int32Array(8);

  constructor(options: FlowSetOptions<T> = {}) {
    this.targetName = options.targetName;
    this.promiscuousPing = options.promiscuousPing ?? false;
  }

  /** Number of flows, hidden '#' flows included. */
  get size(): number {
    return this.list_.length;
  }

  /** The flows in lookup order (for metrics: names and match counters). Do not modify. */
  get flows(): readonly Flow<T>[] {
    return this.list_;
  }

  /** The flow called `name`, if any. */
  get(name: string): Flow<T> | undefined {
    return this.list_.find((f) => f.name === name);
  }

  /**
   * nfqlb's flowDefine(): parses and compiles a flow and adds it, or replaces
   * the flow of the same name in place (its match counter starts again at 0,
   * as nfqlb makes a new flow). Returns null, or nfqlb's error text with the
   * set unchanged: "No name", "Name too long", "Invalid protocols",
   * "Invalid dports" (also for bad sports — nfqlb's text), "Invalid dsts",
   * "Invalid srcs", "Match [stmt] <why>".
   */
  define(def: FlowDefinition<T>): string | null {
    const f = compileFlow(def);
    if (typeof f === 'string') return f;
    this.insert(f);
    return null;
  }

  /**
   * nfqlb's flowDelete(): removes the flow called `name` and returns it (its
   * target and udpencap tell the caller what to release and whether a hidden
   * '#' flow goes too), or null when there is none.
   */
  delete(name: string): Flow<T> | null {
    const i = this.list_.findIndex((f) => f.name === name);
    if (i < 0) return null;
    const f = this.list_[i];
    // A new array rather than splice: a caller iterating `flows` keeps a consistent view.
    this.list_ = this.list_.filter((_, k) => k !== i);
    return f;
  }

  /**
   * What nfqlb's control server does for `action:set` (cmd_set), returning
   * the reply text ("OK" or the error, without the NUL). In order:
   *  - the flow exists: a different udpencap is "FAIL: Alter udpencap not
   *    allowed"; a different target is acquired ("FAIL: Couldn't create new
   *    load-balancer"); the same target keeps its reference;
   *  - a new flow acquires its target ("FAIL: Couldn't create load-balancer");
   *  - udpencap ≠ 0 needs protocols exactly "sctp" ("FAIL: only sctp for
   *    updencap" — nfqlb's spelling) and adds/replaces the hidden flow
   *    '#name' {udp, dport udpencap, same dsts/srcs, same priority, target
   *    null} before the flow itself;
   *  - then the flow is defined (define()'s errors).
   * Divergences: nfqlb leaks the acquired table on a later error, releases
   * the old table before the new flow is in place, and leaves a '#' flow
   * behind when the flow itself is refused; here nothing changes on an error
   * and every reference is given back. The reply texts are nfqlb's.
   */
  applySet(cmd: FlowCmd, targets: TargetSource<T>): string {
    const name = cmd.name;
    const udpencap = (cmd.udpencap ?? 0) & 0xffff;
    const existing = name === undefined ? undefined : this.get(name);
    let target: T;
    let acquired = false;
    let replaced: T | null = null;
    if (existing !== undefined && existing.target !== null) {
      if (existing.udpencap !== udpencap) return 'FAIL: Alter udpencap not allowed';
      const same = this.targetName !== undefined && cmd.target !== undefined && this.targetName(existing.target) === cmd.target;
      if (same) {
        target = existing.target;
      } else {
        const t = cmd.target === undefined ? null : targets.acquire(cmd.target);
        if (t === null) return "FAIL: Couldn't create new load-balancer";
        target = t;
        acquired = true;
        replaced = existing.target;
      }
    } else {
      const t = cmd.target === undefined ? null : targets.acquire(cmd.target);
      if (t === null) return "FAIL: Couldn't create load-balancer";
      target = t;
      acquired = true;
    }
    const fail = (msg: string): string => {
      if (acquired) targets.release(target);
      return msg;
    };

    let hidden: Flow<T> | string | null = null;
    if (udpencap !== 0) {
      const protos = mkargv(cmd.protocols, ', ');
      if (protos === null || protos.length !== 1 || asciiLower(protos[0]) !== 'sctp') return fail('FAIL: only sctp for updencap');
      if (name !== undefined) {
        hidden = compileFlow<T>({
          name: `#${name.slice(0, MAX_HIDDEN_NAME)}`,
          priority: cmd.priority,
          target: null,
          protocols: 'udp',
          dports: `${udpencap}`,
          dsts: cmd.dsts,
          srcs: cmd.srcs,
          udpencap,
        });
        // nfqlb defines the hidden flow first, so its errors are the ones reported.
        if (typeof hidden === 'string') return fail(hidden);
      }
    }
    const f = compileFlow<T>({
      name,
      priority: cmd.priority,
      target,
      protocols: cmd.protocols,
      dsts: cmd.dsts,
      srcs: cmd.srcs,
      dports: cmd.dports,
      sports: cmd.sports,
      match: cmd.match,
      udpencap,
    });
    if (typeof f === 'string') return fail(f);
    if (hidden !== null) this.insert(hidden);
    this.insert(f);
    if (replaced !== null) targets.release(replaced);
    return 'OK';
  }

  /**
   * What nfqlb's control server does for `action:delete` (cmd_delete):
   * "FAIL: no name" without a name, else removes the flow (a missing one is
   * fine), releases its target, removes its hidden '#' flow when it had a
   * udpencap, and replies "OK".
   */
  applyDelete(name: string | undefined, targets: TargetSource<T>): string {
    if (name === undefined) return 'FAIL: no name';
    const f = this.delete(name);
    if (f !== null) {
      if (f.target !== null) targets.release(f.target);
      if (f.udpencap > 0) this.delete(`#${name.slice(0, MAX_HIDDEN_NAME)}`);
    }
    return 'OK';
  }

  /**
   * nfqlb's flowLookup(): the first flow, in priority order, whose sets all
   * contain the packet, counting the match; null when none. Uses the key
   * (addresses, protocol, ports) and, for byte matches, pkt at info.l4Offset.
   *
   * Flows with a null target (the hidden '#' flows) are nfqlb's NULL
   * user_ref: when they match they count the match and set `lastUdpencap`,
   * and the search goes on — a lower flow that also matches wins (the
   * reference decisions show nfqlb hashing SCTP-over-UDP on the outer UDP
   * header when a catch-all flow covers the address). Read `lastUdpencap`
   * after the call: when the packet is UDP to that port, nfqlb re-classifies
   * with it and looks up again.
   *
   * With promiscuousPing, an ICMP/ICMPv6 echo request with a non-zero id
   * (key bytes 32-33) matches the first flow whose addresses match.
   * (nfqlb tests the 8 bytes 32-39, which hold the protocol too, so there
   * every ICMP packet that is not an error qualifies; this follows SPEC.md §6.)
   *
   * Per-packet: no allocation, no exceptions.
   */
  lookup(info: PacketInfo, pkt: Uint8Array): Flow<T> | null {
    const key = info.key;
    const w = this.addr;
    for (let i = 0; i < 4; i++) {
      const s = KEY_SRC + 4 * i;
      const d = KEY_DST + 4 * i;
      w[i] = (key[s] << 24) | (key[s + 1] << 16) | (key[s + 2] << 8) | key[s + 3];
      w[4 + i] = (key[d] << 24) | (key[d + 1] << 16) | (key[d + 2] << 8) | key[d + 3];
    }
    const proto = key[KEY_PROTO] | (key[KEY_PROTO + 1] << 8);
    const sport = (key[KEY_SPORT] << 8) | key[KEY_SPORT + 1];
    const dport = (key[KEY_DPORT] << 8) | key[KEY_DPORT + 1];
    const bit = protoBit(proto);
    const ping = this.promiscuousPing && (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) && (key[KEY_ID] | key[KEY_ID + 1]) !== 0;
    let udpencap = 0;
    const flows = this.list_;
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      if (f.dsts !== null && !inCidrs(f.dsts, w, 4)) continue;
      if (f.srcs !== null && !inCidrs(f.srcs, w, 0)) continue;
      if (!ping) {
        if (f.protoMask !== 0 && (f.protoMask & bit) === 0) continue;
        if (f.dports !== null && !inRanges(f.dports, dport)) continue;
        if (f.sports !== null && !inRanges(f.sports, sport)) continue;
        if (f.match !== null && !matchBytes(f.match, proto, info, pkt)) continue;
        udpencap = f.udpencap;
      }
      f.matches++;
      if (f.target !== null) {
        this.lastUdpencap = udpencap;
        return f;
      }
    }
    this.lastUdpencap = udpencap;
    return null;
  }

  /**
   * nfqlb's flowSetPrint(): with no name the JSON array of all flows
   * (`[]\n` when empty, a newline after the `]`); with a name that flow's
   * object alone without a trailing newline, or "" when there is no such flow.
   */
  list(name?: string): string {
    if (name === undefined) return `[${this.list_.map((f) => this.flowJson(f)).join(',\n')}]\n`;
    const f = this.get(name);
    return f === undefined ? '' : this.flowJson(f);
  }

  /** nfqlb's flowSetPrintNames(): a JSON array of names, one per line. */
  listNames(): string {
    if (this.list_.length === 0) return '[]\n';
    return `[\n${this.list_.map((f) => `  ${jsonString(f.name)}`).join(',\n')}\n]\n`;
  }

  /** Adds or replaces (in place) and re-sorts; Array.prototype.sort is stable like glibc's qsort. */
  private insert(f: Flow<T>): void {
    const next = this.list_.slice();
    const i = next.findIndex((g) => g.name === f.name);
    if (i >= 0) next[i] = f;
    else next.push(f);
    next.sort((a, b) => b.priority - a.priority);
    this.list_ = next;
  }

  /**
   * nfqlb's printFlow(). Names print as nfqlb prints them (its docs allow
   * only letters, digits and -+_), except that quotes, backslashes and control
   * characters are escaped: nfqlb prints them raw and its listing is then not
   * JSON (found by fuzzing). Numbers print as C's %u.
   */
  private flowJson(f: Flow<T>): string {
    const list = (items: readonly string[]): string => `[\n${items.map((s) => `    "${s}"`).join(',\n')}\n  ]`;
    let s = `{\n  "name": ${jsonString(f.name)},\n  "priority": ${f.priority >>> 0}`;
    if (f.protoMask !== 0) {
      const names: string[] = [];
      if (f.protoMask & PROTO_BIT_TCP) names.push('"tcp"');
      if (f.protoMask & PROTO_BIT_UDP) names.push('"udp"');
      if (f.protoMask & PROTO_BIT_SCTP) names.push('"sctp"');
      s += `,\n  "protocols": [ ${names.join(', ')} ]`;
    }
    if (f.dstsText !== null) s += `,\n  "dests": ${list(f.dstsText)}`;
    if (f.dports !== null) s += `,\n  "dports": ${list(portsText(f.dports))}`;
    if (f.srcsText !== null) s += `,\n  "srcs": ${list(f.srcsText)}`;
    if (f.sports !== null) s += `,\n  "sports": ${list(portsText(f.sports))}`;
    if (f.match !== null) s += `,\n  "match": ${list(matchText(f.match))}`;
    if (f.udpencap > 0) s += `,\n  "udpencap": ${f.udpencap}`;
    s += `,\n  "matches_count": ${f.matches % 2 ** 32}`;
    if (this.targetName !== undefined) {
      s += `,\n  "user_ref": ${jsonString(f.target === null ? 'NULL' : this.targetName(f.target))}`;
    }
    return `${s}\n}`;
  }
}

/** A JSON string literal; the same bytes as nfqlb's "%s" for names without quotes, backslashes or control characters. */
function jsonString(s: string): string {
  return JSON.stringify(s);
}

/** flowDefine() up to the point where the flow goes into the set: a Flow or the error text. */
function compileFlow<T>(def: FlowDefinition<T>): Flow<T> | string {
  const name = def.name;
  if (name === undefined) return 'No name';
  if (cStrlen(name) >= MAX_NAME) return 'Name too long';

  let protoMask = 0;
  const protos = mkargv(def.protocols, ', ');
  if (protos !== null) {
    protoMask = parseProtocols(protos);
    if (protoMask < 0) return 'Invalid protocols';
  }
  let dports: Int32Array | null = null;
  if (def.dports !== undefined) {
    dports = parsePorts(def.dports);
    if (dports === null) return 'Invalid dports';
  }
  let sports: Int32Array | null = null;
  if (def.sports !== undefined) {
    sports = parsePorts(def.sports);
    if (sports === null) return 'Invalid dports'; // sic: nfqlb's text for bad sports
  }
  let dsts: ParsedCidrs | null = null;
  const dstList = mkargv(def.dsts, ', ');
  if (dstList !== null) {
    dsts = parseCidrs(dstList);
    if (dsts === null) return 'Invalid dsts';
  }
  let srcs: ParsedCidrs | null = null;
  const srcList = mkargv(def.srcs, ', ');
  if (srcList !== null) {
    srcs = parseCidrs(srcList);
    if (srcs === null) return 'Invalid srcs';
  }
  let match: Uint32Array | null = null;
  const stmts = mkargv(def.match, ',');
  if (stmts !== null) {
    match = new Uint32Array(stmts.length * MATCH_WORDS);
    for (let i = 0; i < stmts.length; i++) {
      const err = parseMatchStatement(stmts[i], match, i * MATCH_WORDS);
      // snprintf into nfqlb's 128-byte error buffer.
      if (err !== null) return `Match [${stmts[i]}] ${err}`.slice(0, MAX_ERROR);
    }
  }
  return new Flow<T>(
    name,
    (def.priority ?? 0) | 0,
    def.target,
    (def.udpencap ?? 0) & 0xffff,
    protoMask,
    dsts === null ? null : dsts.words,
    srcs === null ? null : srcs.words,
    dports,
    sports,
    match,
    dsts === null ? null : dsts.text,
    srcs === null ? null : srcs.text,
  );
}

// ---------------------------------------------------------------------------
// Client side

/** The options of `nfqlb flow-set` / `trace-flow-set`, as given on the command line. */
export interface FlowSetArgs {
  name?: string;
  target?: string;
  prio?: string;
  protocols?: string;
  dsts?: string;
  srcs?: string;
  dports?: string;
  sports?: string;
  match?: string;
  udpencap?: string;
}

/**
 * The checks `nfqlb flow-set` makes before it connects (exit 1 on failure):
 * "target too long" (> 255), "<option> too long" (> 1000 bytes),
 * "udpencap specified without protocols", "udpencap specified without sctp"
 * (a given --udpencap, even 0, needs "sctp" somewhere in --protocols, any
 * case), "ports specified without protocols". Returns the first failing
 * message or null. Also right for trace-flow-set, which has no target or
 * udpencap. Required options are the command-line parser's business.
 */
export function checkFlowSetArgs(args: FlowSetArgs): string | null {
  if (args.target !== undefined && cStrlen(args.target) > 255) return 'target too long';
  for (const k of ['protocols', 'dsts', 'srcs', 'dports', 'sports', 'match'] as const) {
    const v = args[k];
    if (v !== undefined && cStrlen(v) > MAX_ARG_LEN) return `${k} too long`;
  }
  if (args.udpencap !== undefined) {
    if (args.protocols === undefined) return 'udpencap specified without protocols';
    if (!asciiLower(args.protocols).includes('sctp')) return 'udpencap specified without sctp';
  }
  if ((args.dports !== undefined || args.sports !== undefined) && args.protocols === undefined) return 'ports specified without protocols';
  return null;
}

/**
 * The FlowCmd the daemon ends up with for a `flow-set` command line: the
 * client sends the options it got, the server takes `priority` and
 * `udpencap` through atoi. For `nfqlb replay` and tests, which skip the socket.
 */
export function flowCmdFromArgs(args: FlowSetArgs): FlowCmd {
  return {
    name: args.name,
    target: args.target,
    priority: args.prio === undefined ? 0 : cAtoi(args.prio),
    protocols: args.protocols,
    dsts: args.dsts,
    srcs: args.srcs,
    dports: args.dports,
    sports: args.sports,
    match: args.match,
    udpencap: args.udpencap === undefined ? 0 : cAtoi(args.udpencap) & 0xffff,
  };
}
