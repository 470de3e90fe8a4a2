/**
 * What /metrics reads of a daemon: queues with their packet counts, reasons
 * by name, flows and targets by their text names (lb's table by its option),
 * the counters of control, refusals, faults and --conntrack as they are.
 */
import { BatchSizeHistogram, KeyCounter, LabeledCounter } from '../../../src/base/counters';
import { createLogger } from '../../../src/base/log';
import type { QueueStats } from '../../../src/addon/queue';
import { FlowSet } from '../../../src/flows/flowset';
import { Pipeline, REASON_NAMES, REASON_TARGET } from '../../../src/datapath/pipeline';
import { createTable, deleteTable, openTable } from '../../../src/tables/tablefile';
import type { ServedTable } from '../../../src/tables/servedtable';
import type { Target } from '../../../src/tables/targets';
import { ConnTables } from '../../../src/daemon/conntables';
import { ControlActions, type ControlContext } from '../../../src/daemon/controlactions';
import { FragmentStatistics } from '../../../src/daemon/fragmentstats';
import { daemonMetricsSource, type MetricsParts } from '../../../src/daemon/metricssource';
import { DaemonTables } from '../../../src/daemon/tables';
import type { QueueView } from '../../../src/daemon/workers';

const NAME = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-mts`;
const log = createLogger(0, { write: () => undefined } as unknown as Parameters<typeof createLogger>[1]);

beforeAll(() => {
  createTable(NAME, 97, 4, 0);
  openTable(NAME, true).activate([21, 22]);
});
afterAll(() => deleteTable(NAME));

describe('daemonMetricsSource', () => {
  it('reads every part at scrape time', async () => {
    const tables = new DaemonTables({ mode: 'lb', tshm: NAME }, null);
    try {
      const pipeline = new Pipeline<ServedTable>(null, { fixedTarget: tables.fixed });
      pipeline.reasonCounts[REASON_TARGET] = 9;
      tables.fixed!.fwmarks.add(21, 4);
      const flows = new FlowSet<Target<ServedTable>>({ targetName: (t) => t.name });
      const actions = new ControlActions({ flows, log } as unknown as ControlContext);
      actions.requests.inc('list', 'ok');
      actions.refused.inc('timeout');
      const openRefused = new KeyCounter();
      openRefused.inc('ft_shm');
      const tableFaults = new LabeledCounter();
      tableFaults.inc(NAME, 'truncated');
      const stats = { enobufs: 2, sendErrors: 0, unsentVerdicts: 0, verdictErrors: 0, recvErrors: 0, parseErrors: 0, truncated: 0 } as QueueStats;
      const queues: QueueView[] = [{ queueNum: 4, portid: 77, closed: false, close: () => {}, stats: () => stats }];
      let refreshed = 0;
      const parts: MetricsParts = {
        ready: () => true,
        queues,
        accepted: new Float64Array([10]),
        dropped: new Float64Array([3]),
        reasonCounts: pipeline.reasonCounts,
        flows,
        tables,
        batchSizes: new BatchSizeHistogram(),
        actions,
        flowsFileErrors: () => 6,
        openRefused,
        tableFaults,
        conntrack: new ConnTables({ capacity: 8, streamTtlMs: 1000, otherTtlMs: 1000 }, 1, false),
        fragments: new FragmentStatistics({ options: { mtu: 1500, pipeline: {} }, pipeline, threads: () => null, log, openRefused }),
        traceChannelDropped: () => 5,
        refresh: async () => void refreshed++,
      };
      const m = daemonMetricsSource(parts);
      expect(m.ready()).toBe(true);
      expect(m.queues()).toEqual([{ queueNum: 4, portid: 77, accepted: 10, dropped: 3 }]);
      expect(m.reasons().map((r) => r.name)).toEqual([...REASON_NAMES]);
      expect(m.reasons()[REASON_TARGET].count).toBe(9);
      expect(m.targets()).toEqual([{ name: NAME, activeTargets: 2, fwmarks: tables.fixed!.fwmarks, noTarget: 0 }]);
      expect(m.flows()).toEqual([]);
      expect(m.controlRequests()).toEqual([{ action: 'list', result: 'ok', count: 1 }]);
      expect(m.controlRefused!()).toEqual([{ key: 'timeout', count: 1 }]);
      expect(m.queueErrors!().find((e) => e.reason === 'enobufs')).toEqual({ queueNum: 4, portid: 77, reason: 'enobufs', count: 2 });
      expect(m.flowsFileErrors!()).toBe(6);
      expect(m.openRefused!()).toEqual([{ key: 'ft_shm', count: 1 }]);
      expect(m.tableFaults!()).toEqual([{ target: NAME, fault: 'truncated', count: 1 }]);
      expect(m.conntrack!()).toMatchObject({ capacity: 8 });
      expect(m.traceChannelDropped!()).toBe(5);
      expect(m.fragments!()).toMatchObject({ mtu: 1500, reassemblerFull: 0 });
      expect(m.fragmentStore!()).toBeNull();
      await m.refresh!();
      expect(refreshed).toBe(1);
    } finally {
      tables.closeFixed();
    }
  });
});
