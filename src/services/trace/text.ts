/**
 * nfqlb's trace texts of a packet (cmdFlowLb.c packetHandleFn, printIcmp,
 * protostr). They are only built when a batch is traced (the trace server's
 * perPacketMask is not 0), so none of this code runs on the untraced packet
 * path.
 */
import { inetNtop6 } from '../../base/inet';
import type { FlowSet } from '../../flows/flowset';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../../packet/hashkey';
import { classify, PacketInfo, RC_FIRST_FRAGMENT, RC_INVALID, RC_UDP_ENCAP } from '../../packet/classify';
import {
  REASON_FRAGMENT_HIT, REASON_FRAGMENT_LOST, REASON_FRAGMENT_MISS, REASON_FRAGMENT_STORED, REASON_FRAGMENT_TABLE_FULL, REASON_INVALID, REASON_LB_TIER,
  REASON_NO_FLOW, REASON_NO_TARGET, type Decision,
} from '../../datapath/pipeline';
import type { LookupTable } from '../../tables/targets';
import { TRACE_FLOWS, TRACE_FRAG, TRACE_PACKET, TRACE_SCTP } from './selection';

/** nfqlb's protostr(): the name of an L4 protocol, or its number. */
export function protoStr(proto: number): string {
  switch (proto) {
    case IPPROTO_TCP: return 'tcp';
    case IPPROTO_UDP: return 'udp';
    case IPPROTO_SCTP: return 'sctp';
    case IPPROTO_ICMP: return 'icmp';
    case IPPROTO_ICMPV6: return 'icmp6';
    default: return String(proto);
  }
}

const ICMP_DEST_UNREACH = 3;
const ICMP_FRAG_NEEDED = 4;
const ICMP_ECHO = 8;
const ICMP6_PACKET_TOO_BIG = 2;
const ICMP6_ECHO_REQUEST = 128;

/**
 * nfqlb's printIcmp(): one line describing the ICMP header of pkt[off,
 * off+len), or '' when the packet is not ICMP/ICMPv6. Formats:
 * `ICMP_DEST_UNREACH/FRAG_NEEDED: mtu=M`, `ICMP_DEST_UNREACH: code=C`,
 * `ICMP_ECHO: id=I, seq=S`, `ICMP T, C`, `ICMP6_PACKET_TOO_BIG: mtu=M`,
 * `ICMP6_ECHO_REQUEST: id=I, seq=S`, `ICMP6 T, C`.
 * Unlike nfqlb it never reads past the packet: a field that is not there is
 * not printed (a header shorter than 8 bytes gets the `ICMP T, C` form, one
 * shorter than 2 bytes nothing), and IPv6 extension headers are walked as
 * (hdrlen+1)*8 bytes like classify() does (src/packet/classify.ts).
 */
export function formatIcmp(pkt: Uint8Array, off: number, len: number): string {
  const end = Math.min(off + len, pkt.length);
  if (off < 0 || off >= end) return '';
  if (pkt[off] >> 4 === 6) {
    if (off + 40 > end) return '';
    let nxt = pkt[off + 6];
    let p = off + 40;
    for (;;) {
      if (nxt === 44) {
        if (p + 8 > end) return '';
        nxt = pkt[p];
        p += 8;
      } else if (nxt === 0 || nxt === 43 || nxt === 60) {
        if (p + 2 > end) return '';
        nxt = pkt[p];
        p += (pkt[p + 1] + 1) * 8;
      } else {
        break;
      }
    }
    if (nxt !== IPPROTO_ICMPV6 || p + 2 > end) return '';
    const type = pkt[p];
    const code = pkt[p + 1];
    if (p + 8 <= end) {
      if (type === ICMP6_PACKET_TOO_BIG) {
        return `ICMP6_PACKET_TOO_BIG: mtu=${((pkt[p + 4] << 24) | (pkt[p + 5] << 16) | (pkt[p + 6] << 8) | pkt[p + 7]) >>> 0}\n`;
      }
      if (type === ICMP6_ECHO_REQUEST) return `ICMP6_ECHO_REQUEST: id=${u16(pkt, p + 4)}, seq=${u16(pkt, p + 6)}\n`;
    }
    return `ICMP6 ${type}, ${code}\n`;
  }
  if (off + 20 > end) return '';
  const ihl = pkt[off] & 0x0f;
  if (ihl < 5 || pkt[off + 9] !== IPPROTO_ICMP) return '';
  const p = off + ihl * 4;
  if (p + 2 > end) return '';
  const type = pkt[p];
  const code = pkt[p + 1];
  if (p + 8 <= end) {
    if (type === ICMP_DEST_UNREACH) {
      return code === ICMP_FRAG_NEEDED ? `ICMP_DEST_UNREACH/FRAG_NEEDED: mtu=${u16(pkt, p + 6)}\n` : `ICMP_DEST_UNREACH: code=${code}\n`;
    }
    if (type === ICMP_ECHO) return `ICMP_ECHO: id=${u16(pkt, p + 4)}, seq=${u16(pkt, p + 6)}\n`;
  } else if (type === ICMP_DEST_UNREACH) {
    return `ICMP_DEST_UNREACH: code=${code}\n`;
  }
  return `ICMP ${type}, ${code}\n`;
}

