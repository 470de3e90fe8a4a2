/**
 * Prometheus metrics of the daemon: a small node:http server with /metrics,
 * /healthz and /readyz, backed by its own prom-client Registry (never the
 * global one, so tests and embedders can run several side by side).
 *
 * Why it is built this way: the packet path only bumps plain numbers and typed
 * arrays (src/base/counters.ts, the daemon's Float64Arrays). Nothing here runs per
 * packet. At scrape time, prom-client calls the `collect()` callback of each
 * metric; those callbacks read the daemon's numbers through MetricsSource and
 * fold them into prom-client. A scrape therefore costs O(series), whatever the
 * packet rate.
 *
 * Counters never go down while the process lives, even when the source's
 * number does (nfqlb restarts a flow's `matches` at 0 when the flow is set
 * again; a re-bound queue gets fresh kernel counters). See MonotonicTotals.
 *
 * Series of things that went away (a deleted flow, a released table, a queue
 * no longer held) are exported with their last value for SERIES_RETENTION_MS
 * and at least one more scrape, then removed, so `nfqlb_*` series follow the
 * configuration instead of growing until restart (docs/metrics.md).
 */
import { CT_ENTRIES, CT_EVICTED, CT_EXPIRED, CT_HITS, CT_INSERTS, CT_MISSES, CT_MOVED, CT_SAVED } from '../datapath/conntrack';
import { isUtf8 } from 'node:buffer';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as zlib from 'node:zlib';
import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import { BATCH_SIZE_BUCKETS, type BatchSizeHistogram, type FwmarkCounter } from '../base/counters';
import { NfqlbError } from '../base/errors';
import type { FragStats } from '../fragments/stats';
import { readQueueProc, type QueueProcEntry } from '../addon/queue';
import { NFQLB_COMPAT_VERSION, PACKAGE_VERSION } from '../base/version';

// ---------------------------------------------------------------------------
// What the daemon provides

/** Per-queue packet counts, as the daemon keeps them. */
export interface QueueCounts {
  /** The NFQUEUE number (label `queue`). */
  queueNum: number;
  /**
   * Netlink port id of this process's socket for the queue (PacketQueue.portid).
   * Used to pick this process's line out of /proc/net/netfilter/nfnetlink_queue:
   * another process may hold the same queue number in another namespace view,
   * and a re-bound queue gets a new portid (and fresh kernel counters).
   */
  portid: number;
  /** Packets given verdict ACCEPT since start (→ nfqlb_packets_total{verdict="accept"}). */
  accepted: number;
  /** Packets given verdict DROP since start (→ nfqlb_packets_total{verdict="drop"}). */
  dropped: number;
}

/** Packets per decision reason since start (→ nfqlb_decisions_total{reason}). */
export interface ReasonCount {
  /** e.g. target, no_flow, no_target, invalid, fragment_hit, fragment_miss (pipeline's REASON_NAMES). */
  name: string;
  count: number;
}

/** One flow (→ nfqlb_flow_matches_total{flow,target}). */
export interface FlowCount {
  /** As the daemon holds it (a byte string); exported through labelText(). */
  name: string;
  /** Name of the target table, or null when the flow has none (exported as target=""). */
  target: string | null;
  /** Packets matched (nfqlb's matches_count; may restart at 0 when the flow is set again). */
  matches: number;
  /**
   * Optional identity of the counter, compared with `===` between scrapes:
   * pass the Flow object. When it changes, `matches` is known to have restarted
   * and is added in full, even if it already grew past the old value. Without
   * it, a restart is only noticed when `matches` goes down.
   */
  instance?: unknown;
}

/** One open target table. */
export interface TargetCounts {
  /** The table's shm name (label `target`). */
  name: string;
  /** Active slots in the table now (→ nfqlb_table_active_targets{target}, a gauge). */
  activeTargets: number;
  /**
   * Packets sent to each fwmark through this table since start
   * (→ nfqlb_target_packets_total{target,fwmark}, fwmark as signed decimal, as
   * `nfqlb show` prints it). A different object than at the last scrape means
   * the counts restarted (the table was closed and reopened).
   */
  fwmarks: FwmarkCounter;
  /** Packets through this table with decision no_target since it was opened (→ nfqlb_table_no_target_total{target}). */
  noTarget?: number;
}

/** Control socket requests (→ nfqlb_control_requests_total{action,result}); see LabeledCounter.entries(). */
export interface ControlRequestCount {
  action: string;
  result: string;
  count: number;
}

/**
 * The daemon's side of the metrics: read-only views, called at scrape time
 * only (never per packet), each at most a few times per scrape. Every count is
 * "since start" and should only grow; when one does go down it is taken as a
 * restart of that counter (see the `instance` notes), never exported as a
 * decrease. Methods should not throw; if one does, the scrape answers 500 (or
 * /readyz 503) and the error is logged.
 */
