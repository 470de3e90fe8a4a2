/** The decision pipeline on hand-made packets: the flowlb order, fragments, lb mode, live table changes. */
import { flowCmdFromArgs } from '../../../src/flows/fields';
import { FlowSet } from '../../../src/flows/flowset';
import { MaglevTable } from '../../../src/tables/maglev';
import {
  Pipeline, type PipelineOptions, REASON_FRAGMENT_HIT, REASON_FRAGMENT_MISS, REASON_FRAGMENT_TABLE_FULL, REASON_INVALID,
  REASON_NO_FLOW, REASON_NO_TARGET, REASON_TARGET, REASON_NAMES,
} from '../../../src/datapath/pipeline';
import { Target, TargetRegistry } from '../../../src/tables/targets';
import { icmpEcho, ipv4, ipv6, tcp, udp } from '../../helpers/packets';

const VIP = '192.0.2.1';

function setup(opts: Partial<PipelineOptions<MaglevTable>> = {}) {
  const tables = new Map<string, MaglevTable>([
    ['web', MaglevTable.create(997, 8, 0, 'web')],
    ['empty', MaglevTable.create(97, 4, 0, 'empty')],
  ]);
  tables.get('web')!.activate([101, 102, 103, 104]);
  const registry = new TargetRegistry<MaglevTable>({ open: (n) => tables.get(n) ?? null, close: () => undefined });
  const flows = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
  const set = (args: Record<string, string>): void => {
    expect(flows.applySet(flowCmdFromArgs(args), registry)).toBe('OK');
  };
  set({ name: 'web', target: 'web', prio: '10', protocols: 'tcp,udp', dsts: `${VIP}/32,2001:db8::1/128`, dports: '80' });
  set({ name: 'dead', target: 'empty', prio: '5', protocols: 'tcp', dsts: `${VIP}/32`, dports: '81' });
  const pipeline = new Pipeline<MaglevTable>(flows, { hashMode: 0, nolbFwmark: 8888, notargetsFwmark: 7777, ...opts });
  return { tables, flows, pipeline, registry };
}

function decide(p: Pipeline<MaglevTable>, pkt: Uint8Array, now = 0): number {
  return p.decide(pkt, 0, pkt.length, now);
}

describe('pipeline: the flowlb order', () => {
  it('target, no flow, no target, invalid', () => {
    const { pipeline } = setup();
    const fw = decide(pipeline, ipv4('198.51.100.7', VIP, 6, tcp(33000, 80)));
    expect([101, 102, 103, 104]).toContain(fw);
    expect(pipeline.last.reason).toBe(REASON_TARGET);
    expect(pipeline.last.flow?.name).toBe('web');
    expect(pipeline.last.target?.name).toBe('web');
    expect(pipeline.last.hash).toBeGreaterThanOrEqual(0);

    expect(decide(pipeline, ipv4('198.51.100.7', VIP, 6, tcp(33000, 22)))).toBe(8888);
    expect(pipeline.last.reason).toBe(REASON_NO_FLOW);
    expect(pipeline.last.flow).toBeNull();
    expect(pipeline.last.hash).toBe(-1);

    expect(decide(pipeline, ipv4('198.51.100.7', VIP, 6, tcp(33000, 81)))).toBe(7777);
    expect(pipeline.last.reason).toBe(REASON_NO_TARGET);
    expect(pipeline.last.target?.name).toBe('empty');

    expect(decide(pipeline, ipv4('198.51.100.7', VIP, 6, tcp(33000, 80)).subarray(0, 22))).toBe(-1);
    expect(pipeline.last.reason).toBe(REASON_INVALID);
    expect(Array.from(pipeline.reasonCounts)).toEqual(REASON_NAMES.map((_, i) => ([0, 1, 2, 3].includes(i) ? 1 : 0)));
  });

  it('the same 5-tuple always gets the same target; IPv6 works', () => {
    const { pipeline } = setup();
    const a = decide(pipeline, ipv6('2001:db8:100::7', '2001:db8::1', 17, udp(4444, 80)));
    expect(a).toBeGreaterThanOrEqual(101);
    for (let i = 0; i < 5; i++) expect(decide(pipeline, ipv6('2001:db8:100::7', '2001:db8::1', 17, udp(4444, 80)))).toBe(a);
  });

  it('spreads source ports over all targets', () => {
    const { pipeline } = setup();
    const seen = new Map<number, number>();
    for (let port = 1024; port < 3024; port++) {
      const fw = decide(pipeline, ipv4('198.51.100.7', VIP, 6, tcp(port, 80)));
      seen.set(fw, (seen.get(fw) ?? 0) + 1);
    }
    expect([...seen.keys()].sort()).toEqual([101, 102, 103, 104]);
    for (const n of seen.values()) expect(n).toBeGreaterThan(350);
  });

  it('sees activate/deactivate on the next packet and never loses the target while others remain', () => {
    const { pipeline, tables } = setup();
    const web = tables.get('web')!;
    const pkts = Array.from({ length: 400 }, (_, i) => ipv4('198.51.100.9', VIP, 6, tcp(20000 + i, 80)));
    const before = pkts.map((p) => decide(pipeline, p));
    web.deactivate([102]);
    const after = pkts.map((p) => decide(pipeline, p));
    expect(after).not.toContain(102);
    expect(after).not.toContain(7777);
    // Maglev moves the packets that went to 102 and very few others.
    const stayed = before.filter((fw, i) => fw !== 102 && after[i] === fw).length;
    expect(stayed).toBeGreaterThanOrEqual(0.95 * before.filter((fw) => fw !== 102).length);
    web.activate([102]);
    expect(pkts.map((p) => decide(pipeline, p))).toEqual(before);
  });

  it('promiscuous ping: an echo request matches on addresses only', () => {
    const { pipeline, flows } = setup();
    const ping = ipv4('198.51.100.7', VIP, 1, icmpEcho(0x1234));
    expect(decide(pipeline, ping)).toBe(8888);
    flows.promiscuousPing = true;
    expect([101, 102, 103, 104]).toContain(decide(pipeline, ping));
    expect(pipeline.last.flow?.name).toBe('web');
  });
});

