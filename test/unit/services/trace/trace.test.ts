/**
 * nfqlb's per-packet trace texts on hand-made packets (services/trace/text.ts)
 * and the mask's selection words (services/trace/selection.ts). The trace
 * server's tests are in test/unit/services/trace/server.test.ts, the `trace`
 * and `loglevel` commands' in test/unit/cli/commands/trace.test.ts.
 */
import { NfqlbError } from '../../../../src/base/errors';
import { flowCmdFromArgs } from '../../../../src/flows/fields';
import { FlowSet } from '../../../../src/flows/flowset';
import { MaglevTable } from '../../../../src/tables/maglev';
import { Pipeline, REASON_FRAGMENT_HIT, REASON_FRAGMENT_LOST, REASON_FRAGMENT_STORED, REASON_NO_FLOW, REASON_NO_TARGET, REASON_TARGET, type PipelineOptions } from '../../../../src/datapath/pipeline';
import { Target, TargetRegistry } from '../../../../src/tables/targets';
import {
  formatIcmp, formatPacketTrace, packetTraceText, parseMask, parseSelection,
  TRACE_FLOWS, TRACE_FRAG, TRACE_PACKET, TRACE_PER_PACKET, TRACE_SCTP,
} from '../../../../src/services/trace';
import { ipv4, ipv6, tcp, udp } from '../../../helpers/packets';

// ---------------------------------------------------------------- texts

const VIP = '192.0.2.1';
const CLIENT = '198.51.100.2';

function sctpHeader(sport: number, dport: number): number[] {
  return [sport >> 8, sport & 0xff, dport >> 8, dport & 0xff, 0, 0, 0, 1, 0, 0, 0, 0];
}

function icmpEchoPing(id: number, seq: number, dataLen: number): number[] {
  return [8, 0, 0, 0, id >> 8, id & 0xff, seq >> 8, seq & 0xff, ...new Array<number>(dataLen).fill(0)];
}

function setup(extra: Partial<PipelineOptions<MaglevTable>> = {}) {
  const tables = new Map<string, MaglevTable>([
    ['tshm-a', MaglevTable.create(97, 4, 0, 'tshm-a')],
    ['nfqlb', MaglevTable.create(97, 4, 0, 'nfqlb')],
    ['empty', MaglevTable.create(97, 4, 0, 'empty')],
  ]);
  tables.get('tshm-a')!.activate([4]);
  tables.get('nfqlb')!.activate([102]);
  const registry = new TargetRegistry<MaglevTable>({ open: (n) => tables.get(n) ?? null, close: () => undefined });
  const flows = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
  const set = (args: Record<string, string>): void => {
    expect(flows.applySet(flowCmdFromArgs(args), registry)).toBe('OK');
  };
  set({ name: 'a', target: 'tshm-a', prio: '10', protocols: 'tcp,udp', dsts: `${VIP}/32,2001:db8::1/128`, dports: '80,4000' });
  set({ name: 'sctp', target: 'tshm-a', prio: '10', protocols: 'sctp', dsts: `${VIP}/32`, udpencap: '9899' });
  set({ name: 'dead', target: 'empty', prio: '5', protocols: 'tcp', dports: '81' });
  set({ name: 'ping', target: 'nfqlb', prio: '1', dsts: '10.0.0.0/32,2001:db8::99/128' });
  const pipeline = new Pipeline<MaglevTable>(flows, { hashMode: 1, nolbFwmark: 8888, notargetsFwmark: 7777, ...extra });
  // Trace-flows as the daemon keeps them: the target is the flow's own name.
  const traceFlows = new FlowSet<string>({ promiscuousPing: true });
  expect(traceFlows.define({ name: 'tf', target: 'tf', protocols: 'udp,tcp,sctp', dsts: `${VIP}/32` })).toBeNull();
  const decide = (pkt: Uint8Array): number => pipeline.decide(pkt, 0, pkt.length, 0);
  /** packetTraceText for a packet that matched trace-flow `name` (the lookup already made). */
  const flowTrace = (pkt: Uint8Array, name = 'tf'): string => {
    decide(pkt);
    return packetTraceText(
      { info: pipeline.info, pkt, off: 0, len: pkt.length, decision: pipeline.last, nolbFwmark: 8888, notargetsFwmark: 7777 },
      { mask: TRACE_FLOWS, traceFlows: null, matchedFlow: name },
    );
  };
  const packetTrace = (mask: number, pkt: Uint8Array): string => {
    decide(pkt);
    return formatPacketTrace(mask, traceFlows, pipeline.info, pkt, 0, pkt.length, pipeline.last);
  };
  return { pipeline, traceFlows, decide, flowTrace, packetTrace };
}