export interface MetricsSource {
  /** True once the daemon serves packets (queues bound, tables open): /readyz 200. */
  ready(): boolean;
  /** The queues this process holds now. */
  queues(): readonly QueueCounts[];
  /** Decision reasons with their counts; every reason given is exported, 0 included. */
  reasons(): readonly ReasonCount[];
  /** The flows now (their number is the gauge nfqlb_flows). */
  flows(): readonly FlowCount[];
  /** The open target tables now. */
  targets(): readonly TargetCounts[];
  /** Packets per receive batch, one histogram for the whole process (→ nfqlb_batch_size). */
  readonly batchSizes: BatchSizeHistogram;
  /** Control requests by (action, result). */
  controlRequests(): readonly ControlRequestCount[];
  /**
   * Failures the addon counts per queue (→ nfqlb_verdict_errors_total{queue,reason}
   * for reasons in VERDICT_REASONS, nfqlb_queue_errors_total{queue,reason} for
   * the others); `portid` tells a re-bound queue (a restarted count).
   */
  queueErrors?(): readonly QueueErrorCount[];
  /** Refused control requests by reason (→ nfqlb_control_refused_total{reason}). */
  controlRefused?(): readonly { key: string; count: number }[];
  /** Table faults by "target" and "fault" (→ nfqlb_table_faults_total{target,fault}). */
  tableFaults?(): readonly { target: string; fault: string; count: number }[];
  /** Failed writes of --flows_file (→ nfqlb_flows_file_errors_total). */
  flowsFileErrors?(): number;
  /** --conntrack's tables, summed (→ nfqlb_conntrack_*); null or absent when it is off. */
  conntrack?(): { capacity: number; stats: Float64Array } | null;
  /** Opens refused because the name was not a regular file, by object (→ nfqlb_open_refused_total{object}). */
  openRefused?(): readonly { key: string; count: number }[];
  /** The fragment tables' statistics, summed, as nfqlb's ftshm holds them, and ours (→ nfqlb_fragment_*). */
  fragments?(): FragmentStatsReading;
  /** Trace lines the packet threads' bounded trace channel dropped (→ nfqlb_trace_channel_dropped_total). */
  traceChannelDropped?(): number;
  /**
   * Called before each scrape and awaited (bounded by the caller): with packet
   * threads, the daemon collects their counts here, so the views above stay
   * plain reads.
   */
  refresh?(): Promise<void>;
  /** The store of out-of-order fragments (--tun), or null without one (→ nfqlb_fragment_store_*). */
  fragmentStore?(): FragmentStoreCounts | null;
}

/** Copies of out-of-order fragments kept for re-injection through --tun. */
export interface FragmentStoreCounts {
  /** Copies that fit (--ft_frag) (→ nfqlb_fragment_store_slots). */
  slots: number;
  /** Copies held now (→ nfqlb_fragment_store_slots_in_use). */
  inUse: number;
  /** stored, reinjected, no_space, too_big, discarded, expired, write_error (→ nfqlb_fragment_store_total{event}). */
  events: readonly { event: string; count: number }[];
}

/** nfqlb's fragment statistics and what this implementation counts beside them. */
export type FragmentStatsReading = FragStats & {
  /** Datagrams without reassembly bookkeeping: every --reassembler descriptor was in use. */
  reassemblerFull?: number;
};

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
const FRAGMENT_GAUGES: ReadonlyArray<readonly [string, string, keyof FragStats]> = [
  ['nfqlb_fragment_entries', 'Datagrams in the fragment table now (nfqlb active; at most --ft_size + --ft_buckets per table).', 'active'],
  ['nfqlb_fragment_buckets_used', 'Overflow buckets in use now (nfqlb bucketsUsed; at most --ft_buckets per table).', 'bucketsUsed'],
  ['nfqlb_fragment_table_size', 'Home slots of each fragment table (--ft_size).', 'size'],
  ['nfqlb_fragment_buckets_max', 'Overflow buckets of each fragment table (--ft_buckets).', 'bucketsMax'],
];

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

/**
 * `read` called at most once per scrape: the first collect() of a scrape
 * reads, the others of the same scrape (same tick) get that reading.
 */
function oncePerScrape<T>(read: () => T | null): () => T | null {
  let cached: T | null | undefined;
  return () => {
    if (cached === undefined) {
      cached = read();
      queueMicrotask(() => {
        cached = undefined;
      });
    }
    return cached;
  };
}

/** One failure count of one queue. */
export interface QueueErrorCount {
  queueNum: number;
  portid: number;
  /** send, unsent, kernel (verdict errors); enobufs, recv, parse, truncated (queue errors). */
  reason: string;
  count: number;
}

/** Control request series exported from the start, at 0 (see MonotonicTotals.seed): what Meridio sends and the alerts watch. */
const SEEDED_CONTROL_REQUESTS: ReadonlyArray<readonly [string, string]> = [
  ['set', 'ok'],
  ['set', 'fail'],
  ['delete', 'ok'],
  ['delete', 'fail'],
];
/** Refusal reasons exported from the start, at 0 (the daemon's refusalReason() vocabulary). */
const SEEDED_REFUSAL_REASONS = ['timeout', 'too_large', 'line_too_long', 'invalid_param', 'internal_error', 'other'];

/** Reasons of QueueErrorCount that mean a verdict was lost: the packet stayed in the kernel queue or was refused. */
const VERDICT_REASONS = new Set(['send', 'unsent', 'kernel']);

/** Where the server logs: a pino Logger (src/base/log.ts) fits. */
export interface MetricsLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  /** One line per scrape at nfqlb loglevel 7, if given. */
  debug?(obj: object, msg: string): void;
}

/**
 * How long a series whose source went away (deleted flow, released table) is
 * still exported with its last value, in ms. It is removed at the first scrape
 * after this time that is not its first scrape since it went away, so each
 * scraper whose interval is at most this long sees the last value, and a
 * single scraper sees it whatever its interval.
 */
export const SERIES_RETENTION_MS = 60_000;

/** Knobs for tests and embedders; the daemon needs none. */
export interface MetricsOptions {
  /** Overrides SERIES_RETENTION_MS (tests). */
  seriesRetentionMs?: number;
  /** Clock for the retention, ms (default Date.now). */
  now?: () => number;
  /** Where to report a failed /proc read (startMetricsServer() passes its `log`). */
  log?: MetricsLog;
  /** Reads the NFQUEUE proc table (default: readQueueProc() of src/addon/queue.ts). */
  readQueueProc?: () => readonly QueueProcEntry[];
}

// ---------------------------------------------------------------------------
// Folding source numbers into counters that never go down

type Labels<L extends string> = Record<L, string>;

