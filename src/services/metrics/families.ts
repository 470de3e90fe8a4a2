/**
 * Every nfqlb_* family of /metrics, as a table: its name, help, labels and
 * how it reads the daemon's numbers (registry.ts builds the prom-client
 * metrics from it). The order here is the order of the exposition.
 *
 * A counter's read() gives the source's current counts, one call of `count`
 * per label set; the registry folds them into totals that never go down
 * (MonotonicTotals), so a count the source restarts (a flow set again, a
 * re-bound queue: pass the `instance` that tells) is never a decrease. A
 * gauge's read() gives the values of now.
 */
import { CT_ENTRIES, CT_EVICTED, CT_EXPIRED, CT_HITS, CT_INSERTS, CT_MISSES, CT_MOVED, CT_SAVED } from '../../datapath/conntrack';
import { VERDICT_ERROR_REASONS } from '../../addon/queue';
import type { BatchSizeHistogram } from '../../base/counters';
import { NFQLB_COMPAT_VERSION, PACKAGE_VERSION } from '../../base/version';
import type { ScrapeReadings } from './readings';
import type { FragmentStatsReading } from './source';
import { labelText, type Labels } from './totals';

export interface CounterFamily<L extends string> {
  kind: 'counter';
  name: string;
  help: string;
  labelNames?: readonly L[];
  /** Calls `count` with each label set's current count; returns false when there is nothing to read now (the family stays as it is). */
  read(r: ScrapeReadings, count: (labels: Labels<L>, value: number, instance?: unknown) => void): boolean | void;
  /**
   * Label sets exported from the start, at 0: a counter that appears only at
   * its first increment starts at 1, and rate() and increase() never see that
   * first one (an alert on the first failed flow-set would not fire).
   */
  seeded?: readonly Labels<L>[];
}

export interface GaugeFamily<L extends string> {
  kind: 'gauge';
  name: string;
  help: string;
  labelNames?: readonly L[];
  /** Unlabelled, and absent in a scrape where read() sets nothing (rather than a misleading 0). */
  optional?: boolean;
  /** Calls `set` with each label set's value now. A labelled gauge shows only what was set; an unlabelled one keeps its last value. */
  read(r: ScrapeReadings, set: (labels: Labels<L>, value: number) => void): void;
}

export interface HistogramFamily {
  kind: 'histogram';
  name: string;
  help: string;
  read(r: ScrapeReadings): BatchSizeHistogram;
}

export type MetricFamily = CounterFamily<string> | GaugeFamily<string> | HistogramFamily;

const counter = <L extends string = never>(f: Omit<CounterFamily<L>, 'kind'>): MetricFamily => ({ kind: 'counter', ...f }) as MetricFamily;
const gauge = <L extends string = never>(f: Omit<GaugeFamily<L>, 'kind'>): MetricFamily => ({ kind: 'gauge', ...f }) as MetricFamily;

/** A counter without labels whose total is `read()` now (null: leave it as it is). */
const total = (name: string, help: string, read: (r: ScrapeReadings) => number | null): MetricFamily =>
  counter({
    name,
    help,
    read(r, count) {
      const v = read(r);
      if (v !== null) count({}, v);
      return v !== null;
    },
  });

/** A gauge without labels set to `read()` now (null: leave it as it is, or absent when `optional`). */
const reading = (name: string, help: string, read: (r: ScrapeReadings) => number | null, optional = false): MetricFamily =>
  gauge({
    name,
    help,
    optional,
    read(r, set) {
      const v = read(r);
      if (v !== null) set({}, v);
    },
  });

/** Failures the addon counts per queue, of the reasons `pick` keeps, as {queue, reason}. */
const queueErrors = (name: string, help: string, pick: (reason: string) => boolean): MetricFamily =>
  counter<'queue' | 'reason'>({
    name,
    help,
    labelNames: ['queue', 'reason'],
    read(r, count) {
      for (const e of r.source.queueErrors?.() ?? []) if (pick(e.reason)) count({ queue: String(e.queueNum), reason: e.reason }, e.count, e.portid);
    },
  });

/** One failure reason of the addon per queue, as {queue}: one family per unit (messages, packets). */
const queueErrorsOf = (name: string, help: string, reason: string): MetricFamily =>
  counter<'queue'>({
    name,
    help,
    labelNames: ['queue'],
    read(r, count) {
      for (const e of r.source.queueErrors?.() ?? []) if (e.reason === reason) count({ queue: String(e.queueNum) }, e.count, e.portid);
    },
  });

/** A queue's number from /proc/net/netfilter/nfnetlink_queue, per held queue; the portid tells a re-bound queue. */
const queueProc = (name: string, help: string, field: 'queueDropped' | 'userDropped'): MetricFamily =>
  counter<'queue'>({
    name,
    help,
    labelNames: ['queue'],
    read(r, count) {
      r.heldProc((q, e) => count({ queue: String(q.queueNum) }, e[field], e.portid));
    },
  });

