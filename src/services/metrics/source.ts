/**
 * What the metrics read: the daemon's side of /metrics (MetricsSource and the
 * shapes of its readings), and the knobs of the registry.
 *
 * The packet path only bumps plain numbers and typed arrays
 * (src/base/counters.ts, the daemon's Float64Arrays); these views are read at
 * scrape time only, so a scrape costs O(series), whatever the packet rate.
 */
import type { BatchSizeHistogram, FwmarkCounter } from '../../base/counters';
import type { QueueProcEntry } from '../../addon/queue';
import type { FragStats } from '../../fragments/stats';

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
  /**
   * The flows that ended since the previous call (deleted, or replaced by a
   * flow-set that restarts their count), each with its count when it ended
   * and its `instance`; the source forgets them once given. A flow that
   * lived between two scrapes is then still seen: its
   * nfqlb_flow_matches_total series shows its last count in the next scrape
   * and is kept for the retention like any vanished series. Called once per
   * scrape.
   */
  endedFlows?(): readonly FlowCount[];
  /** The open target tables now. */
  targets(): readonly TargetCounts[];
  /** Packets per receive batch, one histogram for the whole process (→ nfqlb_batch_size). */
  readonly batchSizes: BatchSizeHistogram;
  /** Control requests by (action, result). */
  controlRequests(): readonly ControlRequestCount[];
  /**
   * Failures the addon counts per queue (→ nfqlb_verdict_errors_total{queue,reason}
   * for reasons in VERDICT_ERROR_REASONS (src/addon/queue.ts), nfqlb_queue_errors_total{queue,reason} for
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

/** One failure count of one queue. */
export interface QueueErrorCount {
  queueNum: number;
  portid: number;
  /** send, unsent, kernel (verdict errors); enobufs, recv, parse, truncated (queue errors). */
  reason: string;
  count: number;
}

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
