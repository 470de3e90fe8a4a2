/**
 * Out-of-order fragments with a store (--tun): a later fragment that comes
 * first is kept and dropped, its first fragment moves the copies to the
 * re-injection list, the re-injected copies then follow the first fragment;
 * the store is bounded (--ft_frag copies in total), a datagram that loses a
 * fragment is given up as nfqlb does, and kept copies expire with their entry.
 * The tun write itself is tested end to end (test/e2e/fragments-tun.test.ts).
 */
import {
  FragmentStore,
  FSTORE_DISCARDED,
  FSTORE_EXPIRED,
  FSTORE_FIELDS,
  FSTORE_IN_USE,
  FSTORE_NO_SPACE,
  FSTORE_REINJECTED,
  FSTORE_STORED,
  FSTORE_TOO_BIG,
  FSTORE_WRITE_ERRORS,
  NO_SLOT,
} from '../../../src/fragments/store';
import { FS_ACTIVE, FS_FRAGS_ALLOCATED, FS_FRAGS_DISCARDED, FS_REASSEMBLED } from '../../../src/fragments/tablestats';
import { MaglevTable } from '../../../src/tables/maglev';
import {
  Pipeline,
  REASON_FRAGMENT_HIT,
  REASON_FRAGMENT_LOST,
  REASON_FRAGMENT_MISS,
  REASON_FRAGMENT_STORED,
  REASON_TARGET,
} from '../../../src/datapath/pipeline';
import { Target } from '../../../src/tables/targets';
import { ipv4, udp } from '../../helpers/packets';

const VIP = '192.0.2.1';

/** A UDP datagram of `parts` fragments (8 payload bytes each after the first's UDP header), in order. */
function fragments(src: string, id: number, parts: number, sport = 1024): Uint8Array[] {
  const out: Uint8Array[] = [];
  out.push(ipv4(src, VIP, 17, udp(sport, 53, Array(8 * 2 - 8).fill(id & 0xff)), { id, moreFragments: parts > 1 }));
  for (let i = 1; i < parts; i++) {
    out.push(ipv4(src, VIP, 17, Array(16).fill(i), { id, moreFragments: i < parts - 1, fragOffset: 2 * i }));
  }
  return out;
}

function lbPipeline(opts: { slots?: number; slotBytes?: number; ttl?: number; counters?: Float64Array; reassembler?: number } = {}): Pipeline<MaglevTable> {
  const lb = MaglevTable.create(97, 4, 0, 'lb');
  lb.activate([11, 12, 13, 14]);
  return new Pipeline<MaglevTable>(null, {
    fixedTarget: new Target('lb', lb),
    fragmentCapacity: 64,
    fragmentTtlMs: opts.ttl ?? 200,
    fragmentStoreSlots: opts.slots ?? 100,
    fragmentStoreSlotBytes: opts.slotBytes ?? 1500,
    fragmentStoreCounters: opts.counters,
    reassemblerSize: opts.reassembler ?? 0,
  });
}

/** What a flush would write: the pending copies, as arrays (then frees them, as if all were written). */
function flush(p: Pipeline<MaglevTable>): number[][] {
  const s = p.fragmentStore as FragmentStore;
  const out: number[][] = [];
  for (let i = 0; i < s.pendingCount; i++) out.push(Array.from(s.bytes.subarray(s.pendingOffsets[i], s.pendingOffsets[i] + s.pendingLengths[i])));
  s.flushed(s.pendingCount);
  return out;
}

