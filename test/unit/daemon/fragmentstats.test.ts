/**
 * Fragment statistics: nfqlb's fragStats from the single loop's table or
 * summed over the packet threads' shared counters, the store counters
 * likewise, --ft_shm written, and a failed write logged once until one
 * succeeds (a directory planted under the name also a refused open).
 */
import * as fs from 'node:fs';
import { KeyCounter } from '../../../src/base/counters';
import { createLogger } from '../../../src/base/log';
import { SHM_DIR, shmObjectName } from '../../../src/addon/shm';
import { Pipeline, type PipelineOptions } from '../../../src/datapath/pipeline';
import { FS_INSERTS, FS_REASSEMBLER_FULL } from '../../../src/fragments/tablestats';
import { FSTORE_IN_USE } from '../../../src/fragments/store';
import { readFragStats } from '../../../src/fragments/stats';
import type { ServedTable } from '../../../src/tables/servedtable';
import { FragmentStatistics } from '../../../src/daemon/fragmentstats';
import type { PacketThreads } from '../../../src/daemon/packetthreads';
import { ThreadCounters } from '../../../src/daemon/threadcounters';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-frs`;
let text = '';
const log = createLogger(7, { write: (s: string) => void (text += s) } as unknown as Parameters<typeof createLogger>[1]);
const warnings = (): string[] => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40).map((l) => l.msg);
beforeEach(() => (text = ''));

function setup(pipelineOptions: Partial<PipelineOptions<ServedTable>>, threads: Partial<PacketThreads> | null = null): { stats: FragmentStatistics; pipeline: Pipeline<ServedTable>; refused: KeyCounter } {
  const pipeline = new Pipeline<ServedTable>(null, pipelineOptions);
  const refused = new KeyCounter();
  const stats = new FragmentStatistics({ options: { mtu: 1400, pipeline: pipelineOptions }, pipeline, threads: () => threads as PacketThreads | null, log, openRefused: refused });
  return { stats, pipeline, refused };
}

describe('FragmentStatistics', () => {
  it('on the single loop: the pipeline\'s own table, nfqlb\'s shape from the options', () => {
    const { stats, pipeline } = setup({ fragmentHashSize: 500, fragmentStoreSlots: 0 });
    pipeline.fragments.stats[FS_INSERTS] = 7;
    pipeline.fragments.stats[FS_REASSEMBLER_FULL] = 2;
    expect(stats.arrays()).toEqual([pipeline.fragments.stats]);
    expect(stats.stats()).toMatchObject({ size: 500, mtu: 1400, inserts: 7, fragsMax: 0 });
    expect(stats.reading()).toMatchObject({ inserts: 7, reassemblerFull: 2 });
    expect(stats.storeCounters()).toBeNull();
    expect(stats.storeReading()).toBeNull();
    expect(stats.lastTunErrno()).toBe(0);
    stats.tunErrno[0] = 5;
    expect(stats.lastTunErrno()).toBe(5);
  });

  it('with packet threads: their shared counters summed', () => {
    const a = new ThreadCounters(2);
    const b = new ThreadCounters(2);
    a.fragmentStats[FS_INSERTS] = 3;
    b.fragmentStats[FS_INSERTS] = 4;
    a.fragmentStore[FSTORE_IN_USE] = 1;
    b.fragmentStore[FSTORE_IN_USE] = 2;
    b.tunErrno[0] = 9;
    const { stats } = setup({ fragmentStoreSlots: 16 }, { counters: [a, b] });
    expect(stats.stats()).toMatchObject({ inserts: 7, fragsMax: 16 });
    expect(stats.storeReading()).toMatchObject({ slots: 16, inUse: 3 });
    expect(stats.lastTunErrno()).toBe(9);
  });

  it('writes --ft_shm; a failed write is logged once until a write succeeds, a planted directory counted as a refused open', () => {
    const name = `${PREFIX}-ft`;
    const file = `${SHM_DIR}/${shmObjectName(name)}`;
    const { stats, pipeline, refused } = setup({});
    try {
      expect(stats.writing).toBe(false);
      pipeline.fragments.stats[FS_INSERTS] = 11;
      stats.openFtShm(name);
      expect(stats.writing).toBe(true);
      expect(readFragStats(name).inserts).toBe(11);
      fs.rmSync(file);
      fs.mkdirSync(file);
      stats.write();
      stats.write();
      expect(warnings()).toEqual(['fragment statistics not written']);
      expect(refused.entries()).toEqual([{ key: 'ft_shm', count: 1 }]);
      fs.rmdirSync(file);
      stats.write();
      stats.write();
      fs.rmSync(file);
      fs.mkdirSync(file);
      stats.write();
      expect(warnings()).toEqual(['fragment statistics not written', 'fragment statistics not written']);
    } finally {
      fs.rmSync(file, { recursive: true, force: true });
    }
  });
});