interface Series<L extends string> {
  labels: Labels<L>;
  instance: unknown;
  /** The source's value at the previous update. */
  last: number;
  /** What is exported: the sum of all increases seen. */
  total: number;
  /** The round (scrape) of the last update. */
  round: number;
  /** When the source was first seen without this series (ms), or -1 while it is there. */
  goneSince: number;
  /** Exported in a scrape after it went away. */
  shownGone: boolean;
}

/** The retention of vanished series, shared by the MonotonicTotals of one registry. */
interface Retention {
  ms: number;
  now: () => number;
}

/**
 * Turns "current value of a source counter" readings into a monotonic total
 * per label set. Increase since the last reading is added; a reading below the
 * last one, or a changed `instance`, means the source counter restarted from 0,
 * so the whole reading is new and is added. A series whose source is no longer
 * reported (a deleted flow) keeps its last value for the retention, then is
 * removed; if it comes back later it starts again from its new reading, which
 * Prometheus takes as a counter reset (rate() and increase() handle it).
 * Their number is bounded by what the operator configures, not by traffic.
 */
class MonotonicTotals<L extends string> {
  private readonly series = new Map<string, Series<L>>();
  private round = 0;

  constructor(private readonly retention: Retention) {}

  /** `key` must identify the label set (see labelKey); `labels` is only kept for a new series. */
  update(key: string, labels: Labels<L>, current: number, instance?: unknown): void {
    const s = this.series.get(key);
    if (s === undefined) {
      this.series.set(key, { labels, instance, last: current, total: current, round: this.round, goneSince: -1, shownGone: false });
      return;
    }
    s.round = this.round;
    s.goneSince = -1;
    s.shownGone = false;
    if (s.instance !== instance || current < s.last) s.total += current;
    else s.total += current - s.last;
    s.last = current;
    s.instance = instance;
  }

  /**
   * Makes sure a series exists, at 0 if the source has not reported it: a
   * counter that appears only at its first increment starts at 1, and
   * Prometheus' rate() and increase() never see that first one (an alert on
   * the first failed flow-set would not fire).
   */
  seed(key: string, labels: Labels<L>): void {
    const s = this.series.get(key);
    if (s === undefined) this.series.set(key, { labels, instance: undefined, last: 0, total: 0, round: this.round, goneSince: -1, shownGone: false });
    else if (s.round !== this.round) {
      s.round = this.round;
      s.goneSince = -1;
      s.shownGone = false;
    }
  }

  /**
   * Makes `counter` hold exactly the totals. reset() + inc(total) rather than
   * inc(delta): the totals here are the one source of truth, so the exported
   * value stays right even if someone resets the registry's metrics.
   */
  writeTo(counter: Counter<L>): void {
    counter.reset();
    const now = this.retention.now();
    for (const [key, s] of this.series) {
      if (s.round !== this.round) {
        if (s.goneSince < 0) s.goneSince = now;
        else if (s.shownGone && now - s.goneSince >= this.retention.ms) {
          this.series.delete(key);
          continue;
        }
        s.shownGone = true;
      }
      counter.inc(s.labels, s.total);
    }
    this.round++;
  }
}

/**
 * A flow or target name as a label value. The daemon holds names as byte
 * strings (one char per byte, as its control server reads them); bytes that
 * are UTF-8 are decoded, so the label shows the name as it was typed. Other
 * strings are used as they are. NUL, which the text format cannot carry, is
 * never emitted (U+FFFD). prom-client then escapes `\\`, `"` and newline as the
 * Prometheus text format wants.
 */
export function labelText(name: string): string {
  let text = name;
  if (/[\x80-\xff]/.test(text) && !/[^\x00-\xff]/.test(text)) {
    const bytes = Buffer.from(text, 'latin1');
    if (isUtf8(bytes)) text = bytes.toString('utf8');
  }
  return text.includes('\0') ? text.replace(/\0/g, '\ufffd') : text;
}

/** An unambiguous map key for a list of label values (length-prefixed, so "a|b"+"c" ≠ "a"+"b|c"). */
function labelKey(...values: string[]): string {
  let k = '';
  for (const v of values) k += `${v.length}:${v}`;
  return k;
}

// ---------------------------------------------------------------------------
// nfqlb_batch_size: a histogram from pre-aggregated buckets

/**
 * prom-client's Histogram only takes single observations; BatchSizeHistogram
 * already holds bucket counts. This minimal metric object gives the registry
 * what it asks of a metric (name, help, type, get(), reset()) and produces
 * the standard histogram exposition: cumulative `_bucket{le}` lines ending
 * with le="+Inf" (= `_count`), then `_sum` and `_count`. Like the counters it
 * keeps its own monotonic totals, so a replaced source histogram never makes
 * the exported one go down.
 */
class PreaggregatedHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly totals = new Float64Array(BATCH_SIZE_BUCKETS.length + 1);
  private readonly last = new Float64Array(BATCH_SIZE_BUCKETS.length + 1);
  private totalSum = 0;
  private lastSum = 0;
  private lastCount = 0;
  private lastInstance: BatchSizeHistogram | null = null;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly source: () => BatchSizeHistogram,
  ) {}

  private fold(): void {
    const h = this.source();
    // Bucket counts, sum and count of one histogram only grow together, so
    // `count` going down (or another object) is enough to detect a restart.
    const restarted = h !== this.lastInstance || h.count < this.lastCount;
    const n = this.totals.length;
    for (let i = 0; i < n; i++) {
      const cur = h.bucketCounts[i];
      this.totals[i] += restarted ? cur : cur - this.last[i];
      this.last[i] = cur;
    }
    this.totalSum += restarted ? h.sum : h.sum - this.lastSum;
    this.lastSum = h.sum;
    this.lastCount = h.count;
    this.lastInstance = h;
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { metricName: string; labels: Record<string, string>; value: number }[] }> {
    this.fold();
    const values = [];
    let cumulative = 0;
    for (let i = 0; i < BATCH_SIZE_BUCKETS.length; i++) {
      cumulative += this.totals[i];
      values.push({ metricName: `${this.name}_bucket`, labels: { le: String(BATCH_SIZE_BUCKETS[i]) }, value: cumulative });
    }
    // +Inf and _count are every observation: derived from the buckets, so the
    // three are consistent by construction.
    cumulative += this.totals[BATCH_SIZE_BUCKETS.length];
    values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf' }, value: cumulative });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.totalSum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: cumulative });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Called by Registry.resetMetrics(); a since-start histogram has nothing to reset. */
  reset(): void {}
}