function u16(pkt: Uint8Array, p: number): number {
  return (pkt[p] << 8) | pkt[p + 1];
}

/**
 * The packet as nfqlb's trace-flow lookup and `proto=` line see it: keyed
 * with udpencap 0 (before any SCTP-over-UDP re-classification). Scratch
 * object: the formatters are not re-entrant, and need not be.
 */
const outer = new PacketInfo();

/** `proto=P, len=L, SRC SPORT -> DST DPORT` from a key (addresses as inet_ntop of the 16-byte key fields). */
function keyLine(info: PacketInfo, len: number): string {
  const k = info.key;
  const proto = k[34] | (k[35] << 8);
  return `proto=${protoStr(proto)}, len=${len}, ${inetNtop6(k, 0)} ${(k[36] << 8) | k[37]} -> ${inetNtop6(k, 16)} ${(k[38] << 8) | k[39]}\n`;
}

/** The fwmark the table gave before a later step (the fragment table) refused the packet. */
function tableFwmark(decision: Decision<LookupTable>): number {
  return decision.target !== null && decision.hash >= 0 ? decision.target.table.fwmarkOf(decision.hash) : -1;
}

/** One decided packet, as the pipeline left it: pipeline.info and pipeline.last after decide() for pkt[off, off+len). */
export interface TracedPacket {
  info: PacketInfo;
  pkt: Uint8Array;
  off: number;
  len: number;
  decision: Decision<LookupTable>;
  /** Printed in the `NO target` line (default decision.fwmark, which is the same value). */
  nolbFwmark?: number;
  /** Printed in the `NO servers` line (default decision.fwmark, which is the same value). */
  notargetsFwmark?: number;
}

/** What a packet is traced for. */
export interface PacketTraceOptions {
  mask: number;
  /** The trace-flows to look the packet up in; null in `lb` mode, which has none (and no SCTP-over-UDP re-classification to report). */
  traceFlows: FlowSet<string> | null;
  /** The trace-flow the caller already found: no lookup is made. */
  matchedFlow?: string;
}

/**
 * All trace lines of one decided packet, in nfqlb flowlb's order, for the
 * bits of `trace.mask` (TRACE_PER_PACKET ones; others are ignored), or ''.
 * A trace-flow lookup counts a match on the flow, as in nfqlb; it is only
 * made when the mask has TRACE_FLOWS and the packet reached nfqlb's flow
 * lookup (not for later fragments, LB-tier fragments or invalid packets).
 * With `trace.matchedFlow` no lookup is made: the packet is traced as a
 * match of that trace-flow (what nfqlb prints for TRACE_FLOWS alone, e.g.
 * `\nMatch for trace-flow: tf\nproto=udp, len=29, ::ffff:198.51.100.2 33527
 * -> ::ffff:192.0.2.1 4000\ntarget=tshm-a, fwmark=4\n`).
 *
 * Lines (nfqlb's texts):
 *   FRAG    `Fragment to LB tier. fw=F` | `Fragment dropped` | `Handle non-first frag locally fwmark=F`
 *   FLOWS   `\nMatch for trace-flow: NAME`, printIcmp's line, `proto=..., len=L, SRC SP -> DST DP`, `udpencap=P`
 *   SCTP    `Udp encapsulated sctp packet on port P`, `FAILED: Re-compute key with udpencap`, `Failed flowLookup for udpencap`
 *   PACKET  `Failed flowLookup`
 *   FLOWS   `NO target, fwmark=F` | `NO servers, target=T, fwmark=F` | `target=T, fwmark=F`
 *   FRAG    `First fragment`, `FAILED: Handle first fragment` (also under FLOWS)
 *   PACKET (or SCTP for an SCTP packet)  `Using LB; T`, `Packet; proto=N, len=L, fwmark=F`
 */
