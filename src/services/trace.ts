/**
 * The trace server of the daemon (SPEC.md §8) and the trace texts.
 *
 * Protocol, as nfqlb's traceServerThread: a client connects to
 * `--trace_address` (default unix:nfqlb-trace), gets
 * `Trace active, mask=0x%08x\n` with the mask then in the `nfqlb-trace` shm,
 * and then every trace line until it disconnects. Anything the client sends
 * ends its connection. When the last client leaves, the shm mask is set to 0
 * again, as nfqlb does when its one client leaves; so a mask set by
 * `nfqlb trace` lasts only as long as somebody listens.
 *
 * Differences from nfqlb, on purpose:
 * - Several clients at once (nfqlb serves one, with a backlog of one); they
 *   all see the same lines, selected by the one mask in shm (the last
 *   `nfqlb trace` that set it wins). Past MAX_TRACE_CLIENTS a client gets
 *   one line saying so (refusedNotice) instead of a silent close.
 * - Names in trace lines are the bytes clients sent (latin1 binary strings,
 *   see control.ts); the socket is written as latin1.
 * - A client that reads slowly never blocks the daemon: lines are queued per
 *   client up to a limit (bufferLimit); what does not fit is dropped and
 *   counted, and once the client has caught up it gets one line
 *   `Trace: N lines dropped (this client reads too slowly)`.
 * - With no client, nothing is traced (nfqlb writes traces to stderr until
 *   its first client connects), so tracing costs nothing per packet then.
 *
 * The per-packet texts are nfqlb's (cmdFlowLb.c packetHandleFn, printIcmp,
 * protostr). They are only built when a batch is traced (perPacketMask ≠ 0),
 * so none of this code runs on the untraced packet path.
 */
import * as net from 'node:net';
import { NfqlbError, UsageError } from '../base/errors';
import { parseAddress } from './control';
import { listenAt } from '../addon/sockets';
import { strtol } from '../base/catoi';
import type { FlowSet } from '../flows/flowset';
import { inetNtop6 } from '../base/inet';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../packet/hashkey';
import type { Logger } from '../base/log';
import { classify, PacketInfo, RC_FIRST_FRAGMENT, RC_INVALID, RC_UDP_ENCAP } from '../packet/classify';
import {
  REASON_FRAGMENT_HIT, REASON_FRAGMENT_LOST, REASON_FRAGMENT_MISS, REASON_FRAGMENT_STORED, REASON_FRAGMENT_TABLE_FULL, REASON_INVALID, REASON_LB_TIER,
  REASON_NO_FLOW, REASON_NO_TARGET, type Decision,
} from '../datapath/pipeline';
import type { TraceShm } from '../addon/shm';
import type { LookupTable } from '../tables/targets';

/** Trace mask bits, nfqlb's TRACE_* (log.h, trace.h). */
export const TRACE_LOG = 1;
export const TRACE_PACKET = 2;
export const TRACE_FRAG = 4;
export const TRACE_FLOW_CONF = 8;
export const TRACE_SCTP = 16;
export const TRACE_TARGET = 32;
export const TRACE_FLOWS = 64;
/** The bits that produce lines per packet: the daemon needs a traced batch handler only for these. */
export const TRACE_PER_PACKET = TRACE_PACKET | TRACE_FRAG | TRACE_SCTP | TRACE_FLOWS;

/** `--selection` names, in nfqlb's order (cmdTrace.c str2mask). */
export const TRACE_SELECTION: Readonly<Record<string, number>> = {
  log: TRACE_LOG,
  packet: TRACE_PACKET,
  frag: TRACE_FRAG,
  'flow-conf': TRACE_FLOW_CONF,
  sctp: TRACE_SCTP,
  target: TRACE_TARGET,
  flows: TRACE_FLOWS,
};

/**
 * `--selection=log,packet,...` → mask. Names are split on ',' and empty
 * items skipped (strtok, as nfqlb). Throws UsageError (an NfqlbError, code
 * NFQLB_ERR_TRACE_SELECTION) on an unknown name — nfqlb silently ignores it,
 * which leaves a user tracing nothing without knowing why.
 */
export function parseSelection(selection: string): number {
  let mask = 0;
  for (const name of selection.split(',')) {
    if (name === '') continue;
    const bit = TRACE_SELECTION[name];
    if (bit === undefined || !Object.prototype.hasOwnProperty.call(TRACE_SELECTION, name)) {
      throw new UsageError(
        `Unknown trace selection [${name}]; use a comma separated list of ${Object.keys(TRACE_SELECTION).join(',')}`,
        1, 'NFQLB_ERR_TRACE_SELECTION',
      );
    }
    mask |= bit;
  }
  return mask >>> 0;
}

