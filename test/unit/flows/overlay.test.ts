/**
 * The flow index's overlay (overlay.ts): removed base flows are marked by
 * position, added flows are kept in rank order between their neighbours,
 * and it says when it cannot rank (the caller then rebuilds).
 */
import type { Flow } from '../../../src/flows/match';
import { FlowOverlay } from '../../../src/flows/overlay';
import { compileFlow } from '../../../src/flows/parse';

const mk = (name: string): Flow<null> => compileFlow<null>({ name, target: null }) as Flow<null>;

describe('FlowOverlay', () => {
  test('a reset starts from the base: nothing removed, nothing added', () => {
    const o = new FlowOverlay<null>();
    const base = [mk('a'), mk('b'), mk('c')];
    o.reset(base);
    expect(o.changes).toBe(0);
    expect(Array.from(o.removed)).toEqual([0, 0, 0]);
  });

  test('removing a base flow marks its position; an unknown flow is refused', () => {
    const o = new FlowOverlay<null>();
    const base = [mk('a'), mk('b'), mk('c')];
    o.reset(base);
    expect(o.remove(base[1])).toBe(true);
    expect(Array.from(o.removed)).toEqual([0, 1, 0]);
    expect(o.removedCount).toBe(1);
    expect(o.remove(base[1])).toBe(false); // already gone
    expect(o.remove(mk('x'))).toBe(false);
    expect(o.changes).toBe(1);
  });

  test('added flows get ranks between their neighbours, kept sorted; removing one takes it out', () => {
    const o = new FlowOverlay<null>();
    const [a, b, c] = [mk('a'), mk('b'), mk('c')];
    o.reset([a, b, c]);
    const x = mk('x');
    expect(o.add([a, x, b, c], 1, x)).toBe(true); // between a (0) and b (1)
    const y = mk('y');
    expect(o.add([y, a, x, b, c], 0, y)).toBe(true); // before a: rank -1
    const z = mk('z');
    expect(o.add([y, a, x, b, c, z], 5, z)).toBe(true); // after c: rank 3
    const w = mk('w');
    expect(o.add([y, a, w, x, b, c, z], 2, w)).toBe(true); // between a (0) and x (0.5)
    expect(o.flows.map((f) => f.name)).toEqual(['y', 'w', 'x', 'z']);
    expect(o.ranks).toEqual([-1, 0.25, 0.5, 3]);
    expect(o.hidden.length).toBeGreaterThanOrEqual(o.flows.length);
    expect(o.remove(x)).toBe(true);
    expect(o.flows.map((f) => f.name)).toEqual(['y', 'w', 'z']);
    expect(o.ranks).toEqual([-1, 0.25, 3]);
    expect(Array.from(o.removed)).toEqual([0, 0, 0]);
    expect(o.changes).toBe(3);
  });

  test('a neighbour it does not know, or no double left between two ranks: refused', () => {
    const o = new FlowOverlay<null>();
    const [a, b] = [mk('a'), mk('b')];
    o.reset([a, b]);
    const stranger = mk('s');
    const n = mk('n');
    expect(o.add([a, stranger, n, b], 2, n)).toBe(false);
    // Inserting again and again just before b halves the gap below rank 1 until no double is between.
    let list = [a, b];
    let refused = -1;
    for (let i = 0; i < 100 && refused < 0; i++) {
      const f = mk(`f${i}`);
      list = [...list.slice(0, -1), f, b];
      if (!o.add(list, list.length - 2, f)) refused = i;
    }
    expect(refused).toBeGreaterThan(40);
    expect(refused).toBeLessThan(60);
  });

  test('the hidden scratch grows with the overlay', () => {
    const o = new FlowOverlay<null>();
    const a = mk('a');
    o.reset([a]);
    let list = [a];
    for (let i = 0; i < 40; i++) {
      const f = mk(`f${i}`);
      list = [...list, f];
      expect(o.add(list, list.length - 1, f)).toBe(true);
    }
    expect(o.hidden.length).toBeGreaterThanOrEqual(40);
    expect(o.ranks).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
  });
});
