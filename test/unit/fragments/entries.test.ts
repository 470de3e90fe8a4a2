/**
 * The storage of the fragment table's entries (entries.ts): sizes from the
 * options, a key written is the key matched (addresses, id, fingerprint all
 * count), a datagram moved into its home slot takes all of its record with
 * it, and the seeded hash: deterministic per seed, different across seeds.
 */
import { NONE } from '../../../src/fragments/chains';
import { FragmentEntries, WAITING } from '../../../src/fragments/entries';
import { NO_SLOT } from '../../../src/fragments/store';
import { KEY_ADDR_END } from '../../../src/packet/hashkey';

/** The protected storage, opened for the test. */
class Open extends FragmentEntries {
  setKeyOf(e: number, key: Uint8Array, id: number, fp: number): void {
    this.setKey(e, key, id, fp);
  }
  matchesOf(e: number, key: Uint8Array, id: number, fp: number): boolean {
    return this.matches(e, key, id, fp);
  }
  hash(key: Uint8Array, id: number): number {
    return this.fingerprint(key, id);
  }
  move(e: number, home: number): void {
    this.moveToHome(e, home);
  }
  record(e: number): unknown[] {
    return [this.used[e], this.fingerprints[e], this.ids[e], this.values[e], this.lastSeen[e], this.holes[e], this.states[e], this.kept[e],
      Array.from(this.addrs.subarray(e * KEY_ADDR_END, (e + 1) * KEY_ADDR_END))];
  }
  setRecord(e: number, value: number, lastSeen: number, holes: number, state: number, kept: number): void {
    this.values[e] = value;
    this.lastSeen[e] = lastSeen;
    this.holes[e] = holes;
    this.states[e] = state;
    this.kept[e] = kept;
  }
}

function keyOf(seed: number): Uint8Array {
  return Uint8Array.from({ length: KEY_ADDR_END }, (_, i) => (seed * 31 + i * 7) & 0xff);
}

describe('FragmentEntries', () => {
  test('sizes: at least one home slot, no negative overflow, whole numbers', () => {
    const e = new Open(0, -3, 2.7, 1);
    expect([e.hashSize, e.extraBuckets, e.capacity, e.maxChain]).toEqual([1, 0, 1, 2]);
    const f = new Open(10.9, 5.2, 16, 1);
    expect([f.hashSize, f.extraBuckets, f.capacity]).toEqual([10, 5, 15]);
    expect(f.byteLength).toBeGreaterThan(15 * (KEY_ADDR_END + 8 + 8 + 4 + 4));
  });

  test('a key written matches itself and nothing that differs in an address byte, the id or the fingerprint', () => {
    const t = new Open(4, 4, 16, 1);
    const key = keyOf(1);
    t.setKeyOf(5, key, 77, 1234);
    expect(t.matchesOf(5, key, 77, 1234)).toBe(true);
    expect(t.matchesOf(5, key, 78, 1234)).toBe(false);
    expect(t.matchesOf(5, key, 77, 1235)).toBe(false);
    for (const at of [0, 15, 16, KEY_ADDR_END - 1]) {
      const other = key.slice();
      other[at] ^= 1;
      expect(t.matchesOf(5, other, 77, 1234)).toBe(false);
    }
    // Only the address part of a longer key counts.
    const longer = new Uint8Array(40);
    longer.set(key);
    longer[39] = 9;
    expect(t.matchesOf(5, longer, 77, 1234)).toBe(true);
  });

  test('moveToHome: the whole record goes home; the overflow entry keeps no holes and no copies', () => {
    const t = new Open(4, 4, 16, 1);
    t.setKeyOf(6, keyOf(2), 9, -5);
    t.setRecord(6, 42.5, 1000, 3, WAITING, 11);
    const before = t.record(6);
    t.move(6, 1);
    expect(t.record(1)).toEqual([1, ...before.slice(1)]);
    expect(t.record(6).slice(5, 8)).toEqual([NONE, WAITING, NO_SLOT]);
  });

  test('the fingerprint: the same per seed and key, another for another seed, id or address', () => {
    const key = keyOf(3);
    const a = new Open(4, 0, 16, 1);
    const b = new Open(4, 0, 16, 1);
    const c = new Open(4, 0, 16, 2);
    expect(a.hash(key, 5)).toBe(b.hash(key, 5));
    expect(a.hash(key, 5)).not.toBe(c.hash(key, 5));
    expect(a.hash(key, 5)).not.toBe(a.hash(key, 6));
    const other = key.slice();
    other[31] ^= 0x80;
    expect(a.hash(key, 5)).not.toBe(a.hash(other, 5));
    // Spread: 4096 ids of one address pair fill 64 home slots evenly enough.
    const slots = new Array(64).fill(0);
    for (let id = 0; id < 4096; id++) slots[(a.hash(key, id) >>> 0) % 64]++;
    expect(Math.max(...slots)).toBeLessThan(120);
    expect(Math.min(...slots)).toBeGreaterThan(20);
  });
});