/**
 * `--mask=...` → mask, as nfqlb's strtol(text, NULL, 0) assigned to a
 * uint32: leading blanks, optional sign, 0x.. hex, 0.. octal or decimal, up
 * to the first character that does not fit; 0 when there is no number;
 * saturated at the limits of a 64-bit long, then the low 32 bits.
 */
export function parseMask(text: string): number {
  return Number(BigInt.asUintN(32, strtol(text, 0)));
}

/** `0x%08x`. */
export function hex8(mask: number): string {
  return `0x${(mask >>> 0).toString(16).padStart(8, '0')}`;
}

/** The first line a client gets (nfqlb's text, one newline). */
export function greeting(mask: number): string {
  return `Trace active, mask=${hex8(mask)}\n`;
}

/**
 * The one line a client gets instead of the greeting when MAX_TRACE_CLIENTS
 * are connected; the server then closes. `nfqlb trace` recognises it by
 * TRACE_REFUSED and exits non-zero.
 */
export function refusedNotice(max: number): string {
  return `${TRACE_REFUSED} ${max} trace clients are connected already; stop one of them and try again\n`;
}
export const TRACE_REFUSED = 'Trace refused:';

/** The line a slow client gets once it has caught up after `n` lines were dropped for it. */
export function droppedNotice(n: number): string {
  return `Trace: ${n} lines dropped (this client reads too slowly)\n`;
}

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
 * (hdrlen+1)*8 bytes like classify() does (SPEC.md §4).
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

/**
 * All trace lines of one decided packet, in nfqlb flowlb's order, for the
 * bits of `mask` (TRACE_PER_PACKET ones; others are ignored), or ''.
 * `info` and `decision` are the pipeline's after decide() (pipeline.info,
 * pipeline.last) for pkt[off, off+len). `traceFlows` are the trace-flows;
 * null in `lb` mode, which has none (and no SCTP-over-UDP re-classification
 * to report). A trace-flow lookup counts a match on the flow, as in nfqlb;
 * it is only made when mask has TRACE_FLOWS and the packet reached nfqlb's
 * flow lookup (not for later fragments, LB-tier fragments or invalid packets).
 * `nolbFwmark`/`notargetsFwmark` are printed in the `NO target`/`NO servers`
 * lines; decision.fwmark is used when they are left out (it is the same value).
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
export function formatPacketTrace(
  mask: number,
  traceFlows: FlowSet<string> | null,
  info: PacketInfo,
  pkt: Uint8Array,
  off: number,
  len: number,
  decision: Decision<LookupTable>,
  nolbFwmark = decision.fwmark,
  notargetsFwmark = decision.fwmark,
): string {
  return render(mask, traceFlows === null, traceFlows, null, info, pkt, off, len, decision, nolbFwmark, notargetsFwmark);
}

/**
 * formatPacketTrace's work. `lbMode`: no flows, no re-classification.
 * `matched`: the trace-flow already found (formatFlowTrace), else looked up in `traceFlows`.
 */
