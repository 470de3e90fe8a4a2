/**
 * --conntrack: the connection table on its own (keys verified, LRU eviction,
 * idle times per list, free-list reuse, a zero buffer is an empty table) and
 * in the pipeline (a known connection stays on its target when a new target
 * is activated; deactivating its target moves it at once; a flow that names
 * another table decides again; nothing changes for nfqlb's stateless mode).
 */
import { flowCmdFromArgs } from '../../../src/flows/fields';
import { FlowSet } from '../../../src/flows/flowset';
import {
  ConnTable, CT_ENTRIES, CT_ENTRY_BYTES, CT_EVICTED, CT_EXPIRED, CT_HITS, CT_INSERTS, CT_MISSES, CT_MOVED, CT_SAVED,
} from '../../../src/datapath/conntrack';
import { djb2Bits, IPPROTO_TCP, IPPROTO_UDP, KEY_LEN, KEY_PROTO } from '../../../src/packet/hashkey';
import { MaglevTable } from '../../../src/tables/maglev';
import { Pipeline, REASON_TARGET } from '../../../src/datapath/pipeline';
import { Target, TargetRegistry } from '../../../src/tables/targets';
import { ipv4, tcp } from '../../helpers/packets';

const TTL = { streamTtlMs: 1000, otherTtlMs: 100 };

function keyBytes(i: number, proto = IPPROTO_TCP): Uint8Array {
  const k = new Uint8Array(KEY_LEN);
  k[0] = i & 0xff;
  k[1] = (i >> 8) & 0xff;
  k[2] = (i >> 16) & 0xff;
  k[KEY_PROTO] = proto;
  return k;
}

/** The key as find() and insert() take it. */
function key(i: number, proto = IPPROTO_TCP): Int32Array {
  return ConnTable.keyWords(keyBytes(i, proto));
}

