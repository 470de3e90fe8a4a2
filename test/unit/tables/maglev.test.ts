/**
 * Maglev tables in private memory: glibc rand(), primes, byte parity with the
 * reference tables, the populate algorithm, the publish order that keeps
 * concurrent readers safe, and validation of foreign buffers.
 */
import * as fs from 'node:fs';
import { NfqlbError } from '../../../src/base/errors';
import {
  GlibcRandom,
  MaglevTable,
  adjustM,
  computeLookup,
  maglevLen,
  primeBelow,
  tableBytes,
  validateTable,
  writeFreshTable,
} from '../../../src/tables/maglev';
import { atoi } from '../../../src/base/catoi';
import { referencePath } from '../../helpers/reference';

/** Runs the init/activate/deactivate lines of a reference .cmds file on in-memory tables. */
function replayCmds(file: string): Map<string, MaglevTable> {
  const tables = new Map<string, MaglevTable>();
  for (const line of fs.readFileSync(referencePath('decisions', file), 'utf8').split('\n')) {
    const words = line.trim().split(' ').filter((w) => w !== '');
    if (words.length === 0) continue;
    const opts = new Map<string, string>();
    const args: string[] = [];
    for (const w of words.slice(1)) {
      const m = /^--([^=]+)=(.*)$/.exec(w);
      if (m) opts.set(m[1], m[2]);
      else args.push(w);
    }
    const shm = opts.get('shm') ?? 'nfqlb';
    const index = opts.get('index');
    if (words[0] === 'init') {
      const M = adjustM(atoi(opts.get('M') ?? '997'));
      tables.set(shm, MaglevTable.create(M, atoi(opts.get('N') ?? '32'), atoi(opts.get('ownfw') ?? '0'), shm));
    } else if (words[0] === 'activate') {
      const t = tables.get(shm)!;
      if (index !== undefined) t.activateIndex(atoi(index), atoi(args[0]));
      else t.activate(args.map(atoi));
    } else if (words[0] === 'deactivate') {
      const t = tables.get(shm)!;
      if (index !== undefined) t.deactivateIndex(atoi(index));
      else t.deactivate(args.map(atoi));
    }
  }
  return tables;
}

function expectFormatError(fn: () => unknown, ...fragments: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(NfqlbError);
  const err = caught as NfqlbError;
  expect(err.code).toBe('NFQLB_ERR_SHM_FORMAT');
  for (const f of fragments) expect(err.message).toContain(f);
}

describe('GlibcRandom', () => {
  it('gives glibc rand() after srand(1)', () => {
    const r = new GlibcRandom(1);
    const got = Array.from({ length: 6 }, () => r.next());
    expect(got).toEqual([1804289383, 846930886, 1681692777, 1714636915, 1957747793, 424238335]);
  });

  it('starts over for every new generator (each nfqlb init is a new process)', () => {
    const a = new GlibcRandom();
    a.next();
    expect(new GlibcRandom().next()).toBe(1804289383);
  });
});

describe('primeBelow / adjustM', () => {
  const lines = fs.readFileSync(referencePath('cli', 'fwmark-primebelow.txt'), 'utf8').split('\n');
  const cases: [number, number][] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^primebelow (\d+)$/.exec(lines[i]);
    if (m) cases.push([Number(m[1]), Number(lines[i + 1])]);
  }

  it('has the reference cases', () => expect(cases.length).toBe(9));

  it.each(cases)('primebelow %d = %d (reference)', (n, p) => {
    expect(primeBelow(n)).toBe(p);
  });

  it('caps at 997² and treats negatives as unsigned, as nfqlb', () => {
    expect(primeBelow(994009)).toBe(993997);
    expect(primeBelow(-1)).toBe(993997);
    expect(primeBelow(4)).toBe(3);
    expect(primeBelow(9)).toBe(7);
    expect(primeBelow(65537)).toBe(65537);
  });

  it('refuses n < 2 with nfqlb text', () => {
    expect(() => primeBelow(1)).toThrow('There is no prime below 1');
    expect(() => primeBelow(0)).toThrow('There is no prime below 0');
  });

  it('adjustM: M < 3 is 3, else the prime at or below', () => {
    expect([0, 1, 2, 3, 4, 10, 997, 1000, 5000, 10000, 2000000].map(adjustM)).toEqual([
      3, 3, 3, 3, 3, 7, 997, 997, 4999, 9973, 993997,
    ]);
  });

  it('agrees with a sieve below 20000', () => {
    const limit = 20000;
    const composite = new Uint8Array(limit + 1);
    let last = 0;
    for (let n = 2; n <= limit; n++) {
      if (!composite[n]) {
        last = n;
        for (let k = n * n; k <= limit; k += n) composite[k] = 1;
      }
      expect(primeBelow(n)).toBe(last);
    }
  });
});