/**
 * A gauge without labels that has no sample while `read` gives null (prom-client's
 * unlabelled Gauge always shows one, 0 after reset()): a family that does not
 * apply (no --tun, no store) is absent rather than a misleading 0.
 */
class OptionalGauge {
  readonly type = 'gauge';
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => number | null,
  ) {}

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string>; value: number }[] }> {
    const v = this.read();
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: v === null ? [] : [{ labels: {}, value: v }] };
  }

  reset(): void {}
}

// ---------------------------------------------------------------------------
// The registry

/**
 * Builds a fresh Registry with every nfqlb metric plus prom-client's default
 * process and Node.js metrics, all reading `source` at scrape time
 * (`await registry.metrics()`). Exported for tests and embedders;
 * startMetricsServer() uses it. Note: collectDefaultMetrics() starts an event
 * loop delay monitor that lives as long as the process (prom-client has no
 * way to stop it); call this once per process in production.
 */
export function createMetricsRegistry(source: MetricsSource, options: MetricsOptions = {}): Registry {
  const registry = new Registry();
  const registers = [registry];
  const readProc = options.readQueueProc ?? readQueueProc;
  const log = options.log;
  const retention: Retention = { ms: options.seriesRetentionMs ?? SERIES_RETENTION_MS, now: options.now ?? Date.now };

  const buildInfo = new Gauge({
    name: 'nfqlb_build_info',
    help: 'Always 1: the version of nfqlb-ts (version), the nfqlb release it is compatible with (nfqlb_compat) and the Node.js it runs on (node).',
    labelNames: ['version', 'nfqlb_compat', 'node'],
    registers,
  });
  buildInfo.set({ version: PACKAGE_VERSION, nfqlb_compat: NFQLB_COMPAT_VERSION, node: process.version }, 1);

  // /readyz as a series, so an alert can say "up but not serving" (NfqlbNotReady).
  const readyGauge: Gauge = new Gauge({
    name: 'nfqlb_ready',
    help: '1 when the daemon serves packets (queues bound, as /readyz answers 200), else 0.',
    registers,
    collect() {
      let ready = false;
      try {
        ready = source.ready();
      } catch {
        // Answered as not ready; /readyz logs the error.
      }
      readyGauge.set(ready ? 1 : 0);
    },
  });

  // /proc is read at most once per scrape: every collect() of one
  // registry.metrics() call runs synchronously in the same turn, so a cache
  // cleared by a microtask is shared by the three queue metrics of that scrape
  // and never seen by the next one.
  let procCache: ReadonlyMap<string, QueueProcEntry> | null = null;
  let procError: string | null = null;
  const procEntries = (): ReadonlyMap<string, QueueProcEntry> => {
    if (procCache !== null) return procCache;
    const map = new Map<string, QueueProcEntry>();
    try {
      for (const e of readProc()) map.set(`${e.queue}/${e.portid}`, e);
      procError = null;
    } catch (err) {
      // A scrape without queue-proc series beats a failed scrape; the error
      // surfaces in the log once per distinct message.
      const msg = (err as Error).message;
      if (msg !== procError) log?.warn({ err: msg }, 'metrics: cannot read the NFQUEUE proc table');
      procError = msg;
    }
    procCache = map;
    queueMicrotask(() => {
      procCache = null;
    });
    return map;
  };
  // Held queues with their proc line (queue number AND portid must match).
  const heldProc = (cb: (q: QueueCounts, e: QueueProcEntry) => void): void => {
    const queues = source.queues();
    if (queues.length === 0) return;
    const proc = procEntries();
    for (const q of queues) {
      const e = proc.get(`${q.queueNum}/${q.portid}`);
      if (e !== undefined) cb(q, e);
    }
  };
  const packets = new MonotonicTotals<'queue' | 'verdict'>(retention);
  const packetsCounter: Counter<'queue' | 'verdict'> = new Counter({
    name: 'nfqlb_packets_total',
    help: 'Packets given a verdict, by queue and verdict (accept|drop).',
    labelNames: ['queue', 'verdict'],
    registers,
    collect() {
      for (const q of source.queues()) {
        const queue = String(q.queueNum);
        packets.update(labelKey(queue, 'accept'), { queue, verdict: 'accept' }, q.accepted);
        packets.update(labelKey(queue, 'drop'), { queue, verdict: 'drop' }, q.dropped);
      }
      packets.writeTo(packetsCounter);
    },
  });

  const decisions = new MonotonicTotals<'reason'>(retention);
  const decisionsCounter: Counter<'reason'> = new Counter({
    name: 'nfqlb_decisions_total',
    help: 'Packets by decision reason (target, no_flow, no_target, invalid, fragment_hit, fragment_miss, ...).',
    labelNames: ['reason'],
    registers,
    collect() {
      for (const r of source.reasons()) decisions.update(r.name, { reason: r.name }, r.count);
      decisions.writeTo(decisionsCounter);
    },
  });

  const flowMatches = new MonotonicTotals<'flow' | 'target'>(retention);
  const flowMatchesCounter: Counter<'flow' | 'target'> = new Counter({
    name: 'nfqlb_flow_matches_total',
    help: 'Packets matched by each flow.',
    labelNames: ['flow', 'target'],
    registers,
    collect() {
      for (const f of source.flows()) {
        const flow = labelText(f.name);
        const target = labelText(f.target ?? '');
        flowMatches.update(labelKey(flow, target), { flow, target }, f.matches, f.instance);
      }
      flowMatches.writeTo(flowMatchesCounter);
    },
  });

  const targetPackets = new MonotonicTotals<'target' | 'fwmark'>(retention);
  const targetPacketsCounter: Counter<'target' | 'fwmark'> = new Counter({
    name: 'nfqlb_target_packets_total',
    help: 'Packets sent to each fwmark, by target table.',
    labelNames: ['target', 'fwmark'],
    registers,
    collect() {
      for (const t of source.targets()) {
        const target = labelText(t.name);
        const counter = t.fwmarks;
        counter.forEach((fwmark, count) => {
          const fw = String(fwmark);
          targetPackets.update(labelKey(target, fw), { target, fwmark: fw }, count, counter);
        });
      }
      targetPackets.writeTo(targetPacketsCounter);
    },
  });

  const noTarget = new MonotonicTotals<'target'>(retention);
  const noTargetCounter: Counter<'target'> = new Counter({
    name: 'nfqlb_table_no_target_total',
    help: 'Packets whose flow chose this target table while it had no active target (decision no_target: dropped, or sent to --notargets_fwmark).',
    labelNames: ['target'],
    registers,
    collect() {
      for (const t of source.targets()) {
        const target = labelText(t.name);
        noTarget.update(target, { target }, t.noTarget ?? 0, t.fwmarks);
      }
      noTarget.writeTo(noTargetCounter);
    },
  });

  registry.registerMetric(
    new PreaggregatedHistogram('nfqlb_batch_size', 'Packets per receive batch.', () => source.batchSizes) as unknown as Metric,
  );

  const waiting: Gauge<'queue'> = new Gauge({
    name: 'nfqlb_queue_waiting',
    help: 'Packets waiting in the kernel queue for a verdict (from /proc/net/netfilter/nfnetlink_queue).',
    labelNames: ['queue'],
    registers,
    collect() {
      // A gauge is a reading of now: forget queues no longer held.
      waiting.reset();
      heldProc((q, e) => waiting.set({ queue: String(q.queueNum) }, e.waiting));
    },
  });

  const queueDropped = new MonotonicTotals<'queue'>(retention);
  const queueDroppedCounter: Counter<'queue'> = new Counter({
    name: 'nfqlb_queue_dropped_total',
    help: 'Packets the kernel dropped because the queue was full (raise --qlength or add queues).',
    labelNames: ['queue'],
    registers,
    collect() {
      heldProc((q, e) => {
        const queue = String(q.queueNum);
        queueDropped.update(queue, { queue }, e.queueDropped, e.portid);
      });
      queueDropped.writeTo(queueDroppedCounter);
    },
  });

  const userDropped = new MonotonicTotals<'queue'>(retention);
  const userDroppedCounter: Counter<'queue'> = new Counter({
    name: 'nfqlb_queue_user_dropped_total',
    help: 'Packets the kernel dropped because the netlink socket buffer was full.',
    labelNames: ['queue'],
    registers,
    collect() {
      heldProc((q, e) => {
        const queue = String(q.queueNum);
        userDropped.update(queue, { queue }, e.userDropped, e.portid);
      });
      userDropped.writeTo(userDroppedCounter);
    },
  });

  const flowsGauge: Gauge = new Gauge({
    name: 'nfqlb_flows',
    help: 'Flows defined now.',
    registers,
    collect() {
      flowsGauge.set(source.flows().length);
    },
  });

  const activeTargets: Gauge<'target'> = new Gauge({
    name: 'nfqlb_table_active_targets',
    help: 'Active targets in each open target table.',
    labelNames: ['target'],
    registers,
    collect() {
      activeTargets.reset();
      for (const t of source.targets()) activeTargets.set({ target: labelText(t.name) }, t.activeTargets);
    },
  });

  const control = new MonotonicTotals<'action' | 'result'>(retention);
  const controlCounter: Counter<'action' | 'result'> = new Counter({
    name: 'nfqlb_control_requests_total',
    help: 'Requests on the control socket, by action and result.',
    labelNames: ['action', 'result'],
    registers,
    collect() {
      for (const c of source.controlRequests()) {
        control.update(labelKey(c.action, c.result), { action: c.action, result: c.result }, c.count);
      }
      for (const [action, result] of SEEDED_CONTROL_REQUESTS) control.seed(labelKey(action, result), { action, result });
      control.writeTo(controlCounter);
    },
  });

  const queueErrorMetric = (name: string, help: string, verdicts: boolean): void => {
    const totals = new MonotonicTotals<'queue' | 'reason'>(retention);
    const counter: Counter<'queue' | 'reason'> = new Counter({
      name,
      help,
      labelNames: ['queue', 'reason'],
      registers,
      collect() {
        for (const e of source.queueErrors?.() ?? []) {
          if (VERDICT_REASONS.has(e.reason) !== verdicts) continue;
          const queue = String(e.queueNum);
          totals.update(labelKey(queue, e.reason), { queue, reason: e.reason }, e.count, e.portid);
        }
        totals.writeTo(counter);
      },
    });
  };
  // One family per unit: verdict messages that failed, and the packets they carried.
  const perQueueMetric = (name: string, help: string, reason: string): void => {
    const totals = new MonotonicTotals<'queue'>(retention);
    const counter: Counter<'queue'> = new Counter({
      name,
      help,
      labelNames: ['queue'],
      registers,
      collect() {
        for (const e of source.queueErrors?.() ?? []) {
          if (e.reason !== reason) continue;
          const queue = String(e.queueNum);
          totals.update(queue, { queue }, e.count, e.portid);
        }
        totals.writeTo(counter);
      },
    });
  };
  perQueueMetric('nfqlb_verdict_send_errors_total', 'Verdict messages whose send to the kernel failed (each carries the verdicts of one batch).', 'send');
  perQueueMetric(
    'nfqlb_verdict_unsent_packets_total',
    'Packets whose verdict was in a failed send: they stay in the kernel queue until it drops them (fail-open: accepts them).',
    'unsent',
  );
  perQueueMetric('nfqlb_verdict_refused_total', 'Verdicts the kernel refused (an error reply to a verdict message).', 'kernel');
  queueErrorMetric(
    'nfqlb_verdict_errors_total',
    'DEPRECATED (removed in the next release): sums verdict messages (send, kernel) with packets (unsent); use nfqlb_verdict_send_errors_total, nfqlb_verdict_unsent_packets_total and nfqlb_verdict_refused_total.',
    true,
  );
  queueErrorMetric(
    'nfqlb_queue_errors_total',
    'Receive-side failures per queue (enobufs: the socket overran and the kernel dropped packets; recv; parse: malformed messages; truncated).',
    false,
  );

  const refused = new MonotonicTotals<'reason'>(retention);
  const refusedCounter: Counter<'reason'> = new Counter({
    name: 'nfqlb_control_refused_total',
    help: 'Control requests refused before they were handled, by reason (timeout, too_large, line_too_long, invalid_param, ...).',
    labelNames: ['reason'],
    registers,
    collect() {
      for (const r of source.controlRefused?.() ?? []) refused.update(r.key, { reason: r.key }, r.count);
      for (const reason of SEEDED_REFUSAL_REASONS) refused.seed(reason, { reason });
      refused.writeTo(refusedCounter);
    },
  });

  const openRefused = new MonotonicTotals<'object'>(retention);
  const openRefusedCounter: Counter<'object'> = new Counter({
    name: 'nfqlb_open_refused_total',
    help: 'Opens refused because the name was a FIFO, socket, directory, device node or symbolic link, not a regular file (object: table, trace_shm, ft_shm, flows_file); each is one log line, and the daemon keeps what it had.',
    labelNames: ['object'],
    registers,
    collect() {
      for (const r of source.openRefused?.() ?? []) openRefused.update(r.key, { object: r.key }, r.count);
      openRefused.writeTo(openRefusedCounter);
    },
  });

  const faults = new MonotonicTotals<'target' | 'fault'>(retention);
  const faultsCounter: Counter<'target' | 'fault'> = new Counter({
    name: 'nfqlb_table_faults_total',
    help: 'Faults of the shm files of open tables (truncated, deleted, recreated, invalid, not_file, mapping_fault).',
    labelNames: ['target', 'fault'],
    registers,
    collect() {
      for (const f of source.tableFaults?.() ?? []) faults.update(labelKey(f.target, f.fault), { target: f.target, fault: f.fault }, f.count);
      faults.writeTo(faultsCounter);
    },
  });

  const flowsFileErrors: Counter = new Counter({
    name: 'nfqlb_flows_file_errors_total',
    help: 'Failed writes of --flows_file (the flows are set but would not survive a restart).',
    registers,
    collect() {
      flowsFileErrors.reset();
      flowsFileErrors.inc(source.flowsFileErrors?.() ?? 0);
    },
  });

  const storeEvents = new MonotonicTotals<'event'>(retention);
  const storeCounter: Counter<'event'> = new Counter({
    name: 'nfqlb_fragment_store_total',
    help:
      'Out-of-order fragments (--tun), by event: stored (a copy kept, the original dropped), reinjected (written to the tun device), ' +
      'no_space / too_big (could not be kept: the datagram is given up), discarded (kept copies of such a datagram), ' +
      'expired (kept copies whose first fragment never came within --ft_ttl), write_error (tun writes that failed). ' +
      "nfqlb's fragsAllocated is stored, its fragsDiscarded is discarded + expired.",
    labelNames: ['event'],
    registers,
    collect() {
      const s = source.fragmentStore?.() ?? null;
      if (s === null) return;
      for (const e of s.events) storeEvents.update(e.event, { event: e.event }, e.count);
      storeEvents.writeTo(storeCounter);
    },
  });
  registry.registerMetric(
    new OptionalGauge('nfqlb_fragment_store_slots_in_use', 'Copies of out-of-order fragments the stores hold now (summed over packet threads); absent without --tun.', () => source.fragmentStore?.()?.inUse ?? null) as unknown as Metric,
  );
  registry.registerMetric(
    new OptionalGauge('nfqlb_fragment_store_slots_max', 'Copies of out-of-order fragments one store can hold (--ft_frag; each packet thread has one); absent without --tun.', () => source.fragmentStore?.()?.slots ?? null) as unknown as Metric,
  );
  const storeSlots: Gauge<'state'> = new Gauge({
    name: 'nfqlb_fragment_store_slots',
    help: 'DEPRECATED (removed in the next release): mixes usage and limit; use nfqlb_fragment_store_slots_in_use and nfqlb_fragment_store_slots_max.',
    labelNames: ['state'],
    registers,
    collect() {
      storeSlots.reset();
      const s = source.fragmentStore?.() ?? null;
      if (s === null) return;
      storeSlots.set({ state: 'max' }, s.slots);
      storeSlots.set({ state: 'in_use' }, s.inUse);
    },
  });
  // Fragment and connection-table statistics are read once per scrape (a summing of a few numbers per table).
  const fragStats = oncePerScrape(() => source.fragments?.() ?? null);
  const ctStats = oncePerScrape(() => source.conntrack?.() ?? null);
  /** A counter without labels whose total is `read()` now (null: leave it as it is). */
  const unlabelledTotal = (name: string, help: string, read: () => number | null): void => {
    const totals = new MonotonicTotals<never>(retention);
    const counter: Counter = new Counter({
      name,
      help,
      registers,
      collect() {
        const v = read();
        if (v === null) return;
        totals.update('', {} as Labels<never>, v);
        totals.writeTo(counter);
      },
    });
  };
  for (const [name, help, field] of CONNTRACK_COUNTERS) unlabelledTotal(name, help, () => ctStats()?.stats[field] ?? null);
  const ctEntries: Gauge = new Gauge({
    name: 'nfqlb_conntrack_entries',
    help: 'Connections in the table now (--conntrack; at most nfqlb_conntrack_capacity).',
    registers,
    collect() {
      const s = ctStats();
      if (s !== null) ctEntries.set(s.stats[CT_ENTRIES]);
    },
  });
  const ctCapacity: Gauge = new Gauge({
    name: 'nfqlb_conntrack_capacity',
    help: 'Entries of the connection table (--conntrack, split over the packet threads).',
    registers,
    collect() {
      const s = ctStats();
      if (s !== null) ctCapacity.set(s.capacity);
    },
  });
  for (const [name, help, field] of FRAGMENT_COUNTERS) {
    unlabelledTotal(name, help, () => {
      const s = fragStats();
      return s === null ? null : Number(s[field] ?? 0);
    });
  }
  for (const [name, help, field] of FRAGMENT_GAUGES) {
    const gauge: Gauge = new Gauge({
      name,
      help,
      registers,
      collect() {
        const s = fragStats();
        if (s !== null) gauge.set(Number(s[field]));
      },
    });
  }
  const traceChannelDropped: Counter = new Counter({
    name: 'nfqlb_trace_channel_dropped_total',
    help: 'Trace lines of packet threads dropped because the channel to the trace server was full.',
    registers,
    collect() {
      traceChannelDropped.reset();
      traceChannelDropped.inc(source.traceChannelDropped?.() ?? 0);
    },
  });

  collectDefaultMetrics({ register: registry });
  // Gauges named like counters fail `promtool check metrics`; each is the sum
  // of its labelled sibling (sum(nodejs_active_handles) is the same number).
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  return registry;
}