describe('ConnTable', () => {
  it('finds what it was given, verified against the whole key: a hash collision is not a hit', () => {
    const t = new ConnTable(8, TTL);
    const e = t.insert(key(1), 42, 101, 0, 7, 0);
    expect(t.find(key(1), 42, 10)).toBe(e);
    expect(t.find(key(2), 42, 10)).toBe(-1); // same hash, other key
    expect(t.find(key(1), 43, 10)).toBe(-1);
    expect([t.fwmarkOf(e), t.slotOf(e), t.serialOf(e)]).toEqual([101, 0, 7]);
    expect(t.stats[CT_ENTRIES]).toBe(1);
    expect(t.stats[CT_INSERTS]).toBe(1);
  });

  it('evicts the least recently used entry when full, and counts it', () => {
    const t = new ConnTable(4, TTL);
    for (let i = 0; i < 4; i++) t.insert(key(i), i * 7919, 100 + i, i, 1, i);
    t.touch(t.find(key(0), 0, 10), 10); // 0 is now the most recent: 1 is the oldest
    t.insert(key(9), 9 * 7919, 109, 1, 1, 11);
    expect(t.stats[CT_EVICTED]).toBe(1);
    expect(t.find(key(1), 7919, 12)).toBe(-1);
    for (const i of [0, 2, 3, 9]) expect(t.find(key(i), i * 7919, 12)).toBeGreaterThanOrEqual(0);
    expect(t.entries).toBe(4);
  });

  it('expires idle entries per list (streams vs others), on lookup and by sweep', () => {
    const t = new ConnTable(16, TTL);
    t.insert(key(1, IPPROTO_TCP), 1, 101, 0, 1, 0);
    t.insert(key(2, IPPROTO_UDP), 2, 102, 1, 1, 0);
    expect(t.find(key(2, IPPROTO_UDP), 2, 150)).toBe(-1); // UDP: 100 ms
    expect(t.find(key(1, IPPROTO_TCP), 1, 150)).toBeGreaterThanOrEqual(0); // TCP: 1000 ms
    expect(t.stats[CT_EXPIRED]).toBe(1);
    expect(t.sweep(500)).toBe(0);
    expect(t.sweep(1001)).toBe(1);
    expect(t.entries).toBe(0);
    expect(t.stats[CT_EXPIRED]).toBe(2);
  });

  it('reuses freed entries and never goes past its capacity, under churn', () => {
    const t = new ConnTable(100, TTL);
    let now = 0;
    for (let i = 0; i < 10000; i++) {
      now += 1;
      const k = key(i % 300);
      const h = (i % 300) * 2654435761;
      const e = t.find(k, h, now);
      if (e < 0) t.insert(k, h, 1, 0, 1, now);
      else t.touch(e, now);
      expect(t.entries).toBeLessThanOrEqual(100);
    }
    expect(t.entries).toBe(100);
    expect(t.stats[CT_EVICTED]).toBeGreaterThan(0);
  });

  it('keeps every key of a crowded bucket findable while entries in front, in the middle and at the end go', () => {
    const t = new ConnTable(8, TTL);
    const e = [0, 1, 2, 3, 4].map((i) => t.insert(key(i), 77, 100 + i, i, 0xfffffff0, i)); // one hash: one bucket
    t.remove(e[2]);
    t.remove(e[0]);
    t.remove(e[4]);
    expect([0, 1, 2, 3, 4].map((i) => t.find(key(i), 77, 10))).toEqual([-1, e[1], -1, e[3], -1]);
    expect(t.serialOf(e[1])).toBe(0xfffffff0 | 0);
    // Full, all in that bucket: the oldest goes first, wherever it is in the bucket.
    for (const i of [5, 6, 7, 8, 9, 10]) t.insert(key(i), 77, 100 + i, i, 1, i);
    t.touch(t.find(key(1), 77, 20), 20);
    t.insert(key(11), 77, 111, 11, 1, 21);
    expect(t.find(key(3), 77, 22)).toBe(-1);
    expect(t.stats[CT_EVICTED]).toBe(1);
    for (const i of [1, 5, 6, 7, 8, 9, 10, 11]) expect(t.find(key(i), 77, 22)).toBeGreaterThanOrEqual(0);
    expect(t.entries).toBe(8);
  });

  it('is one buffer: a zero-filled (shared) buffer is an empty table, and a second view reads what the first wrote', () => {
    const buffer = new SharedArrayBuffer(ConnTable.bytes(32));
    const writer = new ConnTable(32, TTL, buffer);
    const reader = new ConnTable(32, TTL, buffer);
    expect(reader.entries).toBe(0);
    writer.insert(key(5), 5, 105, 4, 3, 0);
    expect(reader.peek(keyBytes(5), 5, 50)).toEqual({ idleMs: 50, fwmark: 105, slot: 4, expired: false });
    expect(reader.entries).toBe(1);
    expect(CT_ENTRY_BYTES).toBeLessThan(100);
    expect(ConnTable.bytes(1000000) / 1000000).toBeLessThan(CT_ENTRY_BYTES + 1);
  });
});