describe('FragmentStore', () => {
  it('keeps copies in a bounded pool, linked per list, and frees them on drop and flush', () => {
    const s = new FragmentStore(2, 64);
    const a = ipv4('198.51.100.1', VIP, 17, Array(16).fill(1), { id: 1, fragOffset: 2 });
    let head = s.keep(NO_SLOT, a, 0, a.length);
    head = s.keep(head, a, 0, a.length);
    expect(s.keep(head, a, 0, a.length)).toBe(NO_SLOT);
    expect(s.counters[FSTORE_STORED]).toBe(2);
    expect(s.counters[FSTORE_NO_SPACE]).toBe(1);
    expect(s.counters[FSTORE_IN_USE]).toBe(2);
    s.drop(head, FSTORE_EXPIRED);
    expect(s.counters[FSTORE_EXPIRED]).toBe(2);
    expect(s.counters[FSTORE_IN_USE]).toBe(0);
    head = s.keep(NO_SLOT, a, 0, a.length);
    s.queue(head);
    expect(s.pendingCount).toBe(1);
    expect(Array.from(s.bytes.subarray(s.pendingOffsets[0], s.pendingOffsets[0] + s.pendingLengths[0]))).toEqual(Array.from(a));
    s.flushed(0);
    expect(s.counters[FSTORE_WRITE_ERRORS]).toBe(1);
    expect(s.counters[FSTORE_IN_USE]).toBe(0);
  });

  it('refuses a packet not captured whole or larger than a slot, and copies only the IP datagram', () => {
    const s = new FragmentStore(4, 40);
    const big = ipv4('198.51.100.1', VIP, 17, Array(32).fill(1), { id: 1, fragOffset: 2 });
    expect(s.keep(NO_SLOT, big, 0, big.length)).toBe(NO_SLOT);
    expect(s.keep(NO_SLOT, big, 0, 30)).toBe(NO_SLOT);
    expect(s.counters[FSTORE_TOO_BIG]).toBe(2);
    const small = ipv4('198.51.100.1', VIP, 17, Array(8).fill(2), { id: 1, fragOffset: 2 });
    const padded = new Uint8Array(small.length + 6);
    padded.set(small, 3);
    const head = s.keep(NO_SLOT, padded, 3, small.length + 3);
    s.queue(head);
    expect(s.pendingLengths[0]).toBe(small.length);
  });

  it('counts into a caller-given array (a SharedArrayBuffer for workers)', () => {
    const counters = new Float64Array(new SharedArrayBuffer(8 * FSTORE_FIELDS));
    const p = lbPipeline({ counters });
    const [, later] = fragments('198.51.100.7', 7, 2);
    p.decide(later, 0, later.length, 0);
    expect(counters[FSTORE_STORED]).toBe(1);
  });
});