describe('per-packet trace texts (nfqlb cmdFlowLb.c)', () => {
  it('UDP over IPv4', () => {
    const { flowTrace } = setup();
    expect(flowTrace(ipv4(CLIENT, VIP, 17, udp(33527, 4000, [0x41])))).toBe(
      '\nMatch for trace-flow: tf\n' +
      'proto=udp, len=29, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n' +
      'target=tshm-a, fwmark=4\n',
    );
  });

  it('TCP over IPv4 and IPv6', () => {
    const { flowTrace } = setup();
    expect(flowTrace(ipv4(CLIENT, VIP, 6, tcp(40000, 80)))).toBe(
      '\nMatch for trace-flow: tf\nproto=tcp, len=40, ::ffff:198.51.100.2 40000 -> ::ffff:192.0.2.1 80\ntarget=tshm-a, fwmark=4\n',
    );
    expect(flowTrace(ipv6('2001:db8:100::7', '2001:db8::1', 6, tcp(40000, 80)))).toBe(
      '\nMatch for trace-flow: tf\nproto=tcp, len=60, 2001:db8:100::7 40000 -> 2001:db8::1 80\ntarget=tshm-a, fwmark=4\n',
    );
  });

  it('ICMP echo (the example of the nfqlb trace format) and ICMPv6 echo', () => {
    const { flowTrace } = setup();
    expect(flowTrace(ipv4('20.0.0.0', '10.0.0.0', 1, icmpEchoPing(58880, 0, 56)), 'from-test-server')).toBe(
      '\nMatch for trace-flow: from-test-server\n' +
      'ICMP_ECHO: id=58880, seq=0\n' +
      'proto=icmp, len=84, ::ffff:20.0.0.0 0 -> ::ffff:10.0.0.0 0\n' +
      'target=nfqlb, fwmark=102\n',
    );
    const echo6 = [128, 0, 0, 0, 0x12, 0x34, 0, 5, 1, 2, 3, 4];
    expect(flowTrace(ipv6('2001:db8:100::7', '2001:db8::99', 58, echo6))).toBe(
      '\nMatch for trace-flow: tf\n' +
      'ICMP6_ECHO_REQUEST: id=4660, seq=5\n' +
      'proto=icmp6, len=52, 2001:db8:100::7 0 -> 2001:db8::99 0\n' +
      'target=nfqlb, fwmark=102\n',
    );
  });

  it('NO target when no flow matches, NO servers when the table has no target', () => {
    const { flowTrace, pipeline } = setup();
    expect(flowTrace(ipv4(CLIENT, '203.0.113.9', 6, tcp(40000, 22)))).toBe(
      '\nMatch for trace-flow: tf\nproto=tcp, len=40, ::ffff:198.51.100.2 40000 -> ::ffff:203.0.113.9 22\nNO target, fwmark=8888\n',
    );
    expect(pipeline.last.reason).toBe(REASON_NO_FLOW);
    expect(flowTrace(ipv4(CLIENT, VIP, 6, tcp(40000, 81)))).toBe(
      '\nMatch for trace-flow: tf\nproto=tcp, len=40, ::ffff:198.51.100.2 40000 -> ::ffff:192.0.2.1 81\nNO servers, target=empty, fwmark=7777\n',
    );
    expect(pipeline.last.reason).toBe(REASON_NO_TARGET);
  });

  it('ICMP error: printIcmp line, and the key of the embedded packet', () => {
    const { flowTrace } = setup();
    // The router tells the VIP that its UDP reply to the client needs a smaller MTU.
    const inner = Array.from(ipv4(VIP, CLIENT, 17, udp(4000, 33527, [0x41])));
    const fragNeeded = [3, 4, 0, 0, 0, 0, 1400 >> 8, 1400 & 0xff, ...inner];
    const pkt = ipv4('203.0.113.1', VIP, 1, fragNeeded);
    expect(flowTrace(pkt)).toBe(
      '\nMatch for trace-flow: tf\n' +
      'ICMP_DEST_UNREACH/FRAG_NEEDED: mtu=1400\n' +
      `proto=udp, len=${pkt.length}, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n` +
      'target=tshm-a, fwmark=4\n',
    );
  });

  it('SCTP over UDP: the outer UDP key, udpencap=P, then the SCTP decision', () => {
    const { flowTrace, packetTrace, pipeline } = setup();
    const pkt = ipv4(CLIENT, VIP, 17, udp(5000, 9899, sctpHeader(7000, 38412)));
    expect(flowTrace(pkt)).toBe(
      '\nMatch for trace-flow: tf\n' +
      `proto=udp, len=${pkt.length}, ::ffff:198.51.100.2 5000 -> ::ffff:192.0.2.1 9899\n` +
      'udpencap=9899\n' +
      'target=tshm-a, fwmark=4\n',
    );
    expect(pipeline.info.proto).toBe(132);
    expect(packetTrace(TRACE_SCTP, pkt)).toBe(
      'Udp encapsulated sctp packet on port 9899\nUsing LB; tshm-a\n' + `Packet; proto=132, len=${pkt.length}, fwmark=4\n`,
    );
  });

  it('formatPacketTrace: trace-flow lookup, bits in nfqlb order, fragments', () => {
    const { packetTrace, traceFlows, pipeline } = setup();
    const pkt = ipv4(CLIENT, VIP, 17, udp(33527, 4000, [0x41]));
    expect(packetTrace(TRACE_FLOWS | TRACE_PACKET, pkt)).toBe(
      '\nMatch for trace-flow: tf\nproto=udp, len=29, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\ntarget=tshm-a, fwmark=4\n' +
      'Using LB; tshm-a\nPacket; proto=17, len=29, fwmark=4\n',
    );
    expect(traceFlows.list('tf')).toContain('"matches_count": 1');
    // No trace-flow matches (not to the VIP): only the PACKET lines.
    const other = ipv4(CLIENT, '203.0.113.9', 6, tcp(40000, 22));
    expect(packetTrace(TRACE_FLOWS, other)).toBe('');
    expect(packetTrace(TRACE_FLOWS | TRACE_PACKET, other)).toBe('Failed flowLookup\n');
    // A first fragment, then a later one.
    const first = ipv4(CLIENT, VIP, 17, udp(33527, 4000, new Array<number>(16).fill(7)), { id: 77, moreFragments: true });
    expect(packetTrace(TRACE_FLOWS | TRACE_FRAG, first)).toBe(
      `\nMatch for trace-flow: tf\nproto=udp, len=${first.length}, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n` +
      'target=tshm-a, fwmark=4\nFirst fragment\n',
    );
    const later = ipv4(CLIENT, VIP, 17, [1, 2, 3, 4, 5, 6, 7, 8], { id: 77, fragOffset: 3 });
    expect(packetTrace(TRACE_FLOWS | TRACE_FRAG, later)).toBe('Handle non-first frag locally fwmark=4\n');
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_HIT);
    // An invalid packet: nothing (nfqlb only logs a warning).
    expect(packetTrace(TRACE_PER_PACKET, pkt.subarray(0, 10))).toBe('');
    expect(pipeline.last.reason).not.toBe(REASON_TARGET);
  });

  it('with a fragment store (--tun): stored, dropped when the datagram is lost, and its first fragment refused', () => {
    const { packetTrace, pipeline } = setup({ fragmentStoreSlots: 1 });
    const later = (id: number): Uint8Array => ipv4(CLIENT, VIP, 17, [1, 2, 3, 4, 5, 6, 7, 8], { id, fragOffset: 3 });
    expect(packetTrace(TRACE_FRAG, later(80))).toBe('Fragment stored\n');
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_STORED);
    // The one slot is taken: datagram 81 loses this fragment and is given up.
    expect(packetTrace(TRACE_FRAG, later(81))).toBe('Fragment dropped\n');
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_LOST);
    const first = ipv4(CLIENT, VIP, 17, udp(33527, 4000, new Array<number>(16).fill(7)), { id: 81, moreFragments: true });
    expect(packetTrace(TRACE_FLOWS | TRACE_FRAG, first)).toBe(
      `\nMatch for trace-flow: tf\nproto=udp, len=${first.length}, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n` +
      'target=tshm-a, fwmark=4\nFirst fragment\nFAILED: Handle first fragment\nFAILED: Handle first fragment\n',
    );
  });

  it('formatIcmp: the other printIcmp forms, and never past the end', () => {
    expect(formatIcmp(ipv4(CLIENT, VIP, 1, [3, 1, 0, 0, 0, 0, 0, 0]), 0, 28)).toBe('ICMP_DEST_UNREACH: code=1\n');
    expect(formatIcmp(ipv4(CLIENT, VIP, 1, [0, 0, 0, 0, 0, 1, 0, 2]), 0, 28)).toBe('ICMP 0, 0\n');
    expect(formatIcmp(ipv6('2001:db8::1', '2001:db8::2', 58, [2, 0, 0, 0, 0, 0, 5, 0]), 0, 48)).toBe('ICMP6_PACKET_TOO_BIG: mtu=1280\n');
    expect(formatIcmp(ipv6('2001:db8::1', '2001:db8::2', 58, [129, 0, 0, 0, 0, 1, 0, 1]), 0, 48)).toBe('ICMP6 129, 0\n');
    // Hop-by-hop options (8 bytes, hdrlen 0) before the ICMPv6 header.
    expect(formatIcmp(ipv6('2001:db8::1', '2001:db8::2', 0, [58, 0, 1, 4, 0, 0, 0, 0, 128, 0, 0, 0, 0, 9, 0, 1]), 0, 56)).toBe(
      'ICMP6_ECHO_REQUEST: id=9, seq=1\n',
    );
    expect(formatIcmp(ipv4(CLIENT, VIP, 6, tcp(1, 2)), 0, 40)).toBe('');
    const echo = ipv4(CLIENT, VIP, 1, [8, 0, 0, 0, 0, 1, 0, 2]);
    expect(formatIcmp(echo, 0, 24)).toBe('ICMP 8, 0\n');
    expect(formatIcmp(echo, 0, 21)).toBe('');
  });
});