export function packetTraceText(packet: TracedPacket, trace: PacketTraceOptions): string {
  const { info, pkt, off, len, decision } = packet;
  const { mask, traceFlows } = trace;
  const matched = trace.matchedFlow ?? null;
  const lbMode = traceFlows === null && matched === null;
  const nolbFwmark = packet.nolbFwmark ?? decision.fwmark;
  const notargetsFwmark = packet.notargetsFwmark ?? decision.fwmark;
  const reason = decision.reason;
  const frag = (mask & TRACE_FRAG) !== 0;
  switch (reason) {
    case REASON_LB_TIER:
      return frag ? `Fragment to LB tier. fw=${decision.fwmark}\n` : '';
    case REASON_FRAGMENT_MISS:
      // Without a tun device nothing is stored: nfqlb's "dropped" branch.
      return frag ? 'Fragment dropped\n' : '';
    case REASON_FRAGMENT_HIT:
      return frag ? `Handle non-first frag locally fwmark=${decision.fwmark}\n` : '';
    case REASON_FRAGMENT_STORED:
      return frag ? 'Fragment stored\n' : '';
    case REASON_FRAGMENT_LOST:
      // A first fragment refused because its datagram is lost is traced below, as a refused store.
      if (info.rc <= 0 || (info.rc & RC_FIRST_FRAGMENT) === 0) return frag ? 'Fragment dropped\n' : '';
      break;
    default:
  }
  let text = '';
  let tflow: string | null = null;
  let reencap = 0;
  if (!lbMode) {
    // The packet as nfqlb keyed it before any SCTP-over-UDP re-classification.
    if (classify(pkt, off, len, 0, outer) === RC_INVALID) return '';
    // The pipeline re-classified (or failed to) because a hidden '#name' flow
    // matched; its port is the UDP destination port.
    if (outer.proto === IPPROTO_UDP && ((info.rc > 0 && (info.rc & RC_UDP_ENCAP) !== 0) || reason === REASON_INVALID)) {
      reencap = outer.dport;
    }
    if ((mask & TRACE_FLOWS) !== 0) {
      tflow = matched ?? (traceFlows === null ? null : traceFlows.lookup(outer, pkt)?.target ?? null);
      if (tflow !== null) {
        text += `\nMatch for trace-flow: ${tflow}\n${formatIcmp(pkt, off, len)}${keyLine(outer, len)}`;
        if (reencap !== 0) text += `udpencap=${reencap}\n`;
      }
    }
  } else if (reason === REASON_INVALID) {
    return '';
  }
  const sctp = (mask & TRACE_SCTP) !== 0;
  if (reencap !== 0 && sctp) text += `Udp encapsulated sctp packet on port ${reencap}\n`;
  if (reason === REASON_INVALID) {
    if (sctp) text += 'FAILED: Re-compute key with udpencap\n';
    return text;
  }
  if (reason === REASON_NO_FLOW) {
    if (reencap !== 0 && sctp) text += 'Failed flowLookup for udpencap\n';
    if ((mask & TRACE_PACKET) !== 0) text += 'Failed flowLookup\n';
    if (tflow !== null) text += `NO target, fwmark=${nolbFwmark}\n`;
    return text;
  }
  const target = decision.target === null ? 'NULL' : decision.target.name;
  if (reason === REASON_NO_TARGET) {
    if (tflow !== null) text += `NO servers, target=${target}, fwmark=${notargetsFwmark}\n`;
    return text;
  }
  const refused = reason === REASON_FRAGMENT_TABLE_FULL || reason === REASON_FRAGMENT_LOST;
  const fw = refused ? tableFwmark(decision) : decision.fwmark;
  if (tflow !== null) text += `target=${target}, fwmark=${fw}\n`;
  if (info.rc > 0 && (info.rc & RC_FIRST_FRAGMENT) !== 0) {
    if (frag) text += 'First fragment\n';
    if (refused) {
      if (frag) text += 'FAILED: Handle first fragment\n';
      if (tflow !== null) text += 'FAILED: Handle first fragment\n';
      return text;
    }
  }
  if ((mask & TRACE_PACKET) !== 0 || (sctp && info.proto === IPPROTO_SCTP)) {
    text += `Using LB; ${target}\nPacket; proto=${info.proto}, len=${len}, fwmark=${fw >>> 0}\n`;
  }
  return text;
}

/** packetTraceText() in the packet thread's call form (src/daemon/packetthread.ts). */
export function formatPacketTrace(mask: number, traceFlows: FlowSet<string> | null, info: PacketInfo, pkt: Uint8Array, off: number, len: number, decision: Decision<LookupTable>): string {
  return packetTraceText({ info, pkt, off, len, decision }, { mask, traceFlows });
}
