/**
 * --conntrack's tables as the daemon holds them: one per deciding thread
 * (shared memory with threads), the connection of a `conntrack` request keyed
 * as classify() keys it and found in whichever table holds it, the counters
 * summed.
 */
import { performance } from 'node:perf_hooks';
import { djb2Bits, IPPROTO_TCP, KEY_LEN, tupleKey } from '../../../src/packet/hashkey';
import { inetPton6 } from '../../../src/base/inet';
import { ConnTables, connectionKey } from '../../../src/daemon/conntables';
import { ConnTable } from '../../../src/datapath/conntrack';

const CT = { capacity: 100, streamTtlMs: 60_000, otherTtlMs: 10_000 };
const CONN = { protocols: 'tcp', srcs: '2001:db8::7', sports: '40000', dsts: '2001:db8::1', dports: '80' };

function key(): Uint8Array {
  const src = new Uint8Array(16);
  const dst = new Uint8Array(16);
  inetPton6('2001:db8::7', src);
  inetPton6('2001:db8::1', dst);
  return tupleKey(src, 40000, dst, 80, IPPROTO_TCP);
}

describe('connectionKey', () => {
  it('keys a connection as classify() does, and refuses a missing or wrong field', () => {
    expect(connectionKey(CONN)).toEqual(key());
    expect(connectionKey({ ...CONN, protocols: 'icmp' })).toBeNull();
    expect(connectionKey({ ...CONN, srcs: 'nohost' })).toBeNull();
    expect(connectionKey({ ...CONN, dports: '65536' })).toBeNull();
    expect(connectionKey({ ...CONN, sports: '1.5' })).toBeNull();
    expect(connectionKey({ ...CONN, dsts: undefined })).toBeNull();
  });
});

describe('ConnTables', () => {
  it('is empty without --conntrack', () => {
    const none = new ConnTables(undefined, 2, true);
    expect(none.tables).toEqual([]);
    expect(none.reading()).toBeNull();
    expect(none.startFields()).toBeUndefined();
    expect(new ConnTables({ ...CT, capacity: 0 }, 1, false).tables).toEqual([]);
  });

  it('splits the entries over the deciding threads, over shared memory when threaded', () => {
    const shared = new ConnTables(CT, 2, true);
    expect(shared.tables.map((t) => t.buffer instanceof SharedArrayBuffer)).toEqual([true, true]);
    expect(shared.capacity()).toBe(100);
    expect(shared.startFields()).toEqual({ entries: 100, tables: 2, bytes: shared.tables[0].buffer.byteLength * 2 });
    expect(new ConnTables(CT, 1, false).tables[0].buffer instanceof SharedArrayBuffer).toBe(false);
  });

  it('answers `conntrack` with the summed counters and the entry of a connection in whichever table holds it', () => {
    const ct = new ConnTables(CT, 2, true);
    const t = ct.tables[1];
    t.clockOrigin[0] = performance.timeOrigin;
    const k = key();
    t.insert(ConnTable.keyWords(k), djb2Bits(k, 0, KEY_LEN), 1234, 3, 1, performance.now());
    const whole = ct.reply({ action: 'conntrack' });
    expect('json' in whole && (JSON.parse(whole.json) as Record<string, unknown>)).toMatchObject({ capacity: 100, tables: 2 });
    const found = ct.reply({ action: 'conntrack', ...CONN });
    expect('json' in found && (JSON.parse(found.json) as { connection: unknown }).connection).toMatchObject({ found: true, table: 1, fwmark: 1234, slot: 3 });
    const other = ct.reply({ action: 'conntrack', ...CONN, sports: '40001' });
    expect('json' in other && (JSON.parse(other.json) as { connection: unknown }).connection).toEqual({ found: false });
    expect(ct.reply({ action: 'conntrack', protocols: 'tcp' })).toEqual({ text: 'FAIL: give the connection as protocols (tcp|udp|sctp), srcs, sports, dsts, dports' });
  });
});
