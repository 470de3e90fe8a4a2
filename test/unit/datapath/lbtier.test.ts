/**
 * The LB tier in the pipeline (--lbshm, issue 12 point 4), as nfqlb's flowlb
 * and lb do it: a fragment, first or later, is hashed on its addresses alone
 * (key bytes 0-31) over the tier table; when that names another LB's fwmark
 * (not ownFwmark) the fragment is accepted with it, before flows, the target
 * table or the fragment table are looked at. Non-fragments never look at the
 * tier. The live end-to-end and packet-by-packet comparisons with nfqlb 1.2.0
 * are test/e2e/fragments-lbtier.test.ts and test/interop/lbtier-decisions.test.ts.
 */
import { flowCmdFromArgs } from '../../../src/flows/fields';
import { FlowSet } from '../../../src/flows/flowset';
import { hashKeyAddresses } from '../../../src/packet/hashkey';
import { MaglevTable, writeFreshTable } from '../../../src/tables/maglev';
import { Pipeline, REASON_FRAGMENT_HIT, REASON_FRAGMENT_MISS, REASON_LB_TIER, REASON_NAMES, REASON_TARGET, type PipelineOptions } from '../../../src/datapath/pipeline';
import { Target, TargetRegistry } from '../../../src/tables/targets';
import { formatPacketTrace, packetTraceText, TRACE_FLOWS, TRACE_FRAG, TRACE_PER_PACKET } from '../../../src/services/trace';
import { icmpEcho, ipv4, ipv6, tcp, udp } from '../../helpers/packets';
import { fromHex, readJsonl } from '../../helpers/reference';

const VIP = '192.0.2.1';
const OWN = 101;
const OTHER = 102;

/** A tier table as `nfqlb init --ownfw=own` + `activate` would make it; the pipeline reads ownFwmark live. */
function tierTable(own: number, active: number[]): { table: MaglevTable; lbTier: { table: MaglevTable; readonly ownFwmark: number } } {
  const table = MaglevTable.create(31, 4, own, 'tier');
  table.activate(active);
  return {
    table,
    lbTier: {
      table,
      get ownFwmark() {
        return table.ownFwmark;
      },
    },
  };
}

function flowlb(lbTier: PipelineOptions['lbTier'], opts: Partial<PipelineOptions<MaglevTable>> = {}): { pipeline: Pipeline<MaglevTable>; targets: MaglevTable } {
  const targets = MaglevTable.create(97, 4, 0, 'targets');
  targets.activate([1, 2, 3]);
  const registry = new TargetRegistry<MaglevTable>({ open: (n) => (n === 'targets' ? targets : null), close: () => undefined });
  const flows = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
  expect(flows.applySet(flowCmdFromArgs({ name: 'udp', target: 'targets', protocols: 'udp', dsts: `${VIP}/32,2001:db8::1/128`, dports: '5001' }), registry)).toBe('OK');
  return { pipeline: new Pipeline<MaglevTable>(flows, { hashMode: 1, nolbFwmark: 8888, lbTier, ...opts }), targets };
}

const decide = (p: Pipeline<MaglevTable>, pkt: Uint8Array, now = 0): number => p.decide(pkt, 0, pkt.length, now);

/** Sources whose addresses (to VIP) the tier gives to `fw`. */
function sourcesOwnedBy(tier: MaglevTable, fw: number, count: number): string[] {
  const out: string[] = [];
  for (let i = 1; i < 255 && out.length < count; i++) {
    const src = `198.51.100.${i}`;
    const p = new Pipeline<MaglevTable>(null, {});
    p.decide(ipv4(src, VIP, 17, udp(1, 2)), 0, 28 + 4, 0);
    if (tier.fwmarkOf(hashKeyAddresses(p.info.key)) === fw) out.push(src);
  }
  return out;
}

const first = (src: string, id: number, sport = 40000): Uint8Array => ipv4(src, VIP, 17, udp(sport, 5001, Array(24).fill(0)), { id, moreFragments: true });
const later = (src: string, id: number, offset = 4, more = false): Uint8Array => ipv4(src, VIP, 17, Array(16).fill(7), { id, fragOffset: offset, moreFragments: more });