// ---------------------------------------------------------------------------
// The HTTP server

/** The running metrics server. */
/** Where `nfqlb flowlb|lb` serves metrics unless --metrics_address says otherwise. */
export const DEFAULT_METRICS_ADDRESS = '0.0.0.0:9657';

export interface MetricsServer {
  /** Where it listens, `HOST:PORT` with the actual port (IPv6 in brackets), for logs. */
  readonly address: string;
  /** The host as given (brackets removed). */
  readonly host: string;
  /** The actual port: the kernel's choice when 0 was asked for (tests). */
  readonly port: number;
  /** The registry served on /metrics (to add metrics or scrape without HTTP). */
  readonly registry: Registry;
  /** Stops listening and drops open connections (keep-alive included); resolves when closed. Idempotent. */
  close(): Promise<void>;
}

/**
 * Parses `HOST:PORT` (`[v6]:PORT` for IPv6) into host and port. Throws
 * NfqlbError NFQLB_ERR_METRICS_ADDRESS with the accepted forms. `off` is not
 * an address: the caller handles it before calling.
 */
export function parseMetricsAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]\s]+)\]:(\d{1,5})$/.exec(address) ?? /^([^:[\]\s]+):(\d{1,5})$/.exec(address);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || port > 65535) {
    throw new NfqlbError(
      `invalid metrics address "${address}": expected HOST:PORT (e.g. 0.0.0.0:9657), [IPv6]:PORT (e.g. [::]:9657) or off`,
      'NFQLB_ERR_METRICS_ADDRESS',
    );
  }
  return { host: m[1], port };
}

