/**
 * What /metrics reads of a daemon (the MetricsSource contract of
 * services/metrics.ts): everything is read at scrape time, nothing per
 * packet; with packet threads their counts are collected first (`refresh`).
 */
import type { BatchSizeHistogram, KeyCounter, LabeledCounter } from '../base/counters';
import type { FlowSet } from '../flows/flowset';
import { REASON_NAMES } from '../datapath/pipeline';
import type { ServedTable } from '../tables/servedtable';
import type { Target } from '../tables/targets';
import { bytesToText } from '../services/control';
import type { MetricsSource } from '../services/metrics';
import type { ConnTables } from './conntables';
import type { ControlActions } from './controlactions';
import { queueErrors } from './failurelog';
import type { FragmentStatistics } from './fragmentstats';
import { activeCount, type DaemonTables } from './tables';
import type { QueueView } from './workers';

/** The daemon's parts metrics read. */
export interface MetricsParts {
  /** Started, and every queue bound and open. */
  ready(): boolean;
  readonly queues: readonly QueueView[];
  /** Accepted / dropped packets per queue index. */
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
  /** Packets by REASON_* (the pipeline's counts). */
  readonly reasonCounts: Float64Array;
  readonly flows: FlowSet<Target<ServedTable>>;
  readonly tables: DaemonTables;
  readonly batchSizes: BatchSizeHistogram;
  readonly actions: ControlActions;
  flowsFileErrors(): number;
  readonly openRefused: KeyCounter;
  readonly tableFaults: LabeledCounter;
  readonly conntrack: ConnTables;
  readonly fragments: FragmentStatistics;
  traceChannelDropped(): number;
  /** Collects the packet threads' counts (nothing without threads). */
  refresh(): Promise<void>;
}

export function daemonMetricsSource(d: MetricsParts): MetricsSource {
  const reasonCounts = d.reasonCounts;
  return {
    ready: d.ready,
    queues: () => d.queues.map((q, qi) => ({ queueNum: q.queueNum, portid: q.portid, accepted: d.accepted[qi], dropped: d.dropped[qi] })),
    reasons: () => REASON_NAMES.map((name, i) => ({ name, count: reasonCounts[i] })),
    flows: () => d.flows.flows.map((f) => ({ name: bytesToText(f.name), target: f.target === null ? null : bytesToText(f.target.name), matches: f.matches, instance: f })),
    endedFlows: () => d.actions.takeEndedFlows(),
    targets: () =>
      d.tables.served().map((t) => {
        const active = activeCount(t.table);
        return { name: d.tables.nameOf(t), activeTargets: active, fwmarks: t.fwmarks, noTarget: t.noTarget };
      }),
    batchSizes: d.batchSizes,
    controlRequests: () => d.actions.requests.entries(),
    queueErrors: () => queueErrors(d.queues),
    controlRefused: () => d.actions.refused.entries(),
    flowsFileErrors: d.flowsFileErrors,
    openRefused: () => d.openRefused.entries(),
    conntrack: () => d.conntrack.reading(),
    traceChannelDropped: d.traceChannelDropped,
    refresh: d.refresh,
    tableFaults: () => d.tableFaults.entries().map((e) => ({ target: e.action, fault: e.result, count: e.count })),
    fragmentStore: () => d.fragments.storeReading(),
    fragments: () => d.fragments.reading(),
  };
}
