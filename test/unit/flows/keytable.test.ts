/**
 * The flow index's storage (keytable.ts): the 5-word key table gives every
 * distinct key one dense id, finds every added key and no other, keeps them
 * across growth, and the pair list keeps its pairs in order across growth.
 */
import { hashKey5, KeyTable, PairList } from '../../../src/flows/keytable';
import { prng } from '../../helpers/prng';

/** Key k with its hash in word 5, as add() takes it. */
function withHash(k: number[]): Int32Array {
  const a = Int32Array.from([...k, 0]);
  a[5] = hashKey5(a, 0, -1);
  return a;
}

describe('hashKey5', () => {
  test('reads the 5 words at the offset, masked; equal keys hash equal, one changed word changes it', () => {
    const a = Int32Array.of(9, 1, 2, 3, 4, 5, 9);
    const b = Int32Array.of(1, 2, 3, 4, 5);
    expect(hashKey5(a, 1, -1)).toBe(hashKey5(b, 0, -1));
    expect(hashKey5(b, 0, 127)).toBe(hashKey5(b, 0, -1) & 127);
    const seen = new Set<number>();
    for (let w = 0; w < 5; w++) {
      const c = b.slice();
      c[w] ^= 1 << 31;
      seen.add(hashKey5(c, 0, -1));
    }
    seen.add(hashKey5(b, 0, -1));
    expect(seen.size).toBe(6);
  });
});

describe('KeyTable', () => {
  test('dense ids in order of first add; a repeated add gives the same id; find() answers for probe', () => {
    const t = new KeyTable();
    expect(t.add(withHash([1, 0, 0, 0, 0]), 0)).toBe(0);
    expect(t.add(withHash([2, 0, 0, 0, 0]), 0)).toBe(1);
    expect(t.add(withHash([1, 0, 0, 0, 0]), 0)).toBe(0);
    expect(t.size).toBe(2);
    t.probe.set([2, 0, 0, 0, 0]);
    expect(t.find()).toBe(1);
    t.probe.set([2, 0, 0, 0, 1]);
    expect(t.find()).toBe(-1);
  });

  test('thousands of random keys (negative words too): all found with their ids after growth, others not', () => {
    const rnd = prng(5);
    const t = new KeyTable();
    const ids = new Map<string, number>();
    const word = (): number => (rnd() < 0.3 ? Math.floor(rnd() * 4) : Math.floor(rnd() * 0x100000000) | 0);
    for (let i = 0; i < 5000; i++) {
      const k = [word(), word(), word(), word(), word()];
      const id = t.add(withHash(k), 0);
      const name = k.join(',');
      if (ids.has(name)) expect(id).toBe(ids.get(name));
      else {
        expect(id).toBe(ids.size);
        ids.set(name, id);
      }
    }
    expect(t.size).toBe(ids.size);
    for (const [name, id] of ids) {
      t.probe.set(name.split(',').map(Number));
      if (t.find() !== id) throw new Error(`key ${name}: id ${t.find()}, added as ${id}`);
    }
    let strangers = 0;
    for (let i = 0; i < 2000; i++) {
      const k = [word(), word(), word(), word(), word()];
      if (ids.has(k.join(','))) continue;
      t.probe.set(k);
      if (t.find() !== -1) strangers++;
    }
    expect(strangers).toBe(0);
  });

  test('add() reads the key at an offset of a bigger array', () => {
    const t = new KeyTable();
    const keys = Int32Array.from([...withHash([7, 7, 7, 7, 7]), ...withHash([8, 8, 8, 8, 8])]);
    expect(t.add(keys, 6)).toBe(0);
    t.probe.set([8, 8, 8, 8, 8]);
    expect(t.find()).toBe(0);
  });
});

describe('PairList', () => {
  test('keeps pairs in push order across growth', () => {
    const p = new PairList();
    for (let i = 0; i < 1000; i++) p.push(i, 5000 + i);
    expect(p.length).toBe(2000);
    expect(p.data.length).toBeGreaterThanOrEqual(2000);
    expect(Array.from(p.data.subarray(0, 6))).toEqual([0, 5000, 1, 5001, 2, 5002]);
    expect([p.data[1998], p.data[1999]]).toEqual([999, 5999]);
  });
});