function render(
  mask: number,
  lbMode: boolean,
  traceFlows: FlowSet<string> | null,
  matched: string | null,
  info: PacketInfo,
  pkt: Uint8Array,
  off: number,
  len: number,
  decision: Decision<LookupTable>,
  nolbFwmark: number,
  notargetsFwmark: number,
): string {
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

/**
 * The lines nfqlb prints for a packet that matched trace-flow
 * `traceFlowName` (mask bit TRACE_FLOWS alone), e.g.
 * ```
 * \nMatch for trace-flow: tf
 * proto=udp, len=29, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000
 * target=tshm-a, fwmark=4
 * ```
 * Arguments as formatPacketTrace; no trace-flow lookup is made (the caller
 * found the flow). '' for decisions nfqlb makes before its trace-flow lookup
 * (fragments other than first ones, invalid packets).
 */
export function formatFlowTrace(
  traceFlowName: string,
  info: PacketInfo,
  pkt: Uint8Array,
  off: number,
  len: number,
  decision: Decision<LookupTable>,
  nolbFwmark: number,
  notargetsFwmark: number,
): string {
  return render(TRACE_FLOWS, false, null, traceFlowName, info, pkt, off, len, decision, nolbFwmark, notargetsFwmark);
}

/** Default per-client queue limit: what a client may lag behind before lines are dropped for it. */
export const DEFAULT_CLIENT_BUFFER = 1024 * 1024;
/**
 * At most this many clients; each may hold up to bufferLimit bytes of the
 * daemon's memory. One more is told so in one line (refusedNotice) and closed.
 */
export const MAX_TRACE_CLIENTS = 64;
/** Listen backlog of the trace socket (nfqlb: 1). */
const TRACE_BACKLOG = 64;
/** How long close() lets clients take their last lines. */
const CLOSE_GRACE_MS = 200;
/** Queued text is written out at the end of the event-loop turn, or at once when it grows past this. */
const FLUSH_BYTES = 64 * 1024;

export interface TraceServerOptions {
  /** Bytes a client may have queued before lines are dropped for it (default DEFAULT_CLIENT_BUFFER). */
  bufferLimit?: number;
  /** Where connects and disconnects are logged (nfqlb logs them as warnings). */
  log?: Logger;
  /** Told the number of clients after each connect and disconnect (packet threads trace only while it is > 0). */
  onClients?: (count: number) => void;
}

interface Client {
  readonly sock: net.Socket;
  /** Lines dropped since the client last got everything. */
  dropped: number;
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/**
 * The daemon's trace server. Start with TraceServer.start(); the mask is read
 * from (and, when the last client leaves, reset in) `shm`, which the daemon
 * owns: call close() before unmapping it.
 */
export class TraceServer {
  private readonly clients = new Set<Client>();
  private readonly limit: number;
  private readonly log: Logger | undefined;
  private readonly onClients: (count: number) => void;
  private pending = '';
  private flushTimer: NodeJS.Immediate | null = null;
  private closed = false;
  private dropped = 0;
  private closing: Promise<void> | null = null;
  /**
   * For pino.multistream (or any writer of whole lines): forwards log lines to
   * clients when the mask has TRACE_LOG. Log lines are text; trace lines are
   * latin1 binary strings (names as the bytes the client sent), so a log
   * line is turned into its UTF-8 bytes first.
   */
  readonly logStream = {
    write: (line: string): void => {
      if (this.clients.size === 0 || this.closed || (this.shm.mask & TRACE_LOG) === 0) return;
      // eslint-disable-next-line no-control-regex
      this.append(/^[\x00-\x7f]*$/.test(line) ? line : Buffer.from(line, 'utf8').toString('latin1'));
    },
  };

  private constructor(
    private readonly server: net.Server,
    readonly address: string,
    private readonly shm: TraceShm,
    options: TraceServerOptions,
  ) {
    this.limit = options.bufferLimit ?? DEFAULT_CLIENT_BUFFER;
    this.log = options.log;
    this.onClients = options.onClients ?? (() => {});
    server.on('connection', (sock) => this.accept(sock));
  }

  /**
   * Listens on `address` (unix:NAME or tcp:HOST:PORT), bound as nfqlb binds
   * it (see sockets.ts). Resolves once listening; rejects with NfqlbError
   * NFQLB_ERR_ADDRESS (bad address) or NFQLB_ERR_TRACE_LISTEN (address in
   * use, ...).
   */
  static async start(address: string, shm: TraceShm, options: TraceServerOptions = {}): Promise<TraceServer> {
    const where = parseAddress(address);
    const server = net.createServer();
    try {
      await listenAt(server, where, TRACE_BACKLOG);
    } catch (err) {
      const code = err instanceof NfqlbError ? err.errnoName : undefined;
      throw new NfqlbError(
        code === 'EADDRINUSE'
          ? `trace socket ${address} is in use: another nfqlb daemon runs in this network namespace; stop it or use --trace_address`
          : `cannot listen on trace socket ${address}: ${(err as Error).message}`,
        'NFQLB_ERR_TRACE_LISTEN', { cause: err });
    }
    return new TraceServer(server, address, shm, options);
  }

  /** Clients connected now. */
  get clientCount(): number {
    return this.clients.size;
  }

  /** Lines dropped for slow clients since start, summed over clients (a line dropped for two counts twice). */
  get droppedLines(): number {
    return this.dropped;
  }

  /** The mask in effect: the shm mask while a client listens, else 0. */
  get mask(): number {
    if (this.clients.size === 0 || this.closed) return 0;
    return this.shm.mask;
  }

  /**
   * The per-packet bits in effect (TRACE_PER_PACKET & mask); 0 when no
   * client listens. Read it once per batch: 0 → the untraced handler,
   * else the traced one with this value as `mask` for tracePacket().
   */
  get perPacketMask(): number {
    if (this.clients.size === 0 || this.closed) return 0;
    return (this.shm.mask & TRACE_PER_PACKET) >>> 0;
  }

  /** Whether a line for `bit` would go anywhere now. */
  enabled(bit: number): boolean {
    return (this.mask & bit) !== 0;
  }

  /** Sends `text` (whole lines, '\n'-terminated) to every client when the mask has `bit`. */
  trace(bit: number, text: string): void {
    if (this.clients.size === 0 || this.closed || (this.shm.mask & bit) === 0) return;
    this.append(text);
  }

  /**
   * Traces one decided packet (see formatPacketTrace) with `mask` as read from
   * perPacketMask for this batch. Call right after pipeline.decide(), with
   * pipeline.info and pipeline.last.
   */
  tracePacket(
    mask: number,
    traceFlows: FlowSet<string> | null,
    info: PacketInfo,
    pkt: Uint8Array,
    off: number,
    len: number,
    decision: Decision<LookupTable>,
  ): void {
    if (this.clients.size === 0 || this.closed) return;
    const text = formatPacketTrace(mask, traceFlows, info, pkt, off, len, decision);
    if (text !== '') this.append(text);
  }

  /** Sends whole lines already selected by the mask (a packet thread's per-packet lines) to every client. */
  traceLines(text: string): void {
    if (this.clients.size === 0 || this.closed) return;
    this.append(text);
  }

  /** Writes out queued lines now (they also go out by themselves at the end of the event-loop turn). */
  flush(): void {
    if (this.flushTimer !== null) {
      clearImmediate(this.flushTimer);
      this.flushTimer = null;
    }
    const chunk = this.pending;
    if (chunk === '') return;
    this.pending = '';
    let lines = -1;
    for (const c of this.clients) {
      const sock = c.sock;
      if (sock.destroyed) continue;
      if (sock.writableLength + chunk.length > this.limit) {
        if (lines < 0) lines = countLines(chunk);
        c.dropped += lines;
        this.dropped += lines;
        continue;
      }
      if (c.dropped > 0) this.sendNotice(c);
      sock.write(chunk, 'latin1');
    }
  }

  /**
   * Stops listening, sends what is queued, then closes every client (those
   * that do not take their last lines within CLOSE_GRACE_MS are cut off), and
   * sets the shm mask back to 0 if any client was connected. The shm is not
   * touched after this returns, so the caller may unmap it then. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.flush();
    if (this.clients.size > 0) this.resetMask();
    this.closed = true;
    const socks = [...this.clients].map((c) => c.sock);
    this.clients.clear();
    this.onClients(0);
    this.closing = new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const sock of socks) sock.end();
      setTimeout(() => {
        for (const sock of socks) sock.destroy();
      }, CLOSE_GRACE_MS).unref();
    });
    return this.closing;
  }

  private append(text: string): void {
    this.pending += text;
    if (this.pending.length >= FLUSH_BYTES) this.flush();
    else if (this.flushTimer === null) this.flushTimer = setImmediate(() => this.flush());
  }

  private sendNotice(c: Client): void {
    c.sock.write(droppedNotice(c.dropped));
    c.dropped = 0;
  }

  private accept(sock: net.Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    if (this.clients.size >= MAX_TRACE_CLIENTS) {
      // Said in a line rather than a silent close, so the client knows why.
      sock.on('error', () => sock.destroy());
      sock.end(refusedNotice(MAX_TRACE_CLIENTS));
      setTimeout(() => sock.destroy(), CLOSE_GRACE_MS).unref();
      this.log?.warn({ clients: this.clients.size }, 'trace client refused: too many clients');
      return;
    }
    // Lines queued before this client came are not for it.
    this.flush();
    const client: Client = { sock, dropped: 0 };
    this.clients.add(client);
    const mask = this.shm.mask;
    sock.write(greeting(mask));
    this.log?.warn({ mask: hex8(mask), clients: this.clients.size }, 'trace client connected');
    this.onClients(this.clients.size);
    sock.on('drain', () => {
      if (client.dropped > 0 && !sock.destroyed) this.sendNotice(client);
    });
    // nfqlb: "Any input should be a shutdown".
    sock.on('data', () => sock.destroy());
    sock.on('end', () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      if (!this.clients.delete(client)) return;
      if (this.clients.size === 0 && !this.closed) this.resetMask();
      this.onClients(this.clients.size);
      this.log?.warn({ clients: this.clients.size }, 'trace client closed');
    });
  }

  /** nfqlb sets the mask to 0 when its client leaves, so nothing stays traced for nobody. */
  private resetMask(): void {
    if (this.shm.buffer.byteLength >= 8) this.shm.mask = 0;
  }
}
