/**
 * Table faults in real /dev/shm (needs the addon): a table file truncated,
 * shrunk, deleted, re-created or replaced by junk under a reader. Reading a
 * lost page never kills the process (the addon's SIGBUS guard makes it read
 * -1 and counts it); ServedTable.check() then serves the last good copy,
 * keeps a deleted table, and picks up a re-created one. The CLI reports each
 * fault in one line. Every object is named nfqlbts-st-<pid>-* and removed.
 */
import * as fs from 'node:fs';
import { MaglevTable } from '../../src/tables/maglev';
import { ServedTable, type TableFault } from '../../src/tables/servedtable';
import { openOrCreateTraceShm, closeTraceShm, shmFaultCounter } from '../../src/addon/shm';
import { closeTable, createTable, openTable, tableFile } from '../../src/tables/tablefile';
import { runInProcess } from '../helpers/cli';

const PREFIX = `nfqlbts-st-${process.pid}-`;
const name = (n: string): string => `${PREFIX}${n}`;
const file = (n: string): string => `/dev/shm/${name(n)}`;

const served: ServedTable[] = [];
function removeAll(): void {
  for (const s of served.splice(0)) s.close();
  for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(PREFIX)) fs.rmSync(`/dev/shm/${f}`, { force: true });
}
afterEach(removeAll);

/** A table in shm with `fwmarks` active, closed again (the file stays). */
function makeTable(n: string, M: number, N: number, fwmarks: number[]): void {
  const t = createTable(name(n), M, N, 0);
  t.activate(fwmarks);
  closeTable(t);
}

/** fwmarkOf for `count` hashes spread over the whole lookup array. */
function decisions(t: { fwmarkOf(h: number): number }, count = 2000): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(t.fwmarkOf((i * 2654435761) >>> 0));
  return out;
}

function serve(n: string): { table: ServedTable; faults: Array<[TableFault, string]> } {
  const faults: Array<[TableFault, string]> = [];
  const table = new ServedTable(name(n), openTable(name(n)), (_n, f, d) => faults.push([f, d]));
  served.push(table);
  return { table, faults };
}

describe('openTable checks the size first', () => {
  it('maps only what the header and the size agree on; a short file is a format error, not a SIGBUS', () => {
    makeTable('short', 10007, 10, [1, 2]);
    const t = openTable(name('short'));
    expect(tableFile(t)?.bytes).toBe(t.buffer.byteLength);
    closeTable(t);
    fs.truncateSync(file('short'), 5000);
    expect(() => openTable(name('short'))).toThrow(/is 5000 bytes but M=10007, N=10 need \d+ \(truncated\?\)/);
    fs.truncateSync(file('short'), 3);
    expect(() => openTable(name('short'))).toThrow(/smaller than the 16-byte header/);
  });

  it('creates tables and trace settings with mode 0600', () => {
    makeTable('mode', 997, 4, [1]);
    expect(fs.statSync(file('mode')).mode & 0o777).toBe(0o600);
    const tr = openOrCreateTraceShm(name('trace'));
    closeTraceShm(tr);
    expect(fs.statSync(file('trace')).mode & 0o777).toBe(0o600);
  });
});

describe('the SIGBUS guard', () => {
  it('turns a read past the end of a truncated file into -1 and counts it', () => {
    makeTable('bus', 10007, 10, [1, 2, 3]);
    const t = openTable(name('bus'));
    const faults = shmFaultCounter();
    const before = faults[0];
    fs.truncateSync(file('bus'), 0);
    const got = decisions(t);
    expect(got.every((fw) => fw === -1)).toBe(true);
    expect(faults[0]).toBeGreaterThan(before);
    closeTable(t);
  });
});