/** What to do about a listen error, by errno. */
function listenAdvice(code: string | undefined): string {
  switch (code) {
    case 'EADDRINUSE':
      return 'address already in use (another nfqlb or exporter?); pick another --metrics_address or use --metrics_address=off';
    case 'EACCES':
      return 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE); pick a port >= 1024 with --metrics_address, or use --metrics_address=off';
    case 'EADDRNOTAVAIL':
      return 'no local interface has this address; use 0.0.0.0, [::] or an address of this host in --metrics_address, or use --metrics_address=off';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not resolved; give an IP address in --metrics_address, or use --metrics_address=off';
    default:
      return 'fix --metrics_address or use --metrics_address=off';
  }
}

const TEXT = 'text/plain; charset=utf-8';

/** The OpenMetrics 1.0 media type (what Prometheus asks for first when it may). */
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

/** Whether an Accept header asks for OpenMetrics (any q > 0). */
export function wantsOpenMetrics(accept: string | undefined): boolean {
  if (accept === undefined) return false;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.split(';').map((p) => p.trim().toLowerCase());
    if (type !== 'application/openmetrics-text') continue;
    const q = params.find((p) => p.startsWith('q='));
    if (q === undefined || Number(q.slice(2)) > 0) return true;
  }
  return false;
}

/** Whether an Accept-Encoding header allows gzip (any q > 0). */
export function acceptsGzip(acceptEncoding: string | undefined): boolean {
  if (acceptEncoding === undefined) return false;
  for (const part of acceptEncoding.split(',')) {
    const [coding, ...params] = part.split(';').map((p) => p.trim().toLowerCase());
    if (coding !== 'gzip' && coding !== 'x-gzip') continue;
    const q = params.find((p) => p.startsWith('q='));
    if (q === undefined || Number(q.slice(2)) > 0) return true;
  }
  return false;
}

function omEscapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function omValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/**
 * The registry in OpenMetrics 1.0 text. Written here from getMetricsAsJSON()
 * because prom-client's own OpenMetrics output needs a registry created for it
 * and renames the counters it formats (it strips `_total` from each metric
 * object for good), which would break the next text-format scrape. Counter
 * families are named without `_total`, their samples with it, as the format
 * requires; the text ends with `# EOF`.
 */
export async function openMetricsText(registry: Registry): Promise<string> {
  type Family = { name: string; help: string; type: string; values: { value: number; labels: Record<string, string | number | undefined>; metricName?: string }[] };
  const families = (await registry.getMetricsAsJSON()) as unknown as Family[];
  let out = '';
  for (const m of families) {
    const counter = m.type === 'counter';
    const family = counter ? m.name.replace(/_total$/, '') : m.name;
    const type = m.type === 'histogram' || m.type === 'gauge' || counter || m.type === 'summary' ? m.type : 'unknown';
    out += `# TYPE ${family} ${type}\n# HELP ${family} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}\n`;
    for (const v of m.values) {
      const sample = v.metricName ?? (counter ? `${family}_total` : m.name);
      const labels = Object.entries(v.labels)
        .filter(([, lv]) => lv !== undefined)
        .map(([k, lv]) => `${k}="${omEscapeLabel(String(lv))}"`)
        .join(',');
      out += `${sample}${labels === '' ? '' : `{${labels}}`} ${omValue(v.value)}\n`;
    }
  }
  return `${out}# EOF\n`;
}