/** nfqlb_conntrack_*_total counters: metric name, help, CT_* index. */
const CONNTRACK_COUNTERS: ReadonlyArray<readonly [string, string, number]> = [
  ['nfqlb_conntrack_hits_total', 'Packets of known connections sent to their remembered target (--conntrack).', CT_HITS],
  ['nfqlb_conntrack_misses_total', 'Packets of connections not in the table: decided by Maglev and remembered.', CT_MISSES],
  ['nfqlb_conntrack_inserts_total', 'Connections added to the table.', CT_INSERTS],
  ['nfqlb_conntrack_expired_total', 'Connections forgotten after --conntrack_ttl / --conntrack_udp_ttl idle.', CT_EXPIRED],
  ['nfqlb_conntrack_evicted_total', 'Connections forgotten because the table was full (least recently used first; raise --conntrack).', CT_EVICTED],
  ['nfqlb_conntrack_saved_total', 'Hits whose remembered target is not the one Maglev would choose now: packets of connections the table kept in place.', CT_SAVED],
  ['nfqlb_conntrack_moved_total', 'Packets of known connections whose target had gone (deactivated, or the flow names another table): decided again.', CT_MOVED],
];

/** nfqlb_fragment_* counters: metric name, help, FragStats field. */
const FRAGMENT_COUNTERS: ReadonlyArray<readonly [string, string, keyof FragmentStatsReading]> = [
  ['nfqlb_fragment_inserts_total', 'First fragments stored in the fragment table (nfqlb inserts).', 'inserts'],
  ['nfqlb_fragment_rejected_total', 'First fragments the fragment table had no room for, dropped (nfqlb rejected; raise --ft_size/--ft_buckets).', 'rejectedInserts'],
  ['nfqlb_fragment_lookups_total', 'Fragment table accesses, first and later fragments (nfqlb lookups).', 'lookups'],
  ['nfqlb_fragment_collisions_total', 'Stores whose home slot was taken (nfqlb collisions).', 'collisions'],
  ['nfqlb_fragment_expired_total', 'Entries freed after --ft_ttl without a fragment (nfqlb objGC).', 'objGC'],
  ['nfqlb_fragment_buckets_allocated_total', 'Overflow buckets taken for collisions (nfqlb bucketsAllocated).', 'bucketsAllocated'],
  ['nfqlb_fragment_reassembled_total', 'Entries freed early because every fragment of the datagram was seen (--reassembler; nfqlb reAssembled).', 'reAssembled'],
  ['nfqlb_fragment_reassembler_full_total', 'Datagrams left without reassembly bookkeeping because every --reassembler descriptor was in use (raise --reassembler).', 'reassemblerFull'],
];
/** nfqlb_fragment_* gauges: metric name, help, FragStats field. */
const FRAGMENT_GAUGES: ReadonlyArray<readonly [string, string, keyof FragmentStatsReading]> = [
  ['nfqlb_fragment_entries', 'Datagrams in the fragment table now (nfqlb active; at most --ft_size + --ft_buckets per table).', 'active'],
  ['nfqlb_fragment_buckets_used', 'Overflow buckets in use now (nfqlb bucketsUsed; at most --ft_buckets per table).', 'bucketsUsed'],
  ['nfqlb_fragment_table_size', 'Home slots of each fragment table (--ft_size).', 'size'],
  ['nfqlb_fragment_buckets_max', 'Overflow buckets of each fragment table (--ft_buckets).', 'bucketsMax'],
];


/** Control request series exported from the start, at 0: what Meridio sends and the alerts watch. */
const SEEDED_CONTROL_REQUESTS = [
  { action: 'set', result: 'ok' },
  { action: 'set', result: 'fail' },
  { action: 'delete', result: 'ok' },
  { action: 'delete', result: 'fail' },
];
/** Refusal reasons exported from the start, at 0 (the daemon's refusalReason() vocabulary). */
const SEEDED_REFUSAL_REASONS = ['timeout', 'too_large', 'line_too_long', 'invalid_param', 'internal_error', 'other'].map((reason) => ({ reason }));

