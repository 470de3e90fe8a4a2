/**
 * The daemon's tables: opened from /dev/shm with trace lines and a debug line
 * (or silently, in a packet thread), a name with something planted under it
 * counted as a fault rather than a missing table, lb's table and the tier
 * open from the start, a re-created table swapped in by the check, faults
 * counted, repaired SIGBUS faults taken once, and lines when a table loses
 * and regains its active targets.
 */
import * as fs from 'node:fs';
import { KeyCounter } from '../../../src/base/counters';
import { createLogger } from '../../../src/base/log';
import { SHM_DIR, shmFaultCounter, shmObjectName } from '../../../src/addon/shm';
import { createTable, deleteTable, openTable } from '../../../src/tables/tablefile';
import type { TableFault } from '../../../src/tables/servedtable';
import { BusFaultWatch, DaemonTables, shmTables, TableChecks, type TableEvents } from '../../../src/daemon/tables';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-tbl`;
const A = `${PREFIX}-a`;
const B = `${PREFIX}-b`;
const PLANTED = `${PREFIX}-dir`;
const MISSING = `${PREFIX}-none`;

let text = '';
const log = createLogger(7, { write: (s: string) => void (text += s) } as unknown as Parameters<typeof createLogger>[1]);
const lines = (): Record<string, unknown>[] => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

function recorder(): { events: TableEvents; traced: string[]; faults: [string, TableFault][]; failed: string[] } {
  const traced: string[] = [];
  const faults: [string, TableFault][] = [];
  const failed: string[] = [];
  return {
    traced, faults, failed,
    events: { log, trace: (_bit, t) => traced.push(t), onFault: (name, fault) => faults.push([name, fault]), onOpenFailed: (name) => failed.push(name) },
  };
}

beforeAll(() => {
  createTable(A, 97, 4, 0);
  createTable(B, 97, 4, 0);
  fs.mkdirSync(`${SHM_DIR}/${shmObjectName(PLANTED)}`);
});
afterAll(() => {
  deleteTable(A);
  deleteTable(B);
  fs.rmSync(`${SHM_DIR}/${shmObjectName(PLANTED)}`, { recursive: true, force: true });
});
beforeEach(() => (text = ''));

describe('shmTables', () => {
  it('opens and closes a table with nfqlb\'s trace lines and a debug line each', () => {
    const r = recorder();
    const source = shmTables(r.events);
    const table = source.open(A)!;
    expect(table.name).toBe(A);
    source.close(A, table);
    expect(r.traced).toEqual([`Creating LB; ${A}\n`, `Delete load-balancer; ${A}\n`]);
    expect(lines().map((l) => [l.msg, l.target])).toEqual([['table opened', A], ['table released', A]]);
  });

  it('reports a missing table as failed and a planted directory as a not_file fault', () => {
    const r = recorder();
    const source = shmTables(r.events);
    expect(source.open(MISSING)).toBeNull();
    expect(source.open(PLANTED)).toBeNull();
    expect(r.failed).toEqual([MISSING]);
    expect(r.faults).toEqual([[PLANTED, 'not_file']]);
    expect(r.traced).toEqual([`Map shm failed; ${MISSING}\n`, `Map shm failed; ${PLANTED}\n`]);
  });

  it('without events (a packet thread) opens the same and says nothing', () => {
    const source = shmTables(null);
    const table = source.open(A)!;
    expect(table.M).toBe(97);
    source.close(A, table);
    expect(source.open(PLANTED)).toBeNull();
    expect(text).toBe('');
  });
});

describe('DaemonTables', () => {
  it('lb: its one table is open from the start, served under its text name; flowlb serves the flow targets by their bytes', () => {
    const lb = new DaemonTables({ mode: 'lb', tshm: A, lbshm: B }, null);
    try {
      expect(lb.served().map((t) => lb.nameOf(t))).toEqual([A]);
      expect(lb.fixed!.refs).toBe(1);
      expect(lb.tier!.table.name).toBe(B);
      expect(lb.tier!.ownFwmark).toBe(0);
    } finally {
      lb.closeFixed();
    }
    const flowlb = new DaemonTables({ mode: 'flowlb' }, null);
    expect(flowlb.fixed).toBeNull();
    expect(flowlb.served()).toEqual([]);
    expect(flowlb.targets.acquire(A)).not.toBeNull();
    expect(flowlb.served().map((t) => flowlb.nameOf(t))).toEqual([A]);
    flowlb.targets.release(flowlb.served()[0]);
  });

  it('refuses to start without lb\'s table (nothing left open)', () => {
    expect(() => new DaemonTables({ mode: 'lb', tshm: MISSING }, null)).toThrow(expect.objectContaining({ code: 'NFQLB_ERR_SHM_MISSING' }));
    expect(() => new DaemonTables({ mode: 'lb', tshm: A, lbshm: MISSING }, null)).toThrow(expect.objectContaining({ code: 'NFQLB_ERR_SHM_MISSING' }));
  });

  it('refresh() swaps in a re-created table and names it', () => {
    const name = `${PREFIX}-re`;
    createTable(name, 97, 4, 0);
    const tables = new DaemonTables({ mode: 'lb', tshm: name }, null);
    try {
      expect(tables.refresh()).toEqual([]);
      deleteTable(name);
      createTable(name, 101, 4, 0);
      expect(tables.refresh()).toEqual([name]);
      expect(tables.fixed!.table.M).toBe(101);
    } finally {
      tables.closeFixed();
      deleteTable(name);
    }
  });
});

describe('BusFaultWatch', () => {
  it('takes the faults the addon repaired since the last take, once', () => {
    const count = shmFaultCounter();
    const watch = new BusFaultWatch();
    expect(watch.pending).toBe(false);
    count[0] += 3;
    try {
      expect(watch.pending).toBe(true);
      expect(watch.take()).toBe(3);
      expect(watch.pending).toBe(false);
      expect(watch.take()).toBe(0);
    } finally {
      count[0] -= 3;
    }
  });
});

describe('TableChecks', () => {
  it('counts and logs faults; a not_file fault is also a refused open', () => {
    const refused = new KeyCounter();
    const checks = new TableChecks(log, refused);
    checks.noteFault('x', 'not_file', 'a directory');
    checks.noteFault('y', 'recreated', 'new shape');
    expect(checks.faults.entries()).toEqual([{ action: 'x', result: 'not_file', count: 1 }, { action: 'y', result: 'recreated', count: 1 }]);
    expect(refused.entries()).toEqual([{ key: 'table', count: 1 }]);
    expect(lines().map((l) => [l.level, l.msg, l.target])).toEqual([[40, 'table fault', 'x'], [30, 'table re-created; reopened', 'y']]);
  });

  it('says when a table loses its last active target and when it gets one back; a new empty table is no loss', () => {
    const name = `${PREFIX}-act`;
    createTable(name, 97, 4, 0);
    const tables = new DaemonTables({ mode: 'lb', tshm: name }, null);
    const writer = openTable(name, true);
    try {
      const checks = new TableChecks(log, new KeyCounter());
      checks.checkActiveTargets(tables);
      expect(lines().filter((l) => l.level as number >= 30)).toEqual([]);
      writer.activate([5]);
      checks.checkActiveTargets(tables);
      writer.deactivate([5]);
      checks.checkActiveTargets(tables);
      writer.activate([6]);
      checks.checkActiveTargets(tables);
      expect(lines().filter((l) => l.level as number >= 30).map((l) => [l.msg, l.target, l.now])).toEqual([
        ['table has no active target: packets of its flows are dropped (no_target)', name, 'no_target'],
        ['table has active targets again', name, 'active'],
      ]);
    } finally {
      tables.closeFixed();
      deleteTable(name);
    }
  });
});
