/**
 * A packet thread's state without a Worker: lb's one table and the tier
 * from /dev/shm, each accepted change applied (and what went differently
 * reported), a generation acked, counts published per target, a re-created
 * table swapped in by the check, everything closed at the end.
 */
import { createTable, deleteTable, openTable } from '../../../src/tables/tablefile';
import { PacketThread } from '../../../src/daemon/packetthread';
import { ThreadCounters } from '../../../src/daemon/threadcounters';
import { TRACE_STATE_WORDS } from '../../../src/daemon/tracechannel';
import type { PacketThreadData } from '../../../src/daemon/threadmessages';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-pth`;
const LB = `${PREFIX}-lb`;
const TIER = `${PREFIX}-tier`;
const FLOWT = `${PREFIX}-f`;

function data(over: Partial<PacketThreadData>): PacketThreadData {
  return {
    kind: 'nfqlb-packet-thread', index: 0, mode: 'flowlb', queues: [7], serve: [0], qlength: 1024, mtu: 1500, batchSize: 64, failOpen: false,
    promiscuousPing: false, pipeline: {}, tunFd: -1, tableCheckMs: 0, counters: new ThreadCounters(1).buffer,
    traceState: new SharedArrayBuffer(4 * TRACE_STATE_WORDS), wake: new SharedArrayBuffer(4), traceShm: null, initialOps: [], conntrack: null, ...over,
  };
}

beforeAll(() => {
  createTable(LB, 97, 4, 0);
  openTable(LB, true).activate([31]);
  createTable(TIER, 97, 4, 5);
  createTable(FLOWT, 97, 4, 0);
});
afterAll(() => {
  for (const n of [LB, TIER, FLOWT]) deleteTable(n);
});

describe('PacketThread', () => {
  it('lb: serves its one table and the tier, publishes under the table\'s name, swaps a re-created table in', () => {
    const t = new PacketThread(data({ mode: 'lb', tshm: LB, lbshm: TIER }), { postMessage: () => {} });
    try {
      expect(t.tables.fixed!.name).toBe(LB);
      expect(t.tables.tier!.ownFwmark).toBe(5);
      expect(t.publish(1).targets).toEqual([{ name: LB, fwmarks: [], counts: [], noTarget: 0 }]);
      deleteTable(LB);
      createTable(LB, 101, 4, 0);
      t.refreshTables();
      expect(t.tables.fixed!.table.M).toBe(101);
    } finally {
      t.close();
    }
  });

  it('applies each kind of change the main thread accepted, and says what went differently here', () => {
    const t = new PacketThread(data({ initialOps: [{ op: 'set', cmd: { name: 'f', target: FLOWT } }] }), { postMessage: () => {} });
    try {
      expect(t.flows.flows.map((f) => f.name)).toEqual(['f']);
      expect(t.apply({ op: 'trace-set', cmd: { name: 'tf', protocols: 'udp' } })).toBe('');
      expect(t.traceFlows.flows.map((f) => f.name)).toEqual(['tf']);
      expect(t.apply({ op: 'trace-delete', name: 'tf' })).toBe('');
      expect(t.apply({ op: 'delete', name: 'f' })).toBe('');
      expect(t.flows.flows).toEqual([]);
      expect(t.targets.list()).toEqual([]);
      expect(t.apply({ op: 'set', cmd: { name: 'g', target: `${PREFIX}-none` } })).toBe("FAIL: Couldn't create load-balancer");
      expect(t.apply({ op: 'bogus' } as never)).toBe('unknown change');
      expect(t.applyGeneration(4, [{ op: 'set', cmd: { name: 'h', target: FLOWT } }])).toEqual({ t: 'ack', gen: 4, failures: [] });
      expect(t.publish(2)).toMatchObject({ t: 'published', id: 2, gen: 4 });
    } finally {
      t.close();
    }
  });

  it('refuses to start without lb\'s table', () => {
    expect(() => new PacketThread(data({ mode: 'lb', tshm: `${PREFIX}-none` }), { postMessage: () => {} })).toThrow(expect.objectContaining({ code: 'NFQLB_ERR_SHM_MISSING' }));
  });
});
