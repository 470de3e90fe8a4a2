/**
 * Reassembly bookkeeping (--reassembler=N): RFC 815 holes over preallocated
 * descriptors, alone and inside the fragment table (an entry is freed as soon
 * as its datagram is complete), with fragments in order, reversed,
 * overlapping and duplicated, and a pool too small for the datagrams.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { FragmentTable } from '../../../src/fragments/table';
import { FS_REASSEMBLER_FULL } from '../../../src/fragments/tablestats';
import { KEY_LEN } from '../../../src/packet/hashkey';
import { MaglevTable } from '../../../src/tables/maglev';
import { Pipeline, REASON_FRAGMENT_HIT, REASON_TARGET } from '../../../src/datapath/pipeline';
import { Reassembler, REASSEMBLY_ABANDONED, REASSEMBLY_COMPLETE, REASSEMBLY_INCOMPLETE } from '../../../src/fragments/reassembler';
import { Target } from '../../../src/tables/targets';
import { ipv4, udp } from '../../helpers/packets';

/** [offset, length, more] of each fragment of a datagram of `total` bytes cut in `size`-byte pieces (size a multiple of 8). */
function pieces(total: number, size: number): Array<[number, number, number]> {
  const out: Array<[number, number, number]> = [];
  for (let off = 0; off < total; off += size) out.push([off, Math.min(size, total - off), off + size < total ? 1 : 0]);
  return out;
}

/** Feeds fragments to a fresh datagram; returns each add()'s result. */
function feed(ra: Reassembler, frags: Array<[number, number, number]>): number[] {
  const slot = new Int32Array([ra.begin()]);
  return frags.map(([o, l, m]) => ra.add(slot, 0, o, l, m));
}

describe('reassembler: holes (RFC 815)', () => {
  const total = 4000;
  const inOrder = pieces(total, 1480);

  it('in order: complete at the last fragment, every descriptor returned', () => {
    const ra = new Reassembler(4);
    expect(feed(ra, inOrder)).toEqual([REASSEMBLY_INCOMPLETE, REASSEMBLY_INCOMPLETE, REASSEMBLY_COMPLETE]);
    expect(ra.free).toBe(4);
  });

  it('reversed: the last fragment first closes the open end; complete at the first fragment', () => {
    const ra = new Reassembler(4);
    expect(feed(ra, [...inOrder].reverse())).toEqual([REASSEMBLY_INCOMPLETE, REASSEMBLY_INCOMPLETE, REASSEMBLY_COMPLETE]);
    expect(ra.free).toBe(4);
  });

  it('a middle fragment first splits the hole in two', () => {
    const ra = new Reassembler(4);
    const slot = new Int32Array([ra.begin()]);
    expect(ra.add(slot, 0, 1480, 1480, 1)).toBe(REASSEMBLY_INCOMPLETE);
    expect(ra.holes(slot[0])).toEqual([[0, 1479], [2960, Infinity]]);
    expect(ra.free).toBe(2);
    expect(ra.add(slot, 0, 2960, 1040, 0)).toBe(REASSEMBLY_INCOMPLETE);
    expect(ra.holes(slot[0])).toEqual([[0, 1479]]);
    expect(ra.add(slot, 0, 0, 1480, 1)).toBe(REASSEMBLY_COMPLETE);
    expect(ra.free).toBe(4);
  });

  it('duplicates change nothing; overlapping fragments fill what they cover', () => {
    const ra = new Reassembler(8);
    const dup = feed(ra, [inOrder[0], inOrder[0], inOrder[1], inOrder[1], inOrder[2]]);
    expect(dup).toEqual([1, 1, 1, 1, 0]);
    // Overlaps: [0,1000) [800,2400) [2000,4000 last) — every byte covered.
    expect(feed(ra, [[0, 1000, 1], [2000, 2000, 0], [800, 1600, 1]])).toEqual([1, 1, 0]);
    // A last fragment seen twice and a gap that stays open.
    expect(feed(ra, [[2960, 1040, 0], [2960, 1040, 0], [0, 1480, 1]])).toEqual([1, 1, 1]);
  });

  it('bounded: without a free descriptor a datagram gets no bookkeeping, and a split that needs one gives it up', () => {
    const ra = new Reassembler(2);
    const a = new Int32Array([ra.begin()]);
    const b = new Int32Array([ra.begin()]);
    expect(ra.begin()).toBe(-1);
    expect(ra.abandoned).toBe(1);
    expect(ra.add(a, 0, 1480, 1480, 1)).toBe(REASSEMBLY_ABANDONED); // needs a second hole
    expect(a[0]).toBe(-1);
    expect(ra.free).toBe(1);
    expect(ra.add(b, 0, 0, 1480, 1)).toBe(REASSEMBLY_INCOMPLETE);
    expect(ra.add(b, 0, 1480, 100, 0)).toBe(REASSEMBLY_COMPLETE);
    expect(ra.free).toBe(2);
  });
});