describe('ServedTable', () => {
  it('serves the last good copy after a truncation, and the same decisions', () => {
    makeTable('trunc', 10007, 10, [101, 102, 103]);
    const { table, faults } = serve('trunc');
    const good = decisions(table);
    expect(good.every((fw) => fw >= 101 && fw <= 103)).toBe(true);
    expect(table.check()).toBeNull();
    fs.truncateSync(file('trunc'), 0);
    expect(table.check()).toBe('truncated');
    expect(table.serving).toBe('copy');
    expect(decisions(table)).toEqual(good);
    expect(faults[0][1]).toMatch(/the file is 0 bytes, the table needs \d+/);
    expect(table.check()).toBeNull(); // still truncated: reported once
    // A valid table there again: served from the file.
    fs.unlinkSync(file('trunc'));
    makeTable('trunc', 10007, 10, [201]);
    expect(table.check()).toBe('restored');
    expect(table.serving).toBe('live');
    expect(new Set(decisions(table))).toEqual(new Set([201]));
  });

  it('treats a file shrunk by a few bytes as truncated', () => {
    makeTable('shrink', 997, 20, [7, 8]);
    const { table } = serve('shrink');
    const good = decisions(table);
    fs.truncateSync(file('shrink'), fs.statSync(file('shrink')).size - 4);
    expect(table.check()).toBe('truncated');
    expect(decisions(table)).toEqual(good);
  });

  it('keeps serving a deleted table (reported once) and picks up a re-created one of another shape', () => {
    makeTable('del', 997, 4, [11, 12]);
    const { table, faults } = serve('del');
    const good = decisions(table);
    fs.unlinkSync(file('del'));
    expect(table.check()).toBe('deleted');
    expect(table.check()).toBeNull();
    expect(decisions(table)).toEqual(good);
    makeTable('del', 10007, 100, [21, 22, 23]);
    expect(table.check()).toBe('recreated');
    expect(table.M).toBe(10007);
    expect(new Set(decisions(table))).toEqual(new Set([21, 22, 23]));
    expect(faults.map(([f]) => f)).toEqual(['deleted', 'recreated']);
  });

  it('follows activations made through the file (live), and copies them for a later fault', () => {
    makeTable('live', 997, 4, [1]);
    const { table } = serve('live');
    const w = openTable(name('live'), true);
    w.activate([2]);
    closeTable(w);
    expect(new Set(decisions(table))).toEqual(new Set([1, 2]));
    expect(table.check()).toBeNull(); // the copy is taken here
    fs.truncateSync(file('live'), 100);
    expect(table.check()).toBe('truncated');
    expect(new Set(decisions(table))).toEqual(new Set([1, 2]));
  });

  it('reports a junk replacement once it stays junk, and keeps the old table meanwhile', () => {
    makeTable('junk', 997, 4, [5]);
    const { table, faults } = serve('junk');
    fs.unlinkSync(file('junk'));
    fs.writeFileSync(file('junk'), Buffer.alloc(64, 0x41), { mode: 0o600 });
    expect(table.check()).toBeNull(); // maybe an init in progress
    expect(table.check()).toBe('invalid');
    expect(table.check()).toBeNull(); // same junk: reported once
    expect(faults.at(-1)?.[1]).toMatch(/not a valid nfqlb table.*still deciding with the old table/);
    expect(new Set(decisions(table))).toEqual(new Set([5]));
  });

  it('a truncation between checks costs lookups (-1), never the process', () => {
    makeTable('race', 10007, 10, [1, 2]);
    const { table } = serve('race');
    fs.truncateSync(file('race'), 4096);
    const during = decisions(table);
    expect(during).toContain(-1);
    expect(table.check()).toBe('truncated');
    expect(decisions(table).every((fw) => fw === 1 || fw === 2)).toBe(true);
  });

  it('behaves like MaglevTable.fwmarkOf while nothing happens', () => {
    makeTable('same', 997, 8, [3, 4, 5]);
    const { table } = serve('same');
    const plain = openTable(name('same'));
    expect(decisions(table)).toEqual(decisions(plain as MaglevTable));
    // The pipeline passes hashes as int32 bits: a hash of 2^31 or more arrives negative.
    for (const hash of [0x80000000, 0xdeadbeef, 0xffffffff, 2617759782]) {
      expect(table.fwmarkOf(hash | 0)).toBe(plain.fwmarkOf(hash));
      expect(table.fwmarkOf(hash | 0)).toBeGreaterThanOrEqual(3);
    }
    closeTable(plain);
  });
});

describe('the CLI reports each fault in one line', () => {
  it.each([
    ['show', (n: string) => ['show', `--shm=${n}`]],
    ['activate', (n: string) => ['activate', `--shm=${n}`, '--index=0', '9']],
    ['deactivate', (n: string) => ['deactivate', `--shm=${n}`, '--index=0']],
    ['fwmark', (n: string) => ['fwmark', `--shm=${n}`, '--proto=tcp', '--src=198.51.100.7:33000', '--dst=192.0.2.1:80']],
  ])('%s on a truncated, a deleted and a junk table', async (_cmd, words) => {
    makeTable('cli', 997, 4, [1]);
    fs.truncateSync(file('cli'), 200);
    const truncated = await runInProcess(words(name('cli')));
    fs.unlinkSync(file('cli'));
    const deleted = await runInProcess(words(name('cli')));
    fs.writeFileSync(file('cli'), Buffer.alloc(8));
    const junk = await runInProcess(words(name('cli')));
    for (const r of [truncated, deleted, junk]) {
      expect(r.rc).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(truncated.stderr).toMatch(/truncated\?/);
    expect(deleted.stderr).toMatch(/FAILED mapSharedData/); // nfqlb's words
    expect(junk.stderr).toMatch(/smaller than the 16-byte header/);
  });
});
