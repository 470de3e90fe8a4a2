/**
 * The counters of one packet thread (src/daemon/packetthread.ts), laid out in a
 * SharedArrayBuffer that the thread writes and the main thread reads.
 *
 * One writer per buffer (its packet thread), one reader (the main thread, at
 * scrape time or once a second for the failure log), so plain typed-array
 * stores and loads are enough: a Float64 store is one aligned 8-byte write,
 * which the reader sees whole; a value a batch old is fine for a counter.
 * Nothing here is posted as a message: the packet path pays for a counter what
 * an array store costs, and the main thread sums the workers' arrays
 * (sumThreadCounters) into the arrays it already exports (daemon.ts).
 *
 * Layout (Float64 each): accepted[Q] dropped[Q] reasons[R] batchBuckets[B+1]
 * batchTotals[2: sum, count] queueStats[Q × QUEUE_STAT_FIELDS] trace[1: lines
 * dropped by the trace channel] fragmentStats[FRAG_STATS_FIELDS]
 * fragmentStore[FSTORE_FIELDS] tunErrno[1]. The fragment arrays are the
 * thread's FragmentTable.stats and FragmentStore.counters themselves (the
 * Pipeline counts straight into the shared memory, nothing is copied per
 * batch). Q is the number of queues of the whole
 * daemon (a thread writes only the entries of its own queues), R the decision
 * reasons, B the batch size buckets.
 */
import { BatchSizeHistogram } from '../base/counters';
import { FRAG_STATS_FIELDS } from '../fragments/tablestats';
import { FSTORE_FIELDS } from '../fragments/store';
import { REASON_NAMES } from '../datapath/pipeline';

// The numbers of the addon's QueueStats a thread copies for the main thread (lastErrno as C's positive errno, 0: none).
import { QUEUE_STAT_FIELDS, type QueueStatField } from '../addon/queue';

export class ThreadCounters {
  readonly buffer: SharedArrayBuffer;
  /** Packets accepted / dropped, by queue index (daemon-wide, as DaemonOptions.queues). */
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
  /** Packets by REASON_*: the thread's Pipeline counts here (PipelineOptions.reasonCounts). */
  readonly reasons: Float64Array;
  /** Batch size histogram: bucket counts (not cumulative), then [sum, count]. */
  readonly batchBuckets: Float64Array;
  readonly batchTotals: Float64Array;
  /** QUEUE_STAT_FIELDS per queue index. */
  readonly queueStats: Float64Array;
  /** [0]: trace lines the bounded trace channel dropped. */
  readonly trace: Float64Array;
  /** The thread's fragment table statistics (FS_*): given to its Pipeline as fragmentStats. */
  readonly fragmentStats: Float64Array;
  /** The thread's fragment store counters (FSTORE_*): given to its Pipeline as fragmentStoreCounters. */
  readonly fragmentStore: Float64Array;
  /** [0]: errno (C's positive) of the thread's last failed tun write; 0: none. */
  readonly tunErrno: Float64Array;

  /** Bytes needed for a daemon with `queues` queues. */
  static bytes(queues: number): number {
    return 8 * (2 * queues + REASON_NAMES.length + BatchSizeHistogram.BUCKETS + 2 + queues * QUEUE_STAT_FIELDS.length + 1 + FRAG_STATS_FIELDS + FSTORE_FIELDS + 1);
  }

  /** Views over `buffer` (a new zeroed one when left out) for `queues` queues. */
  constructor(
    readonly queues: number,
    buffer: SharedArrayBuffer = new SharedArrayBuffer(ThreadCounters.bytes(queues)),
  ) {
    if (buffer.byteLength < ThreadCounters.bytes(queues)) throw new RangeError(`thread counters need ${ThreadCounters.bytes(queues)} bytes`);
    this.buffer = buffer;
    let off = 0;
    const take = (n: number): Float64Array => {
      const a = new Float64Array(buffer, off, n);
      off += 8 * n;
      return a;
    };
    this.accepted = take(queues);
    this.dropped = take(queues);
    this.reasons = take(REASON_NAMES.length);
    this.batchBuckets = take(BatchSizeHistogram.BUCKETS);
    this.batchTotals = take(2);
    this.queueStats = take(queues * QUEUE_STAT_FIELDS.length);
    this.trace = take(1);
    this.fragmentStats = take(FRAG_STATS_FIELDS);
    this.fragmentStore = take(FSTORE_FIELDS);
    this.tunErrno = take(1);
  }

  /** The thread's batch size histogram, counting straight into this shared memory. */
  batchSizeHistogram(): BatchSizeHistogram {
    return new BatchSizeHistogram(this.batchBuckets, this.batchTotals);
  }

  /** Stores the addon's stats of queue index `qi` (off the packet path: stats() allocates). */
  publishQueueStats(qi: number, stats: Record<QueueStatField, number | null>): void {
    const base = qi * QUEUE_STAT_FIELDS.length;
    for (let f = 0; f < QUEUE_STAT_FIELDS.length; f++) {
      const v = stats[QUEUE_STAT_FIELDS[f]];
      this.queueStats[base + f] = v === null ? 0 : Math.abs(v);
    }
  }

  /** One stat of queue index `qi`. */
  queueStat(qi: number, field: QueueStatField): number {
    return this.queueStats[qi * QUEUE_STAT_FIELDS.length + QUEUE_STAT_FIELDS.indexOf(field)];
  }
}

/** What the main thread exports, summed over every thread. */
export interface SummedCounters {
  accepted: Float64Array;
  dropped: Float64Array;
  reasons: Float64Array;
  batchSizes: BatchSizeHistogram;
  traceDropped: number;
}

/**
 * Sums `threads` into `into` (the daemon's own arrays, so the metrics code
 * reads them as it always did). Counters of a queue come from the one thread
 * that serves it (the others hold 0 there), so the sum is that thread's count.
 * Allocates nothing.
 */
export function sumThreadCounters(threads: readonly ThreadCounters[], into: SummedCounters): void {
  into.accepted.fill(0);
  into.dropped.fill(0);
  into.reasons.fill(0);
  into.batchSizes.bucketCounts.fill(0);
  let sum = 0;
  let count = 0;
  let traceDropped = 0;
  for (const t of threads) {
    for (let i = 0; i < into.accepted.length; i++) {
      into.accepted[i] += t.accepted[i];
      into.dropped[i] += t.dropped[i];
    }
    for (let i = 0; i < into.reasons.length; i++) into.reasons[i] += t.reasons[i];
    const buckets = into.batchSizes.bucketCounts;
    for (let i = 0; i < buckets.length; i++) buckets[i] += t.batchBuckets[i];
    sum += t.batchTotals[0];
    count += t.batchTotals[1];
    traceDropped += t.trace[0];
  }
  into.batchSizes.sum = sum;
  into.batchSizes.count = count;
  into.traceDropped = traceDropped;
}

/**
 * Which queue indexes thread `t` of `threads` serves: round robin, so each
 * queue has exactly one thread and the threads differ by at most one queue.
 */
export function queuesOfThread(queueCount: number, threads: number, t: number): number[] {
  const out: number[] = [];
  for (let qi = t; qi < queueCount; qi += threads) out.push(qi);
  return out;
}