describe('parseSelection / parseMask', () => {
  it('maps names to bits', () => {
    expect(parseSelection('flows')).toBe(0x40);
    expect(parseSelection('log,packet,frag,flow-conf,sctp,target,flows')).toBe(0x7f);
    expect(parseSelection('log,,packet,')).toBe(3);
    expect(parseSelection('')).toBe(0);
  });

  it('refuses unknown names with a clear message', () => {
    expect(() => parseSelection('log,bogus')).toThrow(NfqlbError);
    expect(() => parseSelection('log,bogus')).toThrow(
      'Unknown trace selection [bogus]; use a comma separated list of log,packet,frag,flow-conf,sctp,target,flows',
    );
    expect(() => parseSelection('__proto__')).toThrow(/Unknown trace selection/);
    expect(() => parseSelection('Log')).toThrow(/Unknown trace selection \[Log\]/);
  });

  it('reads --mask as strtol(s, NULL, 0) into a uint32', () => {
    expect(parseMask('0x40')).toBe(0x40);
    expect(parseMask('64')).toBe(64);
    expect(parseMask('0100')).toBe(64);
    expect(parseMask(' 0X7f')).toBe(0x7f);
    expect(parseMask('-1')).toBe(0xffffffff);
    expect(parseMask('0x1zz')).toBe(1);
    expect(parseMask('abc')).toBe(0);
    expect(parseMask('0x')).toBe(0);
    expect(parseMask('0x1ffffffff')).toBe(0xffffffff);
  });
});