describe('LB tier: which fragments go to another LB', () => {
  it('first and later fragments owned by the other LB leave with its fwmark, before any flow or fragment state', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER]);
    const { pipeline } = flowlb(lbTier);
    const [src] = sourcesOwnedBy(table, OTHER, 1);
    expect(decide(pipeline, first(src, 7))).toBe(OTHER);
    expect(pipeline.last.reason).toBe(REASON_LB_TIER);
    expect(pipeline.last.flow).toBeNull();
    expect(decide(pipeline, later(src, 7))).toBe(OTHER);
    expect(pipeline.last.reason).toBe(REASON_LB_TIER);
    // A fragment whose first one never came here, and a datagram no flow matches: the tier decides all the same.
    expect(decide(pipeline, later(src, 999, 8))).toBe(OTHER);
    expect(decide(pipeline, ipv4(src, VIP, 17, udp(40000, 9999, Array(24).fill(0)), { id: 8, moreFragments: true }))).toBe(OTHER);
    expect(pipeline.reasonCounts[REASON_LB_TIER]).toBe(4);
    expect(pipeline.reasonCounts[REASON_FRAGMENT_HIT] + pipeline.reasonCounts[REASON_FRAGMENT_MISS]).toBe(0);
  });

  it('own fragments are load-balanced here: the first picks the target, the later ones follow it', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER]);
    const { pipeline } = flowlb(lbTier);
    for (const src of sourcesOwnedBy(table, OWN, 5)) {
      const fw = decide(pipeline, first(src, 11));
      expect(pipeline.last.reason).toBe(REASON_TARGET);
      expect([1, 2, 3]).toContain(fw);
      expect(decide(pipeline, later(src, 11, 4, true))).toBe(fw);
      expect(pipeline.last.reason).toBe(REASON_FRAGMENT_HIT);
      expect(decide(pipeline, later(src, 11, 6))).toBe(fw);
    }
    expect(pipeline.reasonCounts[REASON_LB_TIER]).toBe(0);
  });

  it('non-fragments never look at the tier', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER]);
    const { pipeline } = flowlb(lbTier);
    for (const src of sourcesOwnedBy(table, OTHER, 4)) {
      expect([1, 2, 3]).toContain(decide(pipeline, ipv4(src, VIP, 17, udp(40000, 5001))));
      expect(decide(pipeline, ipv4(src, VIP, 6, tcp(40000, 80)))).toBe(8888);
      expect(decide(pipeline, ipv4(src, VIP, 1, icmpEcho(5)))).toBe(8888);
    }
    expect(pipeline.reasonCounts[REASON_LB_TIER]).toBe(0);
  });

  it('a tier with no active LB, or one naming only this LB, leaves every fragment here', () => {
    for (const active of [[], [OWN]]) {
      const { table, lbTier } = tierTable(OWN, active);
      const { pipeline } = flowlb(lbTier);
      for (let i = 1; i < 60; i++) {
        const src = `198.51.100.${i}`;
        const fw = decide(pipeline, first(src, i));
        expect(decide(pipeline, later(src, i))).toBe(fw);
      }
      expect(pipeline.reasonCounts[REASON_LB_TIER]).toBe(0);
    }
  });

  it('ownFwmark and the tier are read live: `init --ownfw` again (in place) and activate swap the roles', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER]);
    const { pipeline } = flowlb(lbTier);
    const mine = sourcesOwnedBy(table, OWN, 3);
    const theirs = sourcesOwnedBy(table, OTHER, 3);
    for (const src of theirs) expect(decide(pipeline, later(src, 1))).toBe(OTHER);
    // What `nfqlb init --shm=tier --ownfw=102` does to a table of the same shape: all slots free, new own fwmark.
    writeFreshTable(table.buffer, table.M, table.N, OTHER);
    for (const src of [...mine, ...theirs]) {
      decide(pipeline, later(src, 2));
      expect(pipeline.last.reason).toBe(REASON_FRAGMENT_MISS);
    }
    table.activate([OWN, OTHER]);
    for (const src of mine) expect(decide(pipeline, later(src, 3))).toBe(OWN);
    for (const src of theirs) {
      decide(pipeline, later(src, 3));
      expect(pipeline.last.reason).toBe(REASON_FRAGMENT_MISS);
    }
  });

  it('a first fragment sent across the tier is not remembered here', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER]);
    const { pipeline } = flowlb(lbTier);
    const [src] = sourcesOwnedBy(table, OTHER, 1);
    expect(decide(pipeline, first(src, 21))).toBe(OTHER);
    writeFreshTable(table.buffer, table.M, table.N, OWN); // the tier emptied: later fragments stay here
    expect(decide(pipeline, later(src, 21))).toBe(-1);
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_MISS);
  });

  it('lb mode (--tshm): the same tier check first', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER]);
    const targets = MaglevTable.create(97, 4, 0, 'targets');
    targets.activate([1, 2, 3]);
    const pipeline = new Pipeline<MaglevTable>(null, { fixedTarget: new Target('targets', targets), lbTier });
    const [theirs] = sourcesOwnedBy(table, OTHER, 1);
    const [mine] = sourcesOwnedBy(table, OWN, 1);
    expect(decide(pipeline, first(theirs, 1))).toBe(OTHER);
    expect(decide(pipeline, later(theirs, 1))).toBe(OTHER);
    const fw = decide(pipeline, first(mine, 1));
    expect([1, 2, 3]).toContain(fw);
    expect(decide(pipeline, later(mine, 1))).toBe(fw);
    expect([1, 2, 3]).toContain(decide(pipeline, ipv4(theirs, VIP, 6, tcp(1, 2))));
    expect(Array.from(pipeline.reasonCounts)).toEqual(REASON_NAMES.map((_, i) => (i === REASON_LB_TIER ? 2 : i === REASON_TARGET ? 2 : i === REASON_FRAGMENT_HIT ? 1 : 0)));
  });

  it('IPv6 fragments too: the 32-bit ident is not part of the tier hash', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER]);
    const { pipeline } = flowlb(lbTier);
    const fragHdr = (ident: number, offset: number, more: boolean): number[] => [17, 0, offset >> 5, ((offset << 3) & 0xf8) | (more ? 1 : 0), ident >>> 24, (ident >>> 16) & 0xff, (ident >>> 8) & 0xff, ident & 0xff];
    let forwarded = 0;
    for (let i = 1; i < 40; i++) {
      const src = `2001:db8:1::${i.toString(16)}`;
      const f = ipv6(src, '2001:db8::1', 44, [...fragHdr(0x10000 + i, 0, true), ...udp(40000, 5001, Array(24).fill(0))]);
      const l = ipv6(src, '2001:db8::1', 44, [...fragHdr(0x10000 + i, 4, false), ...Array(16).fill(1)]);
      const fw = decide(pipeline, f);
      const owner = table.fwmarkOf(hashKeyAddresses(pipeline.info.key));
      if (owner === OTHER) {
        forwarded++;
        expect(fw).toBe(OTHER);
        expect(decide(pipeline, ipv6(src, '2001:db8::1', 44, [...fragHdr(0x999, 8, false), ...Array(8).fill(1)]))).toBe(OTHER);
      } else {
        expect(pipeline.last.reason).toBe(REASON_TARGET);
      }
      expect(decide(pipeline, l)).toBe(fw);
    }
    expect(forwarded).toBeGreaterThan(0);
  });
});

