/**
 * Tables and trace settings in real POSIX shared memory (needs the addon).
 * Every object is named nfqlbts-test-<pid>-* and removed afterwards.
 */
import * as fs from 'node:fs';
import { NfqlbError } from '../../src/base/errors';
import { MaglevTable } from '../../src/tables/maglev';
import { DEFAULT_LOG_LEVEL, closeTraceShm, openOrCreateTraceShm, openTraceShm } from '../../src/addon/shm';
import { closeTable, createTable, deleteTable, openTable, tableIsStale } from '../../src/tables/tablefile';
import { referencePath } from '../helpers/reference';

const PREFIX = `nfqlbts-test-${process.pid}-`;
const shmName = (n: string): string => `${PREFIX}${n}`;
const devShm = (n: string): string => `/dev/shm/${shmName(n)}`;

const open: { close(): void }[] = [];
function track<T extends MaglevTable>(t: T): T {
  open.push({ close: () => closeTable(t) });
  return t;
}

function removeAll(): void {
  for (const o of open.splice(0)) o.close();
  for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(PREFIX)) fs.rmSync(`/dev/shm/${f}`, { force: true });
}

afterEach(removeAll);
afterAll(removeAll);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof NfqlbError) return err.code;
    throw err;
  }
  return undefined;
}

describe('tables in /dev/shm', () => {
  it('createTable writes nfqlb bytes, mode 0600; activate through the mapping reaches the file', () => {
    const t = track(createTable(shmName('f'), 31, 3, 0));
    expect(fs.statSync(devShm('f')).mode & 0o777).toBe(0o600);
    t.activateIndex(0, 11);
    t.activateIndex(1, 12);
    t.activateIndex(2, 13);
    t.deactivateIndex(1);
    expect(fs.readFileSync(devShm('f')).equals(fs.readFileSync(referencePath('shm', 'tshm-f.bin')))).toBe(true);
  });

  it('a reader in the same or another mapping sees changes live', () => {
    const writer = track(createTable(shmName('live'), 97, 10, 0));
    const reader = track(openTable(shmName('live'), false));
    expect(reader.fwmarkOf(5)).toBe(-1);
    writer.activate([42]);
    expect(reader.fwmarkOf(5)).toBe(42);
    writer.activate([43]);
    const marks = new Set<number>();
    for (let h = 0; h < 97; h++) marks.add(reader.fwmarkOf(h));
    expect([...marks].sort()).toEqual([42, 43]);
    writer.deactivate([42, 43]);
    expect(reader.fwmarkOf(5)).toBe(-1);
  });

  it('a read-only mapping refuses writes', () => {
    track(createTable(shmName('ro'), 31, 3, 0));
    const ro = track(openTable(shmName('ro'), false));
    expect(codeOf(() => ro.activate([1]))).toBe('NFQLB_ERR_READONLY');
    expect(codeOf(() => ro.populate())).toBe('NFQLB_ERR_READONLY');
    expect(ro.readOnly).toBe(true);
  });

  it('init over a table of the same shape rewrites it in place (a running reader follows)', () => {
    const first = track(createTable(shmName('same'), 97, 10, 0));
    first.activate([1, 2]);
    const ino = fs.statSync(devShm('same')).ino;
    const reader = track(openTable(shmName('same')));
    const again = track(createTable(shmName('same'), 97, 10, 5));
    expect(fs.statSync(devShm('same')).ino).toBe(ino);
    expect(reader.ownFwmark).toBe(5);
    expect(reader.fwmarkOf(3)).toBe(-1);
    expect(Array.from(again.active).every((v) => v === -1)).toBe(true);
    const ref = Buffer.from(MaglevTable.create(97, 10, 5).buffer);
    expect(fs.readFileSync(devShm('same')).equals(ref)).toBe(true);
  });

  it('init with another shape makes a new object; an old mapping stays readable', () => {
    const old = track(createTable(shmName('shape'), 997, 32, 0));
    old.activate([7]);
    const reader = track(openTable(shmName('shape')));
    track(createTable(shmName('shape'), 31, 3, 0));
    expect(fs.statSync(devShm('shape')).size).toBe(536);
    // The old mapping still works (no SIGBUS from a shrunk file).
    expect(reader.fwmarkOf(123)).toBe(7);
    expect(track(openTable(shmName('shape'))).M).toBe(31);
  });

  it('tableIsStale: same-shape init keeps a reader current; delete or reshape makes it stale', () => {
    track(createTable(shmName('stale'), 31, 3, 0));
    const reader = track(openTable(shmName('stale')));
    expect(tableIsStale(reader)).toBe(false);
    track(createTable(shmName('stale'), 31, 3, 0));
    expect(tableIsStale(reader)).toBe(false);
    track(createTable(shmName('stale'), 97, 3, 0));
    expect(tableIsStale(reader)).toBe(true);
    const again = track(openTable(shmName('stale')));
    expect(tableIsStale(again)).toBe(false);
    deleteTable(shmName('stale'));
    expect(tableIsStale(again)).toBe(true);
    expect(tableIsStale(MaglevTable.create(31, 3))).toBe(false);
  });

  it('init replaces a foreign file', () => {
    fs.writeFileSync(devShm('foreign'), 'abc');
    const t = track(createTable(shmName('foreign'), 31, 3, 0));
    expect(t.M).toBe(31);
    expect(fs.statSync(devShm('foreign')).size).toBe(536);
  });

  it('openTable: missing, truncated and foreign objects', () => {
    expect(codeOf(() => openTable(shmName('none')))).toBe('NFQLB_ERR_SHM_MISSING');
    fs.writeFileSync(devShm('three'), 'abc');
    expect(() => openTable(shmName('three'))).toThrow(new RegExp(`'${shmName('three')}' is not a valid nfqlb table: it is 3 bytes`));
    fs.writeFileSync(devShm('empty'), '');
    expect(codeOf(() => openTable(shmName('empty')))).toBe('NFQLB_ERR_SHM_FORMAT');
    const bin = fs.readFileSync(referencePath('shm', 'tshm-f.bin'));
    const badLen = Buffer.from(bin);
    badLen.writeUInt32LE(1000, 12);
    fs.writeFileSync(devShm('badlen'), badLen);
    expect(() => openTable(shmName('badlen'))).toThrow(/len field is 1000 but M=31, N=3 need 532/);
    fs.writeFileSync(devShm('cut'), bin.subarray(0, 200));
    expect(() => openTable(shmName('cut'), true)).toThrow(/200 bytes.*truncated/);
  });

  it('openTable: a symbolic link in /dev/shm is refused (as shm_open, O_NOFOLLOW), and the file it points at is not mapped', () => {
    const bin = fs.readFileSync(referencePath('shm', 'tshm-f.bin'));
    fs.writeFileSync(devShm('real'), bin);
    fs.symlinkSync(devShm('real'), devShm('link'));
    expect(codeOf(() => openTable(shmName('link'), true))).toBe('NFQLB_ERR_NOT_FILE');
    expect(() => openTable(shmName('link'))).toThrow(/is a symbolic link, not a regular file; it was not opened\. Remove it/);
    expect(fs.readFileSync(devShm('real')).equals(bin)).toBe(true);
  });

  it('closeTable unmaps: the view is empty and fwmarkOf gives -1', () => {
    const t = createTable(shmName('close'), 31, 3, 0);
    t.activate([9]);
    expect(t.fwmarkOf(1)).toBe(9);
    closeTable(t);
    expect(t.lookup.length).toBe(0);
    expect(t.fwmarkOf(1)).toBe(-1);
  });

  it('deleteTable: true when removed, false when missing; a mapping outlives it', () => {
    const t = track(createTable(shmName('del'), 31, 3, 0));
    t.activate([4]);
    expect(deleteTable(shmName('del'))).toBe(true);
    expect(fs.existsSync(devShm('del'))).toBe(false);
    expect(deleteTable(shmName('del'))).toBe(false);
    expect(t.fwmarkOf(0)).toBe(4);
  });

  it('createTable refuses bad shapes before touching /dev/shm', () => {
    expect(codeOf(() => createTable(shmName('bad'), 10, 3, 0))).toBe('NFQLB_ERR_RANGE');
    expect(codeOf(() => createTable(shmName('bad'), 7, 8, 0))).toBe('NFQLB_ERR_RANGE');
    expect(fs.existsSync(devShm('bad'))).toBe(false);
  });
});