describe('layout', () => {
  it('sizes match the nfqlb 1.2.0 layout and the reference files', () => {
    expect(tableBytes(997, 32)).toBe(131760);
    expect(maglevLen(31, 3)).toBe(532);
    const sizes: [string, number, number][] = [
      ['tshm-a', 997, 32],
      ['tshm-b', 4999, 20],
      ['tshm-e', 97, 10],
      ['tshm-f', 31, 3],
      ['tshm-stream-a-i', 9973, 100],
    ];
    for (const [name, M, N] of sizes) {
      expect(fs.statSync(referencePath('shm', `${name}.bin`)).size).toBe(tableBytes(M, N));
    }
  });
});

describe('parity with nfqlb tables (reference/shm/*.bin)', () => {
  const scenarios = fs.readdirSync(referencePath('decisions')).filter((f) => f.endsWith('.cmds'));

  it('has scenarios', () => expect(scenarios.length).toBeGreaterThanOrEqual(3));

  it.each(scenarios)('%s builds byte-identical tables', (file) => {
    const tables = replayCmds(file);
    expect(tables.size).toBeGreaterThan(0);
    for (const [name, table] of tables) {
      const ref = fs.readFileSync(referencePath('shm', `${name}.bin`));
      const mine = Buffer.from(table.buffer);
      expect(mine.length).toBe(ref.length);
      expect(mine.equals(ref)).toBe(true);
    }
  });

  it('fwmarkOf agrees with every fwmark line of fwmark-primebelow.txt', () => {
    const tables = new Map([...replayCmds('multi.cmds'), ...replayCmds('trench.cmds')]);
    const lines = fs.readFileSync(referencePath('cli', 'fwmark-primebelow.txt'), 'utf8').split('\n');
    let checked = 0;
    for (let i = 0; i < lines.length; i++) {
      const m = /^fwmark --shm=(\S+)/.exec(lines[i]);
      if (!m) continue;
      const want = JSON.parse(lines[i + 1]) as { hash: number; lookupindex: number; activeindex: number; fwmark: number };
      const t = tables.get(m[1])!;
      expect(want.hash % t.M).toBe(want.lookupindex);
      expect(t.lookup[want.lookupindex]).toBe(want.activeindex);
      expect(t.slotAt(want.lookupindex)).toBe(want.activeindex);
      expect(t.fwmarkOf(want.hash)).toBe(want.fwmark);
      checked++;
    }
    expect(checked).toBe(6);
  });
});