describe('the pipeline with a connection table', () => {
  const VIP = '192.0.2.1';
  function setup(withTable: boolean) {
    const tables = new Map<string, MaglevTable>([
      ['web', MaglevTable.create(997, 8, 0, 'web')],
      ['other', MaglevTable.create(997, 8, 0, 'other')],
    ]);
    tables.get('web')!.activate([101, 102, 103]);
    tables.get('other')!.activate([201, 202]);
    const registry = new TargetRegistry<MaglevTable>({ open: (n) => tables.get(n) ?? null, close: () => undefined });
    const flows = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
    const set = (target: string): void => {
      expect(flows.applySet(flowCmdFromArgs({ name: 'web', target, protocols: 'tcp', dsts: `${VIP}/32`, dports: '80' }), registry)).toBe('OK');
    };
    set('web');
    const conntrack = withTable ? new ConnTable(10000, { streamTtlMs: 60000, otherTtlMs: 60000 }) : null;
    const pipeline = new Pipeline<MaglevTable>(flows, { hashMode: 0, conntrack });
    const decideAll = (now: number): number[] => {
      const out: number[] = [];
      for (let p = 0; p < 1000; p++) {
        const pkt = ipv4('198.51.100.7', VIP, 6, tcp(20000 + p, 80));
        out.push(pipeline.decide(pkt, 0, pkt.length, now));
        expect(pipeline.last.reason).toBe(REASON_TARGET);
      }
      return out;
    };
    return { tables, pipeline, conntrack, decideAll, set };
  }

  it('activating a target moves about a quarter of the connections without the table, none with it', () => {
    for (const withTable of [false, true]) {
      const { tables, decideAll, conntrack, pipeline } = setup(withTable);
      const before = decideAll(0);
      tables.get('web')!.activate([104]);
      const after = decideAll(10);
      const moved = before.filter((fw, i) => fw !== after[i]).length;
      if (withTable) {
        expect(moved).toBe(0);
        expect(conntrack!.stats[CT_MISSES]).toBe(1000);
        expect(conntrack!.stats[CT_HITS]).toBe(1000);
        expect(conntrack!.stats[CT_SAVED]).toBeGreaterThan(150); // what Maglev alone would have moved
        // New connections see the new target.
        const fresh = new Set<number>();
        for (let p = 0; p < 400; p++) {
          const pkt = ipv4('198.51.100.8', VIP, 6, tcp(30000 + p, 80));
          fresh.add(pipeline.decide(pkt, 0, pkt.length, 20));
        }
        expect(fresh.has(104)).toBe(true);
      } else {
        expect(moved).toBeGreaterThan(150);
        expect(moved).toBeLessThan(350);
      }
    }
  });

  it('deactivating a target moves its connections, and only those, at once', () => {
    const { tables, decideAll, conntrack } = setup(true);
    const before = decideAll(0);
    tables.get('web')!.activate([104]);
    decideAll(5);
    tables.get('web')!.deactivate([102]);
    const after = decideAll(10);
    for (let i = 0; i < before.length; i++) {
      if (before[i] === 102) expect(after[i]).not.toBe(102);
      else expect(after[i]).toBe(before[i]);
    }
    expect(conntrack!.stats[CT_MOVED]).toBe(before.filter((fw) => fw === 102).length);
  });

  it('a flow that names another table decides again (no entry is used across tables)', () => {
    const { decideAll, set, conntrack } = setup(true);
    decideAll(0);
    set('other');
    const after = decideAll(10);
    expect(new Set(after)).toEqual(new Set([201, 202]));
    expect(conntrack!.stats[CT_MOVED]).toBe(1000);
  });

  it('with --hash_mode=1 an SCTP association is still one entry per 5-tuple (not per port pair), and TCP shares Maglev\'s hash', () => {
    const table = MaglevTable.create(997, 8, 0, 'web');
    table.activate([101, 102, 103]);
    const registry = new TargetRegistry<MaglevTable>({ open: () => table, close: () => undefined });
    const flows = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
    expect(flows.applySet(flowCmdFromArgs({ name: 'web', target: 'web', protocols: 'tcp,sctp', dsts: `${VIP}/32` }), registry)).toBe('OK');
    const conntrack = new ConnTable(100, { streamTtlMs: 60000, otherTtlMs: 60000 });
    const pipeline = new Pipeline<MaglevTable>(flows, { hashMode: 1, conntrack });
    const sctp = [0x9c, 0x40, 0x0b, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0]; // 40000 -> 3000, vtag 1
    for (const src of ['198.51.100.7', '198.51.100.8', '198.51.100.7']) {
      const pkt = ipv4(src, VIP, 132, sctp);
      expect(pipeline.decide(pkt, 0, pkt.length, 0)).toBeGreaterThan(100);
    }
    // Stored under the whole key's hash, as `nfqlb conntrack` looks it up (not the ports' hash Maglev used).
    const sctpKey = pipeline.info.key;
    expect(conntrack.peek(sctpKey, djb2Bits(sctpKey, 0, KEY_LEN), 0)).toMatchObject({ idleMs: 0 });
    const pkt = ipv4('198.51.100.7', VIP, 6, tcp(20000, 80));
    pipeline.decide(pkt, 0, pkt.length, 0);
    pipeline.decide(pkt, 0, pkt.length, 1);
    expect([conntrack.stats[CT_INSERTS], conntrack.stats[CT_HITS]]).toEqual([3, 2]);
    const tcpKey = pipeline.info.key;
    expect(conntrack.peek(tcpKey, djb2Bits(tcpKey, 0, KEY_LEN), 1)).toMatchObject({ idleMs: 0 });
  });
});