describe('nfqlb-trace', () => {
  it('is created with level 5 and mask 0; an existing one keeps its values', () => {
    const a = openOrCreateTraceShm(shmName('trace'));
    open.push({ close: () => closeTraceShm(a) });
    expect(fs.statSync(devShm('trace')).size).toBe(8);
    expect(a.level).toBe(DEFAULT_LOG_LEVEL);
    expect(a.mask).toBe(0);
    a.level = 7;
    a.mask = 0x80000040;
    const b = openOrCreateTraceShm(shmName('trace'));
    open.push({ close: () => closeTraceShm(b) });
    expect(b.level).toBe(7);
    expect(b.mask).toBe(0x80000040);
    const c = openTraceShm(shmName('trace'));
    open.push({ close: () => closeTraceShm(c) });
    c.mask = 2;
    expect(a.mask).toBe(2);
    const raw = fs.readFileSync(devShm('trace'));
    expect(raw.readInt32LE(0)).toBe(7);
    expect(raw.readUInt32LE(4)).toBe(2);
  });

  it('openTraceShm: missing and too small', () => {
    expect(codeOf(() => openTraceShm(shmName('notrace')))).toBe('NFQLB_ERR_SHM_MISSING');
    fs.writeFileSync(devShm('smalltrace'), 'ab');
    expect(codeOf(() => openTraceShm(shmName('smalltrace')))).toBe('NFQLB_ERR_SHM_FORMAT');
    expect(codeOf(() => openOrCreateTraceShm(shmName('smalltrace')))).toBe('NFQLB_ERR_SHM_FORMAT');
  });
});
