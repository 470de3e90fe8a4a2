/**
 * Flow definitions from text to compiled Flow (match.ts) and back to the
 * listing texts: nfqlb's flowDefine() parsing (flow.c parseCidrs,
 * parseProtocol), rangeset.c's port lists and match.c's byte-match
 * statements, with nfqlb's error texts byte for byte. Each parser returns
 * null (or the error text) where nfqlb would refuse; "Divergence" marks
 * where nfqlb misbehaves and this does the right thing.
 */
import { scanUnsigned, strtol } from '../base/catoi';
import { asciiLower, byteLength, cStrlen, mkargv } from '../base/cstring';
import { type FlowCmd, MAX_NAME_BYTES } from './fields';
import { CIDR_WORDS, Flow, headerLength, MATCH_WORDS, PROTO_BIT_SCTP, PROTO_BIT_TCP, PROTO_BIT_UDP } from './match';
import { IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../packet/hashkey';
import { inetNtop6, inetPton6 } from '../base/inet';

/** flow.c MAX_CIDRS. */
const MAX_CIDRS = 32;
/** flowDefine formats errors into a 128-byte buffer. */
const MAX_ERROR = 127;
/** match.c refuses longer statements. */
const MAX_MATCH_STATEMENT = 64;
/** rangeSetAddStr and the list printers work on 1024-byte copies. */
const MAX_STR = 1024;

/** A byte match's protocol as match.c prints it. */
export function protoName(proto: number): string {
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

/**
 * Why a flow name cannot be used, or null: empty ("No name", nfqlb's text for
 * a missing one; nfqlb takes `name:` with no value and lists a flow `""`),
 * longer than MAX_NAME_BYTES (nfqlb would cut it), or with a NUL byte (nfqlb's
 * C strings end there, so `a\0b` would be the flow `a`). `name` is a byte
 * string or text (UTF-8 counted).
 */
export function checkFlowName(name: string): string | null {
  if (name === '') return 'No name';
  if (name.includes('\0')) return 'Invalid name: it contains a NUL byte';
  if (byteLength(name) > MAX_NAME_BYTES) return `Name too long: at most ${MAX_NAME_BYTES} bytes`;
  return null;
}

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
export function portsText(r: Int32Array): string[] {
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
  const offset = strtol(str.slice(lb + 1, colon), 0);
  const rb = str.indexOf(']', colon);
  const nbytes = Number(strtol(str.slice(colon + 1, rb), 0));
  if (offset + BigInt(nbytes) > BigInt(headerLength(proto))) return 'Out of bounds';
  const amp = str.indexOf('&', rb);
  const eq = str.indexOf('=', rb);
  const mask = amp >= 0 ? Number(BigInt.asUintN(32, strtol(str.slice(amp + 1, eq), 0))) : 0;
  const value = Number(BigInt.asUintN(32, strtol(str.slice(eq + 1), 0)));
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
export function matchText(m: Uint32Array): string[] {
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

/**
 * What `define()` takes: the values of one flow as the daemon receives them
 * (a FlowCmd, see fields.ts for the fields) with the target resolved.
 * `name` is required (undefined gives "No name"); `target` is null for the
 * hidden '#' flows. Absent or empty lists match all; an empty port list
 * matches none (as nfqlb).
 */
export type FlowDefinition<T> = Omit<FlowCmd, 'name' | 'target'> & { name: string | undefined; target: T | null };

/** flowDefine() up to the point where the flow goes into the set: a Flow or the error text. */
export function compileFlow<T>(def: FlowDefinition<T>): Flow<T> | string {
  const name = def.name;
  if (name === undefined) return 'No name';
  const nameError = checkFlowName(name);
  if (nameError !== null) return nameError;

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
