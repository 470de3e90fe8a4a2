/**
 * The two table stores behave alike, so the table commands serve both the CLI
 * (/dev/shm) and `nfqlb replay --config` (memory): create, open by name (the
 * same table), missing tables as NFQLB_ERR_SHM_MISSING, delete. The shm store
 * uses objects named nfqlbts-<pid>-<random>-*, removed afterwards.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { NfqlbError } from '../../../src/base/errors';
import { MemoryTableStore, shmTableStore, type TableStore } from '../../../src/tables/tablestore';

const prefix = `nfqlbts-${process.pid}-${crypto.randomBytes(3).toString('hex')}-store-`;
afterAll(() => {
  for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(prefix)) fs.rmSync(`/dev/shm/${f}`, { force: true });
});

function missing(store: TableStore, name: string): NfqlbError {
  try {
    store.open(name, false);
  } catch (err) {
    return err as NfqlbError;
  }
  throw new Error(`${name} opened`);
}

describe.each([
  ['memory', () => new MemoryTableStore()],
  ['/dev/shm', () => shmTableStore],
])('%s table store', (_where, makeStore) => {
  let n = 0;
  const name = (): string => `${prefix}${_where === 'memory' ? 'm' : 's'}${++n}`;

  it('opens by name the table create made, with what was activated in it', () => {
    const store = makeStore();
    const t = name();
    const created = store.create(t, 13, 4, 7);
    created.activateIndex(2, 102);
    const opened = store.open(t, false);
    expect([opened.M, opened.N, opened.ownFwmark]).toEqual([13, 4, 7]);
    expect(Array.from(opened.active)).toEqual([-1, -1, 102, -1]);
    expect(opened.fwmarkOf(0)).toBe(102); // the only active slot gets every hash
    store.close(opened);
    store.close(created);
    expect(store.delete(t)).toBe(true);
  });

  it('a table that does not exist: NFQLB_ERR_SHM_MISSING naming it', () => {
    const store = makeStore();
    const t = name();
    const e = missing(store, t);
    expect(e).toBeInstanceOf(NfqlbError);
    expect(e.code).toBe('NFQLB_ERR_SHM_MISSING');
    expect(e.message).toContain(`'${t}'`);
  });

  it('delete says whether there was a table, and the name is gone afterwards', () => {
    const store = makeStore();
    const t = name();
    store.close(store.create(t, 7, 2, 0));
    expect(store.delete(t)).toBe(true);
    expect(store.delete(t)).toBe(false);
    expect(missing(store, t).code).toBe('NFQLB_ERR_SHM_MISSING');
  });

  it('create replaces a table of the same name', () => {
    const store = makeStore();
    const t = name();
    store.close(store.create(t, 7, 2, 0));
    store.close(store.create(t, 11, 3, 5));
    const opened = store.open(t, false);
    expect([opened.M, opened.N, opened.ownFwmark]).toEqual([11, 3, 5]);
    store.close(opened);
    store.delete(t);
  });
});

describe('memory table store', () => {
  it('keeps tables apart per store (a replay never sees another replay\'s tables)', () => {
    const a = new MemoryTableStore();
    const b = new MemoryTableStore();
    a.create(`${prefix}apart`, 7, 2, 0);
    expect(missing(b, `${prefix}apart`).code).toBe('NFQLB_ERR_SHM_MISSING');
  });

  it('touches nothing in /dev/shm', () => {
    const store = new MemoryTableStore();
    store.create(`${prefix}private`, 7, 2, 0);
    expect(fs.existsSync(`/dev/shm/${prefix}private`)).toBe(false);
  });
});