describe('reassembler in the fragment table', () => {
  const key = new Uint8Array(KEY_LEN).fill(9);

  it('the entry is freed as soon as all of the datagram was seen (counted), later fragments of it then miss', () => {
    const ft = new FragmentTable({ hashSize: 8, extraBuckets: 8, ttlMs: 200, seed: 1, reassemblerSize: 16 });
    expect(ft.store(key, 7, 42, 0)).toBe(true);
    expect(ft.fragmentSeen(0, 1480, 1, 0)).toBe(false);
    expect(ft.lookup(key, 7, 1)).toBe(true);
    expect(ft.fragmentSeen(1480, 1480, 1, 1)).toBe(false);
    expect(ft.lookup(key, 7, 2)).toBe(true);
    expect(ft.fragmentSeen(2960, 1040, 0, 2)).toBe(true);
    expect([ft.reassembled, ft.active, ft.expired]).toEqual([1, 0, 0]);
    expect(ft.lookup(key, 7, 3)).toBe(false);
    expect(ft.sweep(3)).toBe(0);
  });

  it('an entry in the overflow chain is freed early too, and the chain stays whole', () => {
    const ft = new FragmentTable({ hashSize: 1, extraBuckets: 8, ttlMs: 200, seed: 1, reassemblerSize: 32 });
    for (let id = 0; id < 5; id++) {
      expect(ft.store(key, id, id, 0)).toBe(true);
      ft.fragmentSeen(0, 8, 1, 0);
    }
    expect(ft.bucketsUsed).toBe(4);
    // Complete datagram 2 (an overflow entry) and 4, then every other still answers.
    for (const id of [2, 4]) {
      expect(ft.lookup(key, id, 1)).toBe(true);
      expect(ft.fragmentSeen(8, 8, 0, 1)).toBe(true);
    }
    for (const id of [0, 1, 3]) {
      expect(ft.lookup(key, id, 2)).toBe(true);
      expect(ft.value).toBe(id);
    }
    expect([ft.reassembled, ft.active, ft.sweep(2)]).toEqual([2, 3, 3]);
    // Completing the home slot's datagram pulls the chain's head home.
    expect(ft.lookup(key, 0, 3)).toBe(true);
    expect(ft.fragmentSeen(8, 8, 0, 3)).toBe(true);
    for (const id of [1, 3]) expect(ft.lookup(key, id, 4)).toBe(true);
    expect([ft.active, ft.bucketsUsed]).toEqual([2, 1]);
  });

  it('a datagram that finds no free descriptor is counted and lives until its ttl', () => {
    const ft = new FragmentTable({ hashSize: 8, extraBuckets: 8, ttlMs: 200, seed: 1, reassemblerSize: 1 });
    expect(ft.store(key, 1, 1, 0)).toBe(true);
    expect(ft.store(key, 2, 2, 0)).toBe(true);
    expect(ft.stats[FS_REASSEMBLER_FULL]).toBe(1);
    expect(ft.lookup(key, 2, 1)).toBe(true);
    expect(ft.fragmentSeen(0, 100, 0, 1)).toBe(false); // whole datagram seen, but not booked
    expect(ft.lookup(key, 2, 2)).toBe(true);
    expect(ft.sweep(203)).toBe(0);
  });

  it('expired and reclaimed entries give their holes back', () => {
    const ft = new FragmentTable({ hashSize: 4, extraBuckets: 4, ttlMs: 10, seed: 1, reassemblerSize: 8 });
    for (let round = 0; round < 20; round++) {
      for (let id = 0; id < 4; id++) {
        ft.store(key, round * 10 + id, 1, round * 100);
        ft.fragmentSeen(1480, 8, 1, round * 100); // splits: two holes each
      }
    }
    expect(ft.sweep(10000)).toBe(0);
    const ra = (ft as unknown as { reassembler: Reassembler }).reassembler;
    expect(ra.free).toBe(8);
  });

  it('through the pipeline (lb mode): in-order IPv4 fragments free the entry at the last one', () => {
    const lb = MaglevTable.create(97, 4, 0, 'lb');
    lb.activate([11, 12]);
    const pipeline = new Pipeline<MaglevTable>(null, { fixedTarget: new Target('lb', lb), reassemblerSize: 100 });
    const payload = Array(64).fill(1);
    const first = ipv4('198.51.100.3', '192.0.2.1', 17, udp(5000, 53, payload.slice(0, 16)), { id: 99, moreFragments: true });
    const mid = ipv4('198.51.100.3', '192.0.2.1', 17, payload.slice(0, 24), { id: 99, moreFragments: true, fragOffset: 3 });
    const last = ipv4('198.51.100.3', '192.0.2.1', 17, payload.slice(0, 10), { id: 99, fragOffset: 6 });
    const fw = pipeline.decide(first, 0, first.length, 0);
    expect(pipeline.last.reason).toBe(REASON_TARGET);
    expect(pipeline.decide(mid, 0, mid.length, 1)).toBe(fw);
    expect(pipeline.fragments.active).toBe(1);
    expect(pipeline.decide(last, 0, last.length, 2)).toBe(fw);
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_HIT);
    expect([pipeline.fragments.active, pipeline.fragments.reassembled]).toEqual([0, 1]);
  });

  it('allocates nothing per packet: 300,000 fragments through the pipeline leave the heap as it was', () => {
    const gc = (): void => {
      v8.setFlagsFromString('--expose-gc');
      (vm.runInNewContext('gc') as () => void)();
    };
    const lb = MaglevTable.create(97, 4, 0, 'lb');
    lb.activate([11, 12]);
    const pipeline = new Pipeline<MaglevTable>(null, { fixedTarget: new Target('lb', lb), reassemblerSize: 64, fragmentCapacity: 64 });
    const payload = Array(64).fill(1);
    const datagram = (id: number): Uint8Array[] => [
      ipv4('198.51.100.3', '192.0.2.1', 17, udp(5000, 53, payload.slice(0, 16)), { id, moreFragments: true }),
      ipv4('198.51.100.3', '192.0.2.1', 17, payload.slice(0, 24), { id, moreFragments: true, fragOffset: 3 }),
      ipv4('198.51.100.3', '192.0.2.1', 17, payload.slice(0, 10), { id, fragOffset: 6 }),
    ];
    // Reversed middle: the last fragment before the middle one splits nothing, the middle one completes.
    const packets = Array.from({ length: 50 }, (_, i) => datagram(i + 1)).flatMap(([a, b, c]) => [a, c, b]);
    const run = (n: number): void => {
      for (let i = 0; i < n; i++) {
        const p = packets[i % packets.length];
        pipeline.decide(p, 0, p.length, i / 1000);
      }
    };
    run(30000);
    gc();
    const before = process.memoryUsage().heapUsed;
    run(300000);
    gc();
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(1 << 20);
    expect(pipeline.fragments.reassembled).toBeGreaterThanOrEqual(110000);
    expect(pipeline.fragments.active).toBe(0);
  });
});