describe('permutations', () => {
  function row(t: MaglevTable, i: number): Uint32Array {
    return t.perm.subarray(i * t.M, (i + 1) * t.M);
  }

  function isPermutation(r: Uint32Array): boolean {
    const seen = new Uint8Array(r.length);
    for (const v of r) {
      if (v >= r.length || seen[v]) return false;
      seen[v] = 1;
    }
    return true;
  }

  it('equals nfqlb 32-bit arithmetic up to M = 65537', () => {
    const M = 65537;
    const t = MaglevTable.create(M, 2);
    const rand = new GlibcRandom();
    for (let i = 0; i < 2; i++) {
      const offset = rand.next() % M;
      const skip = (rand.next() % (M - 1)) + 1;
      const r = row(t, i);
      for (let j = 0; j < M; j++) {
        // What C computes: (unsigned)(offset + j*skip) % M.
        const c32 = ((offset + j * skip) % 4294967296) % M; // < 2^53, exact in a double
        if (r[j] !== c32) expect(r[j]).toBe(c32);
      }
    }
  });

  it('is an exact permutation for large M, where nfqlb overflows (a deliberate divergence)', () => {
    const M = 993997;
    const t = MaglevTable.create(M, 2);
    const rand = new GlibcRandom();
    let differsFromC = false;
    for (let i = 0; i < 2; i++) {
      const offset = rand.next() % M;
      const skip = (rand.next() % (M - 1)) + 1;
      const r = row(t, i);
      expect(isPermutation(r)).toBe(true);
      for (let j = 0; j < M; j += 997) {
        expect(r[j]).toBe(Number((BigInt(offset) + BigInt(j) * BigInt(skip)) % BigInt(M)));
        const c32 = Number((BigInt(offset) + BigInt(j) * BigInt(skip)) & 0xffffffffn) % M;
        if (c32 !== r[j]) differsFromC = true;
      }
    }
    expect(differsFromC).toBe(true);
    t.activate([1, 2]);
    expect(t.lookup.every((v) => v === 0 || v === 1)).toBe(true);
  });
});

describe('populate', () => {
  it('gives every active slot floor or ceil of M/n entries', () => {
    const t = MaglevTable.create(997, 32);
    t.activate([10, 20, 30, 40, 50, 60, 70]);
    t.deactivateIndex(3);
    const counts = new Map<number, number>();
    for (const v of t.lookup) counts.set(v, (counts.get(v) ?? 0) + 1);
    expect([...counts.keys()].sort((a, b) => a - b)).toEqual([0, 1, 2, 4, 5, 6]);
    for (const c of counts.values()) expect([166, 167]).toContain(c);
  });

  it('moves few entries when one target goes (Maglev disruption)', () => {
    const t = MaglevTable.create(997, 32);
    t.activate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const before = t.lookup.slice();
    t.deactivate([5]);
    let moved = 0;
    for (let i = 0; i < t.M; i++) if (before[i] !== t.lookup[i] && before[i] !== 4) moved++;
    // Entries of the removed slot must move; of the others, only a few do.
    expect(moved).toBeLessThan(t.M * 0.1);
  });

  it('no active slot: all -1; one active slot: all that slot', () => {
    const t = MaglevTable.create(31, 3);
    expect(t.lookup.every((v) => v === -1)).toBe(true);
    expect(t.fwmarkOf(12345)).toBe(-1);
    t.activateIndex(2, 77);
    expect(t.lookup.every((v) => v === 2)).toBe(true);
    expect(t.fwmarkOf(12345)).toBe(77);
    t.deactivateIndex(2);
    expect(t.lookup.every((v) => v === -1)).toBe(true);
  });

  it('populate() repairs a damaged lookup', () => {
    const t = MaglevTable.create(97, 10);
    t.activate([1, 2, 3]);
    const good = t.lookup.slice();
    t.lookup.fill(-1, 10, 30);
    t.populate();
    expect(t.lookup).toEqual(good);
  });

  it('refuses a permutation row that is not a permutation, leaving the table alone', () => {
    const t = MaglevTable.create(31, 3, 0, 'bad');
    t.perm.fill(0, 0, 31); // row 0 all zero: the overflowing nfqlb init can leave rows like this
    t.activateIndex(1, 12);
    const lookup = t.lookup.slice();
    const active = t.active.slice();
    expectFormatError(() => t.activateIndex(0, 11), "'bad'", 'not a permutation');
    expect(t.lookup).toEqual(lookup);
    expect(t.active).toEqual(active);
  });

  it('computeLookup refuses out-of-range permutation entries', () => {
    const perm = new Uint32Array([0, 1, 5]);
    const out = new Int32Array(3);
    expectFormatError(() => computeLookup(perm, new Int32Array([1]), 3, 1, out, 'x'), 'perm[0][2] is 5');
  });
});