describe('pipeline: fragments', () => {
  const first = (id: number, sport = 5000): Uint8Array => ipv4('198.51.100.7', VIP, 17, udp(sport, 80, Array(24).fill(0)), { id, moreFragments: true });
  const later = (id: number): Uint8Array => ipv4('198.51.100.7', VIP, 17, Array(16).fill(0), { id, fragOffset: 4 });

  it('a later fragment follows its first fragment', () => {
    const { pipeline } = setup();
    const fw = decide(pipeline, first(77), 1000);
    expect(pipeline.last.reason).toBe(REASON_TARGET);
    expect(decide(pipeline, later(77), 1010)).toBe(fw);
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_HIT);
    expect(pipeline.last.flow).toBeNull();
    expect(pipeline.last.hash).toBe(-1);
  });

  it('a later fragment without a first one, or after the ttl, is dropped', () => {
    const { pipeline } = setup({ fragmentTtlMs: 200 });
    expect(decide(pipeline, later(5), 0)).toBe(-1);
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_MISS);
    decide(pipeline, first(6), 1000);
    expect(decide(pipeline, later(6), 1199)).toBeGreaterThanOrEqual(101);
    // The hit at 1199 renewed the entry (nfqlb's ttl counts from the last use).
    expect(decide(pipeline, later(6), 1399)).toBeGreaterThanOrEqual(101);
    expect(decide(pipeline, later(6), 1600)).toBe(-1);
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_MISS);
  });

  it('a full fragment table refuses first fragments; expired entries are reused', () => {
    const { pipeline } = setup({ fragmentCapacity: 4, fragmentTtlMs: 100 });
    for (let id = 1; id <= 4; id++) expect(decide(pipeline, first(id), 0)).toBeGreaterThanOrEqual(101);
    expect(decide(pipeline, first(5), 10)).toBe(-1);
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_TABLE_FULL);
    expect(decide(pipeline, first(5), 200)).toBeGreaterThanOrEqual(101);
    expect(decide(pipeline, later(5), 210)).toBeGreaterThanOrEqual(101);
    expect(decide(pipeline, later(1), 210)).toBe(-1);
  });

  it('IPv6 fragments pair on the 32-bit ident', () => {
    const { pipeline } = setup();
    const fragHdr = (nh: number, offset: number, more: boolean, ident: number): number[] => {
      const fo = (offset << 3) | (more ? 1 : 0);
      return [nh, 0, fo >> 8, fo & 0xff, (ident >>> 24) & 0xff, (ident >> 16) & 0xff, (ident >> 8) & 0xff, ident & 0xff];
    };
    const ident = 0xdeadbeef;
    const f1 = ipv6('2001:db8:100::7', '2001:db8::1', 44, [...fragHdr(17, 0, true, ident), ...udp(6000, 80, Array(24).fill(0))]);
    const f2 = ipv6('2001:db8:100::7', '2001:db8::1', 44, [...fragHdr(17, 4, false, ident), ...Array(16).fill(0)]);
    const f3 = ipv6('2001:db8:100::7', '2001:db8::1', 44, [...fragHdr(17, 4, false, ident ^ 1), ...Array(16).fill(0)]);
    const fw = decide(pipeline, f1);
    expect(fw).toBeGreaterThanOrEqual(101);
    expect(decide(pipeline, f2)).toBe(fw);
    expect(decide(pipeline, f3)).toBe(-1);
  });
});

describe('pipeline: lb mode (one table, no flows)', () => {
  it('marks everything from the fixed table; no targets gives notargets_fwmark', () => {
    const table = MaglevTable.create(97, 4, 0, 'lb');
    const target = new Target('lb', table);
    const p = new Pipeline<MaglevTable>(null, { fixedTarget: target, notargetsFwmark: 5 });
    const pkt = ipv4('198.51.100.7', VIP, 6, tcp(1234, 9999));
    expect(decide(p, pkt)).toBe(5);
    expect(p.last.reason).toBe(REASON_NO_TARGET);
    table.activate([42]);
    expect(decide(p, pkt)).toBe(42);
    expect(p.last.target).toBe(target);
    expect(p.last.flow).toBeNull();
  });
});
