/**
 * The links of the fragment table's entries (chains.ts): the free list hands
 * out every overflow entry once, chains link at their head and unlink
 * anywhere, and the age list gives the least recently used overflow entry —
 * checked against a model under random operations.
 */
import { EntryChains, NONE } from '../../../src/fragments/chains';
import { prng } from '../../helpers/prng';

/** The chain of home slot h, as entries. */
function chain(c: EntryChains, h: number): number[] {
  const out: number[] = [];
  for (let e = c.next[h]; e !== NONE; e = c.next[e]) out.push(e);
  return out;
}

describe('EntryChains', () => {
  test('the free list gives the overflow entries in order, each once, then NONE', () => {
    const c = new EntryChains(4, 7, 16);
    expect([c.takeFree(), c.takeFree(), c.takeFree(), c.takeFree()]).toEqual([4, 5, 6, NONE]);
    expect(c.oldest).toBe(NONE);
  });

  test('linkAtHead, unchain from the middle, release back to the free list', () => {
    const c = new EntryChains(2, 6, 16);
    const [a, b, d] = [c.takeFree(), c.takeFree(), c.takeFree()];
    for (const e of [a, b, d]) {
      c.linkAtHead(0, e);
      c.appendAge(e);
    }
    expect(chain(c, 0)).toEqual([d, b, a]);
    expect(c.homeOf[b]).toBe(0);
    expect(c.unchain(b)).toBe(true);
    expect(c.followed).toBe(1); // home → d → b
    expect(chain(c, 0)).toEqual([d, a]);
    c.release(b);
    expect(c.homeOf[b]).toBe(NONE);
    expect(c.takeFree()).toBe(b);
    expect(c.unchain(d)).toBe(true);
    expect(c.followed).toBe(0);
    expect(chain(c, 0)).toEqual([a]);
  });

  test('unchain refuses an entry that is not in its home\'s chain (the lists disagree)', () => {
    const c = new EntryChains(2, 4, 16);
    const e = c.takeFree();
    c.linkAtHead(1, e);
    c.next[1] = NONE; // cut it out behind the table's back
    expect(c.unchain(e)).toBe(false);
  });

  test('the age list: oldest first, touch makes an entry the newest, home slots are not on it', () => {
    const c = new EntryChains(2, 5, 16);
    const [a, b, d] = [c.takeFree(), c.takeFree(), c.takeFree()];
    c.appendAge(a);
    c.appendAge(b);
    c.appendAge(d);
    expect(c.oldest).toBe(a);
    c.touch(a);
    expect(c.oldest).toBe(b);
    c.touch(0); // a home slot: nothing changes
    expect(c.oldest).toBe(b);
    c.unlinkAge(b);
    expect(c.oldest).toBe(d);
    c.unlinkAge(d);
    c.unlinkAge(a);
    expect(c.oldest).toBe(NONE);
  });

  test('random operations agree with a model (free set, chains as arrays, an LRU order)', () => {
    const rnd = prng(17);
    const homes = 8;
    const n = 40;
    const c = new EntryChains(homes, n, 64);
    const free = Array.from({ length: n - homes }, (_, i) => homes + i);
    const chains: number[][] = Array.from({ length: homes }, () => []);
    let ages: number[] = [];
    for (let step = 0; step < 5000; step++) {
      const r = rnd();
      if (r < 0.4) {
        const e = c.takeFree();
        expect(e).toBe(free.length > 0 ? free.shift() : NONE);
        if (e === NONE) continue;
        const h = Math.floor(rnd() * homes);
        c.linkAtHead(h, e);
        c.appendAge(e);
        chains[h].unshift(e);
        ages.push(e);
      } else if (r < 0.7 && ages.length > 0) {
        const e = ages[Math.floor(rnd() * ages.length)];
        c.touch(e);
        ages = [...ages.filter((x) => x !== e), e];
      } else if (ages.length > 0) {
        const e = rnd() < 0.5 ? c.oldest : ages[Math.floor(rnd() * ages.length)];
        const h = c.homeOf[e];
        expect(c.unchain(e)).toBe(true);
        expect(c.followed).toBe(chains[h].indexOf(e));
        c.release(e);
        chains[h] = chains[h].filter((x) => x !== e);
        ages = ages.filter((x) => x !== e);
        free.unshift(e);
      }
      expect(c.oldest).toBe(ages.length > 0 ? ages[0] : NONE);
    }
    for (let h = 0; h < homes; h++) expect(chain(c, h)).toEqual(chains[h]);
  });
});