export const METRIC_FAMILIES: readonly MetricFamily[] = [
  gauge<'version' | 'nfqlb_compat' | 'node'>({
    name: 'nfqlb_build_info',
    help: 'Always 1: the version of nfqlb-ts (version), the nfqlb release it is compatible with (nfqlb_compat) and the Node.js it runs on (node).',
    labelNames: ['version', 'nfqlb_compat', 'node'],
    read(_r, set) {
      set({ version: PACKAGE_VERSION, nfqlb_compat: NFQLB_COMPAT_VERSION, node: process.version }, 1);
    },
  }),
  // /readyz as a series, so an alert can say "up but not serving" (NfqlbNotReady).
  reading('nfqlb_ready', '1 when the daemon serves packets (queues bound, as /readyz answers 200), else 0.', (r) => {
    try {
      return r.source.ready() ? 1 : 0;
    } catch {
      return 0; // Answered as not ready; /readyz logs the error.
    }
  }),
  counter<'queue' | 'verdict'>({
    name: 'nfqlb_packets_total',
    help: 'Packets given a verdict, by queue and verdict (accept|drop).',
    labelNames: ['queue', 'verdict'],
    read(r, count) {
      for (const q of r.source.queues()) {
        const queue = String(q.queueNum);
        count({ queue, verdict: 'accept' }, q.accepted);
        count({ queue, verdict: 'drop' }, q.dropped);
      }
    },
  }),
  counter<'reason'>({
    name: 'nfqlb_decisions_total',
    help: 'Packets by decision reason (target, no_flow, no_target, invalid, fragment_hit, fragment_miss, ...).',
    labelNames: ['reason'],
    read(r, count) {
      for (const d of r.source.reasons()) count({ reason: d.name }, d.count);
    },
  }),
  counter<'flow' | 'target'>({
    name: 'nfqlb_flow_matches_total',
    help: 'Packets matched by each flow.',
    labelNames: ['flow', 'target'],
    read(r, count) {
      // Flows that ended since the last scrape first, so a flow set again under its name adds its new count after its old one.
      for (const f of r.source.endedFlows?.() ?? []) count({ flow: labelText(f.name), target: labelText(f.target ?? '') }, f.matches, f.instance);
      for (const f of r.source.flows()) count({ flow: labelText(f.name), target: labelText(f.target ?? '') }, f.matches, f.instance);
    },
  }),
  counter<'target' | 'fwmark'>({
    name: 'nfqlb_target_packets_total',
    help: 'Packets sent to each fwmark, by target table.',
    labelNames: ['target', 'fwmark'],
    read(r, count) {
      for (const t of r.source.targets()) {
        const target = labelText(t.name);
        t.fwmarks.forEach((fwmark, n) => count({ target, fwmark: String(fwmark) }, n, t.fwmarks));
      }
    },
  }),
  counter<'target'>({
    name: 'nfqlb_table_no_target_total',
    help: 'Packets whose flow chose this target table while it had no active target (decision no_target: dropped, or sent to --notargets_fwmark).',
    labelNames: ['target'],
    read(r, count) {
      for (const t of r.source.targets()) count({ target: labelText(t.name) }, t.noTarget ?? 0, t.fwmarks);
    },
  }),
  { kind: 'histogram', name: 'nfqlb_batch_size', help: 'Packets per receive batch.', read: (r) => r.source.batchSizes },
  gauge<'queue'>({
    name: 'nfqlb_queue_waiting',
    help: 'Packets waiting in the kernel queue for a verdict (from /proc/net/netfilter/nfnetlink_queue).',
    labelNames: ['queue'],
    read(r, set) {
      r.heldProc((q, e) => set({ queue: String(q.queueNum) }, e.waiting));
    },
  }),
  queueProc('nfqlb_queue_dropped_total', 'Packets the kernel dropped because the queue was full (raise --qlength or add queues).', 'queueDropped'),
  queueProc('nfqlb_queue_user_dropped_total', 'Packets the kernel dropped because the netlink socket buffer was full.', 'userDropped'),
  reading('nfqlb_flows', 'Flows defined now.', (r) => r.source.flows().length),
  gauge<'target'>({
    name: 'nfqlb_table_active_targets',
    help: 'Active targets in each open target table.',
    labelNames: ['target'],
    read(r, set) {
      for (const t of r.source.targets()) set({ target: labelText(t.name) }, t.activeTargets);
    },
  }),
  counter<'action' | 'result'>({
    name: 'nfqlb_control_requests_total',
    help: 'Requests on the control socket, by action and result.',
    labelNames: ['action', 'result'],
    read(r, count) {
      for (const c of r.source.controlRequests()) count({ action: c.action, result: c.result }, c.count);
    },
    seeded: SEEDED_CONTROL_REQUESTS,
  }),
  queueErrorsOf('nfqlb_verdict_send_errors_total', 'Verdict messages whose send to the kernel failed (each carries the verdicts of one batch).', 'send'),
  queueErrorsOf(
    'nfqlb_verdict_unsent_packets_total',
    'Packets whose verdict was in a failed send: they stay in the kernel queue until it drops them (fail-open: accepts them).',
    'unsent',
  ),
  queueErrorsOf('nfqlb_verdict_refused_total', 'Verdicts the kernel refused (an error reply to a verdict message).', 'kernel'),
  queueErrors(
    'nfqlb_verdict_errors_total',
    'DEPRECATED (removed in the next release): sums verdict messages (send, kernel) with packets (unsent); use nfqlb_verdict_send_errors_total, nfqlb_verdict_unsent_packets_total and nfqlb_verdict_refused_total.',
    (reason) => VERDICT_ERROR_REASONS.has(reason),
  ),
  queueErrors(
    'nfqlb_queue_errors_total',
    'Receive-side failures per queue (enobufs: the socket overran and the kernel dropped packets; recv; parse: malformed messages; truncated).',
    (reason) => !VERDICT_ERROR_REASONS.has(reason),
  ),
  counter<'reason'>({
    name: 'nfqlb_control_refused_total',
    help: 'Control requests refused before they were handled, by reason (timeout, too_large, line_too_long, invalid_param, ...).',
    labelNames: ['reason'],
    read(r, count) {
      for (const c of r.source.controlRefused?.() ?? []) count({ reason: c.key }, c.count);
    },
    seeded: SEEDED_REFUSAL_REASONS,
  }),
  counter<'object'>({
    name: 'nfqlb_open_refused_total',
    help: 'Opens refused because the name was a FIFO, socket, directory, device node or symbolic link, not a regular file (object: table, trace_shm, ft_shm, flows_file); each is one log line, and the daemon keeps what it had.',
    labelNames: ['object'],
    read(r, count) {
      for (const c of r.source.openRefused?.() ?? []) count({ object: c.key }, c.count);
    },
  }),
  counter<'target' | 'fault'>({
    name: 'nfqlb_table_faults_total',
    help: 'Faults of the shm files of open tables (truncated, deleted, recreated, invalid, not_file, mapping_fault).',
    labelNames: ['target', 'fault'],
    read(r, count) {
      for (const f of r.source.tableFaults?.() ?? []) count({ target: f.target, fault: f.fault }, f.count);
    },
  }),
  total('nfqlb_flows_file_errors_total', 'Failed writes of --flows_file (the flows are set but would not survive a restart).', (r) => r.source.flowsFileErrors?.() ?? 0),
  counter<'event'>({
    name: 'nfqlb_fragment_store_total',
    help:
      'Out-of-order fragments (--tun), by event: stored (a copy kept, the original dropped), reinjected (written to the tun device), ' +
      'no_space / too_big (could not be kept: the datagram is given up), discarded (kept copies of such a datagram), ' +
      'expired (kept copies whose first fragment never came within --ft_ttl), write_error (tun writes that failed). ' +
      "nfqlb's fragsAllocated is stored, its fragsDiscarded is discarded + expired.",
    labelNames: ['event'],
    read(r, count) {
      const s = r.source.fragmentStore?.() ?? null;
      for (const e of s?.events ?? []) count({ event: e.event }, e.count);
      return s !== null;
    },
  }),
  reading('nfqlb_fragment_store_slots_in_use', 'Copies of out-of-order fragments the stores hold now (summed over packet threads); absent without --tun.', (r) => r.source.fragmentStore?.()?.inUse ?? null, true),
  reading('nfqlb_fragment_store_slots_max', 'Copies of out-of-order fragments one store can hold (--ft_frag; each packet thread has one); absent without --tun.', (r) => r.source.fragmentStore?.()?.slots ?? null, true),
  gauge<'state'>({
    name: 'nfqlb_fragment_store_slots',
    help: 'DEPRECATED (removed in the next release): mixes usage and limit; use nfqlb_fragment_store_slots_in_use and nfqlb_fragment_store_slots_max.',
    labelNames: ['state'],
    read(r, set) {
      const s = r.source.fragmentStore?.() ?? null;
      if (s === null) return;
      set({ state: 'max' }, s.slots);
      set({ state: 'in_use' }, s.inUse);
    },
  }),
  ...CONNTRACK_COUNTERS.map(([name, help, field]) => total(name, help, (r) => r.conntrack()?.stats[field] ?? null)),
  reading('nfqlb_conntrack_entries', 'Connections in the table now (--conntrack; at most nfqlb_conntrack_capacity).', (r) => r.conntrack()?.stats[CT_ENTRIES] ?? null),
  reading('nfqlb_conntrack_capacity', 'Entries of the connection table (--conntrack, split over the packet threads).', (r) => r.conntrack()?.capacity ?? null),
  ...FRAGMENT_COUNTERS.map(([name, help, field]) => total(name, help, (r) => {
    const s = r.fragments();
    return s === null ? null : Number(s[field] ?? 0);
  })),
  ...FRAGMENT_GAUGES.map(([name, help, field]) => reading(name, help, (r) => {
    const s = r.fragments();
    return s === null ? null : Number(s[field]);
  })),
  total('nfqlb_trace_channel_dropped_total', 'Trace lines of packet threads dropped because the channel to the trace server was full.', (r) => r.source.traceChannelDropped?.() ?? 0),
];