/**
 * Starts the metrics HTTP server on `address` (`HOST:PORT`, `[v6]:PORT`; port 0
 * picks a free one) and resolves once it listens.
 *
 * Routes: `GET /metrics` Prometheus text format from a private Registry
 * (createMetricsRegistry(source)); `GET /healthz` 200 `ok` while the process
 * runs; `GET /readyz` 200 `ready` when source.ready(), else 503 `not ready`.
 * HEAD is accepted wherever GET is (HTTP requires it; no body is sent).
 * Query strings are ignored. Unknown path → 404; known path with another
 * method → 405 with `Allow: GET, HEAD`. A scrape that throws → 500 (logged).
 *
 * Errors: a bad address → NFQLB_ERR_METRICS_ADDRESS; a listen failure →
 * NfqlbError NFQLB_ERR_METRICS_LISTEN whose message says what to do (errno
 * kept in `.errno`, e.g. EADDRINUSE). Nothing is left listening on failure.
 */
export async function startMetricsServer(
  address: string,
  source: MetricsSource,
  log?: MetricsLog,
  options: Omit<MetricsOptions, 'log'> = {},
): Promise<MetricsServer> {
  const { host, port } = parseMetricsAddress(address);
  const registry = createMetricsRegistry(source, { ...options, log });

  const reply = (res: http.ServerResponse, status: number, body: string, headers: http.OutgoingHttpHeaders = {}): void => {
    res.writeHead(status, { 'Content-Type': TEXT, 'Content-Length': Buffer.byteLength(body), ...headers });
    res.end(body);
  };

  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') {
      reply(res, 404, 'not found: try /metrics, /healthz or /readyz\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      reply(res, 405, 'method not allowed: use GET\n', { Allow: 'GET, HEAD' });
      return;
    }
    if (path === '/healthz') {
      // Answering at all is the proof of life: the event loop turns.
      reply(res, 200, 'ok\n');
      return;
    }
    if (path === '/readyz') {
      let ready = false;
      try {
        ready = source.ready();
      } catch (err) {
        log?.warn({ err: (err as Error).message }, 'metrics: ready() threw; answering not ready');
      }
      reply(res, ready ? 200 : 503, ready ? 'ready\n' : 'not ready\n');
      return;
    }
    const openMetrics = wantsOpenMetrics(req.headers.accept);
    const gzip = acceptsGzip(req.headers['accept-encoding']);
    log?.debug?.({ openMetrics, gzip }, 'metrics: scrape');
    (source.refresh === undefined ? Promise.resolve() : source.refresh())
      .then(() => (openMetrics ? openMetricsText(registry) : registry.metrics()))
      .then(
      (text) => {
        const type = openMetrics ? OPENMETRICS_CONTENT_TYPE : registry.contentType;
        if (!gzip) {
          reply(res, 200, text, { 'Content-Type': type, Vary: 'Accept, Accept-Encoding' });
          return;
        }
        // Synchronous: a scrape is tens of KB, compressed in well under a millisecond.
        const body = zlib.gzipSync(text);
        res.writeHead(200, { 'Content-Type': type, 'Content-Encoding': 'gzip', 'Content-Length': body.length, Vary: 'Accept, Accept-Encoding' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        log?.warn({ err: (err as Error).message }, 'metrics: scrape failed');
        reply(res, 500, 'scrape failed; see the nfqlb log\n');
      },
    );
  });
  // A scrape endpoint needs no patience: a client that dribbles its headers
  // must not hold a socket for Node's default 60 s / 300 s.
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      server.close();
      reject(
        new NfqlbError(`cannot serve metrics on ${address}: ${listenAdvice(err.code)} (${err.message})`, 'NFQLB_ERR_METRICS_LISTEN', { cause: err }),
      );
    };
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // After listening, errors are per-connection trouble, not fatal: log them.
  server.on('error', (err) => log?.warn({ err: err.message }, 'metrics: server error'));

  const actualPort = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]:${actualPort}` : `${host}:${actualPort}`;
  log?.info({ address: shown }, 'metrics: listening');

  let closing: Promise<void> | null = null;
  return {
    address: shown,
    host,
    port: actualPort,
    registry,
    close(): Promise<void> {
      if (closing === null) {
        closing = new Promise<void>((resolve) => {
          server.close(() => resolve());
          // server.close() waits for idle keep-alive sockets (a Prometheus
          // scraper keeps one open): drop them so shutdown is prompt.
          server.closeAllConnections();
        });
      }
      return closing;
    },
  };
}