describe('LB tier: trace', () => {
  it('as nfqlb: one FRAG line, `Fragment to LB tier. fw=F`, and nothing else, even for a matching trace-flow', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER]);
    const { pipeline } = flowlb(lbTier);
    const traceFlows = new FlowSet<string>({ promiscuousPing: true });
    expect(traceFlows.define({ name: 'tf', target: 'tf', protocols: 'udp', dsts: `${VIP}/32` })).toBeNull();
    const [src] = sourcesOwnedBy(table, OTHER, 1);
    for (const pkt of [first(src, 5), later(src, 5)]) {
      expect(decide(pipeline, pkt)).toBe(OTHER);
      expect(formatPacketTrace(TRACE_PER_PACKET, traceFlows, pipeline.info, pkt, 0, pkt.length, pipeline.last)).toBe(`Fragment to LB tier. fw=${OTHER}\n`);
      expect(formatPacketTrace(TRACE_PER_PACKET & ~TRACE_FRAG, traceFlows, pipeline.info, pkt, 0, pkt.length, pipeline.last)).toBe('');
      expect(packetTraceText(
        { info: pipeline.info, pkt, off: 0, len: pkt.length, decision: pipeline.last, nolbFwmark: 8888, notargetsFwmark: -1 },
        { mask: TRACE_FLOWS, traceFlows: null, matchedFlow: 'tf' },
      )).toBe('');
    }
  });
});

interface HashkeyLine {
  i: number;
  hex: string;
  expect: string;
  rc: number;
  hashAddr?: number;
}

describe('LB tier: the address hash is nfqlb\'s (reference vectors)', () => {
  it('every valid fragment of k1/k2 goes where nfqlb\'s hashAddr over the tier says', () => {
    const { table, lbTier } = tierTable(OWN, [OWN, OTHER, 103]);
    let checked = 0;
    for (const file of ['hashkey/k1.jsonl', 'hashkey/k2.jsonl']) {
      for (const v of readJsonl<HashkeyLine>(file)) {
        if ((v.expect !== 'parity' && v.expect !== 'correct') || v.rc < 0 || (v.rc & 3) === 0 || v.hashAddr === undefined) continue;
        const { pipeline } = flowlb(lbTier);
        const pkt = fromHex(v.hex);
        const fw = decide(pipeline, pkt);
        const owner = table.fwmarkOf(v.hashAddr);
        if (owner !== OWN) {
          expect({ i: v.i, fw, reason: pipeline.last.reason }).toEqual({ i: v.i, fw: owner, reason: REASON_LB_TIER });
        } else {
          expect({ i: v.i, reason: pipeline.last.reason }).not.toEqual({ i: v.i, reason: REASON_LB_TIER });
        }
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(50);
  });
});