describe('activate / deactivate semantics (nfqlb cmdConfig.c)', () => {
  it('fwmarks go to the first free slot, duplicates are ignored, full tables skip', () => {
    const t = MaglevTable.create(31, 3);
    expect(t.activate([5, 6, 5])).toBe(true);
    expect(Array.from(t.active)).toEqual([5, 6, -1]);
    expect(t.activate([6])).toBe(false);
    expect(t.activate([7, 8])).toBe(true);
    expect(Array.from(t.active)).toEqual([5, 6, 7]);
    expect(t.deactivate([6, 99])).toBe(true);
    expect(Array.from(t.active)).toEqual([5, -1, 7]);
    expect(t.deactivate([99])).toBe(false);
    expect(t.activate([8])).toBe(true);
    expect(Array.from(t.active)).toEqual([5, 8, 7]);
  });

  it('a negative fwmark matches a free slot, so activating it changes nothing (as nfqlb)', () => {
    const t = MaglevTable.create(31, 3);
    expect(t.activate([-1])).toBe(false);
    expect(Array.from(t.active)).toEqual([-1, -1, -1]);
  });

  it('by index: same fwmark is no change; a new fwmark on an active slot is', () => {
    const t = MaglevTable.create(31, 3);
    expect(t.activateIndex(1, 12)).toBe(true);
    expect(t.activateIndex(1, 12)).toBe(false);
    expect(t.activateIndex(1, 13)).toBe(true);
    expect(t.fwmarkOf(0)).toBe(13);
    expect(t.deactivateIndex(1)).toBe(true);
    expect(t.deactivateIndex(1)).toBe(false);
  });

  it('refuses slots outside 0..N-1', () => {
    const t = MaglevTable.create(31, 3, 0, 'tt');
    for (const bad of [3, -1, 1.5]) {
      expect(() => t.activateIndex(bad, 1)).toThrow(/outside 0..2 of table 'tt'/);
      expect(() => t.deactivateIndex(bad)).toThrow(NfqlbError);
    }
  });
});

describe('publish order: a concurrent reader never sees a broken table', () => {
  /**
   * Checks after every single store that the table a reader would see is
   * sound: each entry is its old or its new value, an entry names a slot
   * holding a fwmark, and no entry is -1 while targets exist before and after.
   */
  function watchStores(t: MaglevTable, change: () => void): number {
    const oldLookup = t.lookup.slice();
    const oldActive = t.active.slice();
    const oldHasTargets = oldActive.some((v) => v >= 0);
    // First run learns the final table; then rewind and watch it being published.
    change();
    const newLookup = t.lookup.slice();
    const newHasTargets = t.active.some((v) => v >= 0);
    t.lookup.set(oldLookup);
    t.active.set(oldActive);

    const violations: string[] = [];
    let stores = 0;
    const real = Atomics.store;
    const spy = jest.spyOn(Atomics, 'store').mockImplementation(((arr: Int32Array, i: number, v: number) => {
      const r = real(arr, i, v);
      stores++;
      for (let c = 0; c < t.M; c++) {
        const slot = t.lookup[c];
        if (slot !== oldLookup[c] && slot !== newLookup[c]) violations.push(`store ${stores}: lookup[${c}]=${slot} is neither old nor new`);
        if (slot >= 0 && t.active[slot] < 0) violations.push(`store ${stores}: lookup[${c}] names free slot ${slot}`);
        if (slot < 0 && oldHasTargets && newHasTargets) violations.push(`store ${stores}: lookup[${c}] is -1 while targets exist`);
      }
      return r;
    }) as typeof Atomics.store);
    try {
      change();
    } finally {
      spy.mockRestore();
    }
    expect(violations.slice(0, 5)).toEqual([]);
    expect(t.lookup).toEqual(newLookup);
    return stores;
  }

  it('activating a target', () => {
    const t = MaglevTable.create(97, 10);
    t.activate([1, 2]);
    expect(watchStores(t, () => t.activate([3]))).toBeGreaterThan(0);
  });

  it('deactivating a target', () => {
    const t = MaglevTable.create(97, 10);
    t.activate([1, 2, 3]);
    expect(watchStores(t, () => t.deactivate([2]))).toBeGreaterThan(0);
  });

  it('swapping targets in one step', () => {
    const t = MaglevTable.create(97, 10);
    t.activate([1, 2, 3]);
    const next = t.active.slice();
    next[0] = -1;
    next[5] = 6;
    expect(watchStores(t, () => t.applyActive(next))).toBeGreaterThan(0);
  });

  it('first and last target', () => {
    const t = MaglevTable.create(31, 3);
    watchStores(t, () => t.activate([1]));
    watchStores(t, () => t.deactivate([1]));
    expect(t.lookup.every((v) => v === -1)).toBe(true);
  });

  it('stores only the entries that change', () => {
    const t = MaglevTable.create(997, 32);
    t.activate([1, 2, 3, 4]);
    const before = t.lookup.slice();
    const spy = jest.spyOn(Atomics, 'store');
    try {
      t.activate([5]);
      let changed = 0;
      for (let i = 0; i < t.M; i++) if (before[i] !== t.lookup[i]) changed++;
      expect(spy).toHaveBeenCalledTimes(changed + 1); // + active[4]
    } finally {
      spy.mockRestore();
    }
  });
});