describe('Pipeline with a fragment store (--tun)', () => {
  it.each([3, 10])('a datagram of %s fragments in reverse order: later ones kept, re-injected after the first, then follow it', (parts) => {
    const p = lbPipeline();
    const frags = fragments('198.51.100.1', 4711, parts);
    for (let i = parts - 1; i >= 1; i--) {
      expect(p.decide(frags[i], 0, frags[i].length, 0)).toBe(-1);
      expect(p.last.reason).toBe(REASON_FRAGMENT_STORED);
    }
    expect(p.fragmentStore?.pendingCount).toBe(0);
    const fw = p.decide(frags[0], 0, frags[0].length, 1);
    expect(p.last.reason).toBe(REASON_TARGET);
    expect(fw).toBeGreaterThanOrEqual(11);
    const copies = flush(p);
    expect(copies.map((c) => c.join()).sort()).toEqual(frags.slice(1).map((f) => Array.from(f).join()).sort());
    // Back through the queue: each follows the first fragment.
    for (const c of copies) {
      expect(p.decide(Uint8Array.from(c), 0, c.length, 2)).toBe(fw);
      expect(p.last.reason).toBe(REASON_FRAGMENT_HIT);
    }
    const c = p.fragmentStore!.counters;
    expect([c[FSTORE_STORED], c[FSTORE_REINJECTED], c[FSTORE_IN_USE]]).toEqual([parts - 1, parts - 1, 0]);
  });

  it('in order nothing is kept', () => {
    const p = lbPipeline();
    const frags = fragments('198.51.100.2', 9, 5);
    const fw = p.decide(frags[0], 0, frags[0].length, 0);
    for (let i = 1; i < 5; i++) expect(p.decide(frags[i], 0, frags[i].length, 0)).toBe(fw);
    expect(p.fragmentStore!.counters[FSTORE_STORED]).toBe(0);
    expect(p.fragmentStore!.pendingCount).toBe(0);
  });

  it('--ft_frag bounds the copies of all datagrams together; a datagram that loses one is given up, its first fragment too', () => {
    const p = lbPipeline({ slots: 4 });
    const a = fragments('198.51.100.3', 1, 4);
    const b = fragments('198.51.100.4', 2, 4);
    for (let i = 3; i >= 1; i--) p.decide(a[i], 0, a[i].length, 0);
    p.decide(b[3], 0, b[3].length, 0);
    expect(p.last.reason).toBe(REASON_FRAGMENT_STORED);
    p.decide(b[2], 0, b[2].length, 0);
    expect(p.last.reason).toBe(REASON_FRAGMENT_LOST);
    const c = p.fragmentStore!.counters;
    expect([c[FSTORE_STORED], c[FSTORE_NO_SPACE], c[FSTORE_DISCARDED], c[FSTORE_IN_USE]]).toEqual([4, 1, 1, 3]);
    // nfqlb's fragsAllocated / fragsDiscarded in the table's statistics (ftshm).
    expect([p.fragments.stats[FS_FRAGS_ALLOCATED], p.fragments.stats[FS_FRAGS_DISCARDED]]).toEqual([4, 1]);
    p.decide(b[1], 0, b[1].length, 0);
    expect(p.last.reason).toBe(REASON_FRAGMENT_LOST);
    expect(p.decide(b[0], 0, b[0].length, 0)).toBe(-1);
    expect(p.last.reason).toBe(REASON_FRAGMENT_LOST);
    // The other datagram is whole.
    expect(p.decide(a[0], 0, a[0].length, 0)).toBeGreaterThanOrEqual(11);
    expect(flush(p)).toHaveLength(3);
  });

  it('kept copies expire with their entry (--ft_ttl after the last fragment seen) and are counted', () => {
    const p = lbPipeline({ ttl: 50 });
    const frags = fragments('198.51.100.5', 3, 3);
    p.decide(frags[2], 0, frags[2].length, 0);
    p.decide(frags[1], 0, frags[1].length, 10);
    // Unused for exactly the ttl: still there (nfqlb expires what is unused for MORE than the ttl).
    expect(p.fragments.sweep(60)).toBe(1);
    expect(p.fragments.sweep(61)).toBe(0);
    const c = p.fragmentStore!.counters;
    expect([c[FSTORE_EXPIRED], c[FSTORE_IN_USE]]).toEqual([2, 0]);
    expect([p.fragments.stats[FS_FRAGS_ALLOCATED], p.fragments.stats[FS_FRAGS_DISCARDED]]).toEqual([2, 2]);
    // The first fragment now starts a new entry; nothing to re-inject.
    p.decide(frags[0], 0, frags[0].length, 70);
    expect(p.last.reason).toBe(REASON_TARGET);
    expect(p.fragmentStore!.pendingCount).toBe(0);
  });

  it('with --reassembler: the re-injected copies complete the datagram, which frees its entry early', () => {
    const p = lbPipeline({ reassembler: 16 });
    const frags = fragments('198.51.100.7', 6, 4);
    for (let i = 3; i >= 1; i--) p.decide(frags[i], 0, frags[i].length, 0);
    const fw = p.decide(frags[0], 0, frags[0].length, 1);
    const copies = flush(p);
    expect(copies).toHaveLength(3);
    // Kept copies do not count for the bookkeeping; they do when they come back.
    expect(p.fragments.stats[FS_REASSEMBLED]).toBe(0);
    for (const c of copies) expect(p.decide(Uint8Array.from(c), 0, c.length, 2)).toBe(fw);
    expect([p.fragments.stats[FS_REASSEMBLED], p.fragments.stats[FS_ACTIVE]]).toEqual([1, 0]);
    expect([p.fragments.stats[FS_FRAGS_ALLOCATED], p.fragments.stats[FS_FRAGS_DISCARDED]]).toEqual([3, 0]);
    expect(p.fragmentStore!.counters[FSTORE_IN_USE]).toBe(0);
  });

  it('without a store (no --tun) nothing is kept: later fragments that come first miss, as before', () => {
    const p = lbPipeline({ slots: 0 });
    expect(p.fragmentStore).toBeNull();
    const frags = fragments('198.51.100.6', 5, 3);
    p.decide(frags[2], 0, frags[2].length, 0);
    expect(p.last.reason).toBe(REASON_FRAGMENT_MISS);
    expect(p.decide(frags[0], 0, frags[0].length, 0)).toBeGreaterThanOrEqual(11);
    expect(p.decide(frags[1], 0, frags[1].length, 0)).toBe(p.decide(frags[0], 0, frags[0].length, 0));
  });

  it('allocates nothing per packet while keeping and re-injecting', () => {
    const p = lbPipeline({ slots: 16 });
    const frags = fragments('198.51.100.8', 8, 4);
    let base = 0;
    const run = (n: number): void => {
      for (let k = base; k < base + n; k++) {
        const id = k & 0xffff;
        for (let i = 3; i >= 1; i--) {
          frags[i][4] = id >> 8;
          frags[i][5] = id & 0xff;
          p.decide(frags[i], 0, frags[i].length, 10 * k);
        }
        frags[0][4] = id >> 8;
        frags[0][5] = id & 0xff;
        p.decide(frags[0], 0, frags[0].length, 10 * k);
        p.fragmentStore!.flushed(p.fragmentStore!.pendingCount);
      }
      base += n;
    };
    run(2000);
    const before = process.memoryUsage().heapUsed;
    run(20000);
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(1 << 20);
    expect(p.fragmentStore!.counters[FSTORE_REINJECTED]).toBe(22000 * 3);
  });
});
