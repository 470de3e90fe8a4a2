/**
 * The registry behind /metrics (services/metrics/registry.ts), read directly
 * with `registry.metrics()`, no HTTP: a private Registry per call holding every
 * family of METRIC_FAMILIES and prom-client's default metrics without the
 * gauges promtool rejects; each registry reads its own source at scrape time;
 * counters never go down when the source's count restarts; a labelled gauge
 * shows only the label sets read in this scrape; an optional gauge is absent
 * while its family reads nothing; the /proc queue table is read through the
 * option given. The HTTP side: server.test.ts; each family's values:
 * families.test.ts, failures.test.ts, hygiene.test.ts.
 */
import { register as globalRegistry } from 'prom-client';
import { BatchSizeHistogram, FwmarkCounter } from '../../../../src/base/counters';
import { METRIC_FAMILIES } from '../../../../src/services/metrics/families';
import { createMetricsRegistry } from '../../../../src/services/metrics/registry';
import type { FragmentStoreCounts, MetricsSource, TargetCounts } from '../../../../src/services/metrics/source';
import type { QueueProcEntry } from '../../../../src/addon/queue';

/** A source whose numbers the test sets. */
function source(state: { flows?: number; decisions?: number; targets?: TargetCounts[]; store?: FragmentStoreCounts | null } = {}): MetricsSource {
  return {
    ready: () => true,
    queues: () => [],
    reasons: () => [{ name: 'target', count: state.decisions ?? 0 }],
    flows: () => Array.from({ length: state.flows ?? 0 }, (_, i) => ({ name: `f${i}`, target: null, matches: 0 })),
    targets: () => state.targets ?? [],
    batchSizes: new BatchSizeHistogram(),
    controlRequests: () => [],
    fragmentStore: () => state.store ?? null,
  };
}

/** The sample lines of `text` for metric `name` (no HELP/TYPE lines). */
const samples = (text: string, name: string): string[] => text.split('\n').filter((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));

const noProc = (): readonly QueueProcEntry[] => [];

describe('createMetricsRegistry', () => {
  it('holds every family of METRIC_FAMILIES and the default metrics, minus the three promtool rejects, in a registry of its own', async () => {
    const registry = createMetricsRegistry(source(), { readQueueProc: noProc });
    expect(registry).not.toBe(globalRegistry);
    for (const f of METRIC_FAMILIES) expect(registry.getSingleMetric(f.name)).toBeDefined();
    expect(registry.getSingleMetric('process_cpu_user_seconds_total')).toBeDefined();
    expect(registry.getSingleMetric('nodejs_eventloop_lag_seconds')).toBeDefined();
    for (const rejected of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      expect(registry.getSingleMetric(rejected)).toBeUndefined();
    }
    expect(globalRegistry.getSingleMetric('nfqlb_flows')).toBeUndefined();
  });

  it('each registry reads its own source, at scrape time', async () => {
    const a = { flows: 2 };
    const one = createMetricsRegistry(source(a), { readQueueProc: noProc });
    const two = createMetricsRegistry(source({ flows: 7 }), { readQueueProc: noProc });
    expect(samples(await one.metrics(), 'nfqlb_flows')).toEqual(['nfqlb_flows 2']);
    expect(samples(await two.metrics(), 'nfqlb_flows')).toEqual(['nfqlb_flows 7']);
    a.flows = 3;
    expect(samples(await one.metrics(), 'nfqlb_flows')).toEqual(['nfqlb_flows 3']);
  });

  it("a counter never goes down: a count that restarts lower is added on to what was shown", async () => {
    const state = { decisions: 5 };
    const registry = createMetricsRegistry(source(state), { readQueueProc: noProc });
    const decisions = async (): Promise<string[]> => samples(await registry.metrics(), 'nfqlb_decisions_total').filter((l) => l.includes('reason="target"'));
    expect(await decisions()).toEqual(['nfqlb_decisions_total{reason="target"} 5']);
    state.decisions = 9;
    expect(await decisions()).toEqual(['nfqlb_decisions_total{reason="target"} 9']);
    state.decisions = 2;
    expect(await decisions()).toEqual(['nfqlb_decisions_total{reason="target"} 11']);
  });

  it('a labelled gauge shows only the label sets read in this scrape', async () => {
    const t = (name: string, activeTargets: number): TargetCounts => ({ name, activeTargets, fwmarks: new FwmarkCounter() });
    const state = { targets: [t('tshm-a', 3), t('tshm-b', 1)] };
    const registry = createMetricsRegistry(source(state), { readQueueProc: noProc });
    expect(samples(await registry.metrics(), 'nfqlb_table_active_targets')).toEqual([
      'nfqlb_table_active_targets{target="tshm-a"} 3', 'nfqlb_table_active_targets{target="tshm-b"} 1',
    ]);
    state.targets = [t('tshm-b', 2)];
    expect(samples(await registry.metrics(), 'nfqlb_table_active_targets')).toEqual(['nfqlb_table_active_targets{target="tshm-b"} 2']);
  });

  it('an optional gauge is absent while its family reads nothing, present once it does, absent again after', async () => {
    const state: { store: FragmentStoreCounts | null } = { store: null };
    const registry = createMetricsRegistry(source(state), { readQueueProc: noProc });
    expect(samples(await registry.metrics(), 'nfqlb_fragment_store_slots_in_use')).toEqual([]);
    state.store = { slots: 64, inUse: 5, events: [] };
    const text = await registry.metrics();
    expect(samples(text, 'nfqlb_fragment_store_slots_in_use')).toEqual(['nfqlb_fragment_store_slots_in_use 5']);
    expect(samples(text, 'nfqlb_fragment_store_slots_max')).toEqual(['nfqlb_fragment_store_slots_max 64']);
    state.store = null;
    expect(samples(await registry.metrics(), 'nfqlb_fragment_store_slots_in_use')).toEqual([]);
  });

  it('reads the queue table through the readQueueProc option, once per scrape', async () => {
    let reads = 0;
    const registry = createMetricsRegistry({ ...source(), queues: () => [{ queueNum: 2, portid: 77, accepted: 0, dropped: 0 }] }, {
      readQueueProc: () => {
        reads++;
        return [{ queue: 2, portid: 77, waiting: 11, copyMode: 2, copyRange: 1500, queueDropped: 0, userDropped: 0, lastId: 0 }];
      },
    });
    expect(samples(await registry.metrics(), 'nfqlb_queue_waiting')).toEqual(['nfqlb_queue_waiting{queue="2"} 11']);
    expect(reads).toBe(1);
  });
});