describe('validateTable', () => {
  function fresh(M = 31, N = 3): ArrayBuffer {
    const b = new ArrayBuffer(tableBytes(M, N));
    writeFreshTable(b, M, N, 0);
    return b;
  }

  it('accepts a fresh table and the reference files', () => {
    expect(validateTable(fresh(), 'x')).toEqual({ M: 31, N: 3 });
    const ref = fs.readFileSync(referencePath('shm', 'tshm-b.bin'));
    const buf = ref.buffer.slice(ref.byteOffset, ref.byteOffset + ref.byteLength);
    expect(validateTable(buf, 'tshm-b')).toEqual({ M: 4999, N: 20 });
  });

  it('a 3-byte file', () => {
    expectFormatError(() => new MaglevTable(new ArrayBuffer(3), 'tiny'), "'tiny'", '3 bytes', 'nfqlb init --shm=tiny');
  });

  it('a wrong len field', () => {
    const b = fresh();
    new DataView(b).setUint32(12, 999, true);
    expectFormatError(() => validateTable(b, 'badlen'), "'badlen'", 'len field is 999', 'need 532');
  });

  it('a truncated table', () => {
    const b = fresh().slice(0, 300);
    expectFormatError(() => validateTable(b, 'short'), 'it is 300 bytes', 'need 536');
  });

  it('M = 0 and huge M', () => {
    const b = fresh();
    new DataView(b).setUint32(4, 0, true);
    expectFormatError(() => validateTable(b, 'z'), 'M is 0');
    new DataView(b).setUint32(4, 0xffffffff, true);
    expectFormatError(() => validateTable(b, 'z'), 'len field');
  });

  it('a lookup entry naming no slot', () => {
    const b = fresh();
    new Int32Array(b, 16, 31)[7] = 3;
    expectFormatError(() => validateTable(b, 'lk'), 'lookup[7] is 3');
  });

  it('fwmarkOf survives entries changed behind its back', () => {
    const t = MaglevTable.create(31, 3);
    t.activate([1]);
    t.lookup[0] = 50; // another process scribbling
    expect(t.fwmarkOf(0)).toBe(-1);
    expect(t.fwmarkOf(31 * 7 + 1)).toBe(1);
  });
});

describe('create', () => {
  it('refuses shapes nfqlb init never makes', () => {
    expect(() => MaglevTable.create(10, 3)).toThrow(/prime/);
    expect(() => MaglevTable.create(7, 8)).toThrow("N can't be larger than M");
    expect(() => MaglevTable.create(993997, 993997)).toThrow(/32-bit len/);
  });

  it('N = 0 is a valid (useless) table, as in nfqlb', () => {
    const t = MaglevTable.create(3, 0);
    expect(t.N).toBe(0);
    expect(t.activate([1])).toBe(false);
    expect(t.fwmarkOf(1)).toBe(-1);
  });

  it('keeps ownFwmark', () => {
    expect(MaglevTable.create(31, 3, 7).ownFwmark).toBe(7);
    expect(MaglevTable.create(31, 3, -2).ownFwmark).toBe(-2);
  });
});
