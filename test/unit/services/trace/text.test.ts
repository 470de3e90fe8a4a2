/**
 * packetTraceText, the one declaration of a packet's trace text: the lb mode
 * (no trace-flows) against the flowlb mode, a trace-flow looked up or given,
 * the fwmarks printed in `NO target` / `NO servers` (given or the decision's),
 * and formatPacketTrace, the packet thread's call form, giving the same text.
 * The full set of nfqlb's texts is in test/unit/services/trace/trace.test.ts.
 */
import { flowCmdFromArgs } from '../../../../src/flows/fields';
import { FlowSet } from '../../../../src/flows/flowset';
import { Pipeline } from '../../../../src/datapath/pipeline';
import { MaglevTable } from '../../../../src/tables/maglev';
import { Target, TargetRegistry } from '../../../../src/tables/targets';
import { TRACE_FLOWS, TRACE_PACKET, TRACE_PER_PACKET } from '../../../../src/services/trace/selection';
import { formatPacketTrace, packetTraceText, type TracedPacket } from '../../../../src/services/trace/text';
import { ipv4, udp } from '../../../helpers/packets';

const VIP = '192.0.2.1';
const CLIENT = '198.51.100.2';

function setup() {
  const table = MaglevTable.create(97, 4, 0, 'tshm-a');
  table.activate([4]);
  const empty = MaglevTable.create(97, 4, 0, 'empty');
  const tables = new Map([['tshm-a', table], ['empty', empty]]);
  const registry = new TargetRegistry<MaglevTable>({ open: (n) => tables.get(n) ?? null, close: () => undefined });
  const flows = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
  expect(flows.applySet(flowCmdFromArgs({ name: 'a', target: 'tshm-a', protocols: 'udp', dsts: `${VIP}/32`, dports: '4000' }), registry)).toBe('OK');
  expect(flows.applySet(flowCmdFromArgs({ name: 'd', target: 'empty', protocols: 'udp', dsts: `${VIP}/32`, dports: '4001' }), registry)).toBe('OK');
  const pipeline = new Pipeline<MaglevTable>(flows, { hashMode: 1, nolbFwmark: 8888, notargetsFwmark: 7777 });
  const traceFlows = new FlowSet<string>();
  expect(traceFlows.define({ name: 'tf', target: 'tf', protocols: 'udp', dsts: `${VIP}/32` })).toBeNull();
  const decided = (dport: number): TracedPacket => {
    const pkt = ipv4(CLIENT, VIP, 17, udp(33527, dport, [0x41]));
    pipeline.decide(pkt, 0, pkt.length, 0);
    return { info: pipeline.info, pkt, off: 0, len: pkt.length, decision: pipeline.last };
  };
  return { traceFlows, decided };
}

const MATCH = '\nMatch for trace-flow: tf\nproto=udp, len=29, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n';

describe('packetTraceText', () => {
  it('looks the packet up in the trace-flows, or takes the flow given, with the same text', () => {
    const { traceFlows, decided } = setup();
    const looked = packetTraceText(decided(4000), { mask: TRACE_FLOWS, traceFlows });
    expect(looked).toBe(`${MATCH}target=tshm-a, fwmark=4\n`);
    expect(packetTraceText(decided(4000), { mask: TRACE_FLOWS, traceFlows: null, matchedFlow: 'tf' })).toBe(looked);
  });

  it('in lb mode (no trace-flows) prints no trace-flow lines', () => {
    const { decided } = setup();
    expect(packetTraceText(decided(4000), { mask: TRACE_FLOWS, traceFlows: null })).toBe('');
    expect(packetTraceText(decided(4000), { mask: TRACE_PACKET, traceFlows: null })).toBe('Using LB; tshm-a\nPacket; proto=17, len=29, fwmark=4\n');
  });

  it('prints the notargets fwmark given, else the decision\'s', () => {
    const { traceFlows, decided } = setup();
    const p = decided(4001);
    expect(packetTraceText({ ...p, notargetsFwmark: 1234 }, { mask: TRACE_FLOWS, traceFlows })).toContain('NO servers, target=empty, fwmark=1234\n');
    expect(packetTraceText(p, { mask: TRACE_FLOWS, traceFlows })).toContain(`NO servers, target=empty, fwmark=${p.decision.fwmark}\n`);
  });

  it('formatPacketTrace (the packet thread\'s call form) gives the same text', () => {
    const { traceFlows, decided } = setup();
    for (const dport of [4000, 4001, 9]) {
      const p = decided(dport);
      expect(formatPacketTrace(TRACE_PER_PACKET, traceFlows, p.info, p.pkt, p.off, p.len, p.decision)).toBe(
        packetTraceText(p, { mask: TRACE_PER_PACKET, traceFlows }),
      );
    }
  });
});
