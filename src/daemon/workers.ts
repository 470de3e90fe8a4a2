/**
 * The daemon's side of --workers: its packet threads started with the
 * daemon's options and the flows accepted so far, their queues as the
 * daemon's views see them, and their counters collected into the daemon's
 * own objects (which metrics, the failure log and flow-list read as they do
 * on the single loop).
 */
import { errnoName } from '../base/errors';
import type { Logger } from '../base/log';
import type { BatchSizeHistogram } from '../base/counters';
import type { PacketQueue, QueueStats } from '../addon/queue';
import type { TraceShm } from '../addon/shm';
import type { ConnTable } from '../datapath/conntrack';
import type { FlowSet } from '../flows/flowset';
import type { ServedTable } from '../tables/servedtable';
import type { Target } from '../tables/targets';
import type { TraceServer } from '../services/trace';
import type { DaemonOptions } from './options';
import { PacketThreads } from './packetthreads';
import { TABLE_CHECK_INTERVAL_MS } from './tables';
import { sumThreadCounters } from './threadcounters';
import type { FlowOp } from './threadmessages';

/** A queue as the daemon's views see it: its own PacketQueue, or one a packet thread holds. */
export type QueueView = Pick<PacketQueue, 'queueNum' | 'portid' | 'closed' | 'stats' | 'close'>;

export interface ThreadStart {
  readonly options: DaemonOptions;
  readonly log: Logger;
  /** The --tun device's fd (-1: none). */
  readonly tunFd: number;
  /** The trace shm, and whether it is shared (threads map it by name) or private to this process (the mask goes through the threads' state). */
  readonly trace: TraceShm | null;
  readonly traceShared: boolean;
  readonly connTables: readonly ConnTable[];
  /** The flow changes accepted before the start: taken as the threads' initial set. */
  readonly changes: FlowOp[];
  tracer(): TraceServer | null;
  /** A thread died: the daemon can no longer serve its queues. */
  onFatal(err: Error): void;
}

/**
 * Starts the packet threads with the flows accepted so far and waits until
 * each has bound its queues; prints nfqlb's line per queue as a single loop
 * does, and pushes a view of each onto `queues`. Throws the first thread's
 * bind error (the same one line).
 */
export async function startPacketThreads(c: ThreadStart, queues: QueueView[]): Promise<PacketThreads> {
  const o = c.options;
  const { fixedTarget: _f, lbTier: _t, fragmentStats: _s, fragmentStoreCounters: _c, ...pipeline } = o.pipeline;
  const initialOps = c.changes.splice(0);
  const threads = await PacketThreads.start(
    Math.min(o.workers ?? 1, o.queues.length),
    {
      mode: o.mode, queues: o.queues, qlength: o.qlength, mtu: o.mtu, batchSize: o.batchSize, failOpen: o.failOpen, rcvbuf: o.rcvbuf,
      promiscuousPing: o.promiscuousPing, pipeline, tshm: o.tshm, lbshm: o.lbshm, tunFd: c.tunFd, tableCheckMs: o.tableCheckMs ?? TABLE_CHECK_INTERVAL_MS,
      traceShm: c.traceShared ? c.trace!.name : null, initialOps,
      conntrack: c.connTables.length === 0 ? null : {
        perThread: c.connTables[0].capacity, streamTtlMs: o.conntrack!.streamTtlMs, otherTtlMs: o.conntrack!.otherTtlMs,
        buffers: c.connTables.map((t) => t.buffer as SharedArrayBuffer),
      },
    },
    {
      trace: (text) => c.tracer()?.traceLines(text),
      died: (err) => {
        c.log.fatal({ err: err.message }, 'packet thread died; its queues are no longer answered');
        c.onFatal(err);
      },
    },
  );
  for (const b of threads.bound) {
    process.stdout.write(`queue_length=${b.qlength}, mtu=${b.copyRange}, SO_RCVBUF=${b.rcvbufActual} (${b.rcvbuf})\n`);
    const qi = b.qi;
    queues.push({
      queueNum: b.queueNum,
      portid: b.portid,
      get closed() {
        return !threads.alive;
      },
      stats: () => {
        const s = threads.queueStats(qi);
        const errno = s.lastErrno === 0 ? null : -s.lastErrno;
        return { ...s, lastErrno: errno, lastErrnoName: errno === null ? null : errnoName(errno) } satisfies QueueStats;
      },
      close: () => {},
    });
  }
  return threads;
}

/** The daemon's own counters the threads' are summed into. */
export interface FoldedCounters {
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
  readonly reasons: Float64Array;
  readonly batchSizes: BatchSizeHistogram;
}

/** Sums the threads' shared counters into the daemon's arrays (what metrics and the failure log read); returns the trace lines the channel dropped. */
export function foldThreadCounters(threads: PacketThreads, into: FoldedCounters): number {
  const sums = { ...into, traceDropped: 0 };
  sumThreadCounters(threads.counters, sums);
  return sums.traceDropped;
}

/**
 * Collects the threads' counts with unbounded keys into the daemon's objects:
 * flow and trace-flow matches (by position, when every thread answered for
 * the current generation of flows), fwmarks and no-target counts per target.
 * `fold` is called once the threads answered (their shared counters then).
 */
export async function collectFromThreads(
  threads: PacketThreads,
  flows: FlowSet<Target<ServedTable>>,
  traceFlows: FlowSet<string>,
  served: () => Target<ServedTable>[],
  fold: () => void,
): Promise<void> {
  const gen = threads.generation;
  const pubs = await threads.publish();
  fold();
  const all = pubs.every((p) => p !== null && p.gen === gen);
  const sumInto = (list: readonly { matches: number }[], pick: (p: NonNullable<(typeof pubs)[number]>) => Float64Array): void => {
    if (!all || pubs.some((p) => pick(p!).length !== list.length)) return;
    for (let i = 0; i < list.length; i++) {
      let n = 0;
      for (const p of pubs) n += pick(p!)[i];
      list[i].matches = n;
    }
  };
  sumInto(flows.flows, (p) => p.flowMatches);
  sumInto(traceFlows.flows, (p) => p.traceMatches);
  for (const t of served()) {
    const sums = new Map<number, number>();
    let noTarget = 0;
    for (const p of pubs) {
      const pt = p?.targets.find((x) => x.name === t.name);
      if (pt === undefined) continue;
      pt.fwmarks.forEach((fw, i) => sums.set(fw, (sums.get(fw) ?? 0) + pt.counts[i]));
      noTarget += pt.noTarget;
    }
    if (noTarget > t.noTarget) t.noTarget = noTarget;
    for (const [fw, n] of sums) {
      const delta = n - t.fwmarks.get(fw);
      if (delta > 0) t.fwmarks.add(fw, delta);
    }
  }
}
