/**
 * The daemon's fragment statistics: written to --ft_shm in nfqlb's layout at
 * start, by housekeeping and at stop, and exported as nfqlb_fragment_*
 * metrics, both summed over the fragment tables. A daemon with no queues (no
 * root needed) whose pipeline is fed packets directly; private shm names.
 */
import * as fs from 'node:fs';
import { Daemon, type DaemonOptions } from '../../../src/daemon/daemon';
import { readFragStats } from '../../../src/fragments/stats';
import { createLogger } from '../../../src/base/log';
import type { MetricsServer } from '../../../src/services/metrics';
import { closeTable, createTable, deleteTable } from '../../../src/tables/tablefile';
import { runInProcess } from '../../helpers/cli';
import { ipv4, udp } from '../../helpers/packets';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-fts`;
let seq = 0;
const nextName = (): string => `${PREFIX}-${++seq}`;
const made: string[] = [];
afterAll(() => {
  for (const name of made) fs.rmSync(`/dev/shm/${name}`, { force: true, recursive: true });
});

const quietLog = (): ReturnType<typeof createLogger> =>
  createLogger(0, { write: () => undefined } as unknown as Parameters<typeof createLogger>[1]);

function options(extra: Partial<DaemonOptions> = {}): DaemonOptions {
  return {
    mode: 'lb', queues: [], qlength: 1, mtu: 1400, batchSize: 1, failOpen: false, promiscuousPing: false,
    pipeline: { fragmentCapacity: 12, fragmentHashSize: 8, fragmentTtlMs: 50 },
    flowAddress: `unix:${nextName()}`, traceAddress: `unix:${nextName()}`, metricsAddress: null, tableCheckMs: 0,
    ...extra,
  };
}

/** A lb-mode table with one active target (lb needs its table at start). */
function lbTable(): string {
  const name = nextName();
  made.push(name);
  const table = createTable(name, 97, 4, 0);
  table.activate([7]);
  closeTable(table);
  return name;
}

function firstFragment(id: number): Uint8Array {
  return ipv4('198.51.100.9', '192.0.2.1', 17, udp(4000 + id, 53, Array(24).fill(0)), { id, moreFragments: true });
}

describe('--ft_shm and nfqlb_fragment_* metrics', () => {
  it('the stats object exists from the start, follows the table and is written at stop', async () => {
    const ftShm = nextName();
    made.push(ftShm);
    const tshm = lbTable();
    const d = new Daemon(options({ tshm, ftShm, metricsAddress: '127.0.0.1:0' }), quietLog());
    try {
      await d.start();
      expect(readFragStats(ftShm)).toMatchObject({ size: 8, bucketsMax: 4, ttlNanos: 50000000n, mtu: 1400, inserts: 0, fragsMax: 0 });
      const now = performance.now();
      for (let id = 1; id <= 30; id++) {
        const p = firstFragment(id);
        d.pipeline.decide(p, 0, p.length, now);
      }
      d.writeFragmentStats();
      const s = readFragStats(ftShm);
      expect(s.inserts).toBe(30);
      expect(s.active).toBeLessThanOrEqual(12);
      expect(s.active + s.rejectedInserts).toBe(30);
      expect(s.bucketsUsed).toBeLessThanOrEqual(4);

      const metrics = (d as unknown as { metrics: MetricsServer }).metrics;
      const text = await metrics.registry.metrics();
      expect(text).toMatch(new RegExp(`^nfqlb_fragment_inserts_total 30$`, 'm'));
      expect(text).toMatch(new RegExp(`^nfqlb_fragment_entries ${s.active}$`, 'm'));
      expect(text).toMatch(new RegExp(`^nfqlb_fragment_rejected_total ${s.rejectedInserts}$`, 'm'));
      expect(text).toMatch(/^nfqlb_fragment_table_size 8$/m);
      expect(text).toMatch(/^nfqlb_fragment_buckets_max 4$/m);

      // Without traffic, housekeeping frees what expired: the active count falls back.
      const later = now + 51;
      d.pipeline.fragments.sweep(later);
      d.writeFragmentStats();
      expect(readFragStats(ftShm)).toMatchObject({ active: 0, bucketsUsed: 0, objGC: s.active });
      expect(await metrics.registry.metrics()).toMatch(/^nfqlb_fragment_entries 0$/m);
    } finally {
      await d.stop();
    }
    expect(readFragStats(ftShm)).toMatchObject({ inserts: 30, active: 0 });
    deleteTable(tshm);
  });

  it('stop writes the final numbers', async () => {
    const ftShm = nextName();
    made.push(ftShm);
    const tshm = lbTable();
    const d = new Daemon(options({ tshm, ftShm }), quietLog());
    await d.start();
    const p = firstFragment(1);
    d.pipeline.decide(p, 0, p.length, performance.now());
    await d.stop();
    expect(readFragStats(ftShm)).toMatchObject({ inserts: 1, lookups: 1 });
    deleteTable(tshm);
  });

  it('an object that cannot be written is logged once with what to do; the daemon runs on and writes it once it can', async () => {
    const ftShm = nextName();
    made.push(ftShm);
    fs.mkdirSync(`/dev/shm/${ftShm}`);
    const tshm = lbTable();
    const lines: string[] = [];
    const log = createLogger(5, { write: (l: string) => lines.push(l) } as unknown as Parameters<typeof createLogger>[1]);
    const d = new Daemon(options({ tshm, ftShm }), log);
    try {
      await d.start();
      d.writeFragmentStats();
      await new Promise((r) => setImmediate(r));
      const warned = lines.filter((l) => l.includes('fragment statistics not written'));
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatch(new RegExp(`cannot write the fragment statistics to shared memory '${ftShm}'.*--ft_shm`));
      fs.rmdirSync(`/dev/shm/${ftShm}`);
      d.writeFragmentStats();
      expect(readFragStats(ftShm).size).toBe(8);
    } finally {
      await d.stop();
    }
    deleteTable(tshm);
  });
});

describe('--ft_shm with a store of out-of-order fragments (--tun)', () => {
  /** Fragment `index` (≥ 1) of 3 of datagram `id`: 8 bytes each. */
  const laterFragment = (id: number, index: number): Uint8Array =>
    ipv4('198.51.100.9', '192.0.2.1', 17, Array(8).fill(index), { id, moreFragments: index < 2, fragOffset: index + 3 });

  it("fragsMax is --ft_frag; kept copies are fragsAllocated, those dropped unsent (a lost fragment, expiry) fragsDiscarded", async () => {
    const ftShm = nextName();
    made.push(ftShm);
    const tshm = lbTable();
    const base = options();
    const d = new Daemon({ ...base, tshm, ftShm, pipeline: { ...base.pipeline, fragmentStoreSlots: 3, fragmentStoreSlotBytes: 1400 } }, quietLog());
    try {
      await d.start();
      expect(readFragStats(ftShm)).toMatchObject({ fragsMax: 3, fragsAllocated: 0, fragsDiscarded: 0 });
      const now = performance.now();
      const decide = (p: Uint8Array): number => d.pipeline.decide(p, 0, p.length, now);
      // A: both later fragments first, kept; its first fragment queues them for re-injection.
      decide(laterFragment(1, 2));
      decide(laterFragment(1, 1));
      expect(decide(firstFragment(1))).toBeGreaterThanOrEqual(0);
      // B: one copy fits, the next does not: B is lost, its copy dropped.
      decide(laterFragment(2, 2));
      decide(laterFragment(2, 1));
      d.pipeline.fragmentStore!.flushed(d.pipeline.fragmentStore!.pendingCount);
      // C: kept, then its entry expires.
      decide(laterFragment(3, 2));
      d.pipeline.fragments.sweep(now + 51);
      d.writeFragmentStats();
      expect(readFragStats(ftShm)).toMatchObject({ fragsMax: 3, fragsAllocated: 4, fragsDiscarded: 2 });
    } finally {
      await d.stop();
    }
    deleteTable(tshm);
  });
});

describe('flowlb/lb options for fragments, checked before anything is bound', () => {
  it('a --ft_shm that shm_open would refuse, and an absurd --reassembler, are one-line usage errors', async () => {
    const bad = await runInProcess(['flowlb', '--ft_shm=a/b', '--metrics_address=off']);
    expect([bad.rc, bad.stdout]).toEqual([1, '']);
    expect(bad.stderr).toMatch(/^Invalid --ft_shm: invalid shared memory name 'a\/b'.*\n$/);
    const huge = await runInProcess(['lb', '--reassembler=999999999', '--metrics_address=off']);
    expect([huge.rc, huge.stdout]).toEqual([1, '']);
    expect(huge.stderr).toMatch(/^Invalid --reassembler=999999999: at most 16777216 hole descriptors/);
    // The words the user typed, not atoi's 32-bit wrap of them (1215752191).
    const wrapped = await runInProcess(['lb', '--reassembler=99999999999', '--metrics_address=off']);
    expect(wrapped.stderr).toMatch(/^Invalid --reassembler=99999999999: at most 16777216 hole descriptors/);
    // Each packet thread has its own store: 400000 × 1500 bytes is 0.56 GiB once, 2.2 GiB in 4 threads.
    // A private --ft_shm: the --workers=1 start goes as far as writing it before the missing tun stops it.
    const ftShm = nextName();
    made.push(ftShm);
    const frag = ['flowlb', '--tun=nfqnone0', '--ft_frag=400000', '--queue=0:3', '--metrics_address=off', `--ft_shm=${ftShm}`];
    const four = await runInProcess([...frag, '--workers=4']);
    expect([four.rc, four.stdout]).toEqual([1, '']);
    expect(four.stderr).toMatch(/^Invalid --ft_frag=400000: 400000 copies of --mtu=1500 bytes in each of 4 packet threads exceed 1 GiB\n$/);
    const one = await runInProcess([...frag, '--workers=1']);
    expect(one.stderr).toMatch(/^tun device nfqnone0 does not exist/);
  });
});
