/**
 * A packet thread (`--workers=N`, N ≥ 2): the body of one worker_threads
 * Worker that serves some of the daemon's queues with its own event loop,
 * its own netlink socket (one for all its queues; one per queue with
 * NFQLB_QUEUE_SOCKETS=queue) and batches, and its own Pipeline, built here from
 * the plain options in workerData. The main thread (packetthreads.ts, used by
 * daemon.ts) keeps the control socket, metrics, trace server, logs,
 * configuration and the flows file.
 *
 * What reaches this thread, and how:
 * - Tables: mapped here by name from /dev/shm (its own TargetRegistry of
 *   ServedTables, checked on a timer and after a repaired SIGBUS like the
 *   main thread's). Nothing is shared but the files.
 * - Flows: the main thread's FlowSet is the source of truth. Every change it
 *   accepted (flow-set, flow-delete, trace-flow-set/-delete) comes as a
 *   `flows` message with a generation number and is applied here with the
 *   same FlowSet code; FlowSet changes are copy-on-write (a new flow list and
 *   index), and a message is handled by this event loop between two batch
 *   callbacks, so every batch is decided by one whole generation. The `ack`
 *   tells the main thread this thread now uses it; only then is the client
 *   answered OK.
 * - Counters: ThreadCounters in a SharedArrayBuffer, written per batch, read
 *   by the main thread. Per flow and per fwmark counts (unbounded key sets)
 *   are copied out on a `publish` request, at scrape or list time only.
 * - Trace: the per-packet mask is the nfqlb-trace shm mask (mapped here),
 *   gated by a flag the main thread sets while a trace client listens; with
 *   no client the batch handler does no trace work. Lines go to the main
 *   thread's TraceServer in one message per batch through a bounded channel:
 *   past TRACE_CHANNEL_BYTES in flight, lines are dropped and counted.
 */
import { isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { bytesToText } from '../services/control';
import { BatchSizeHistogram } from '../base/counters';
import { ConnTable, type ConnTableOptions } from '../datapath/conntrack';
import { NfqlbError } from '../base/errors';
import { setThreadName } from '../addon/process';
import type { FlowCmd } from '../flows/fields';
import { FlowSet } from '../flows/flowset';
import { Pipeline, REASON_NO_TARGET, REASON_TARGET, type PipelineOptions } from '../datapath/pipeline';
import { PacketQueue, VERDICT_DROP, type QueueBatch } from '../addon/queue';
import { ServedTable } from '../tables/servedtable';
import { closeTraceShm, openTraceShm, shmFaultCounter, type TraceShm } from '../addon/shm';
import { daemonTableOwners, openTable, trustTableOwners } from '../tables/tablefile';
import { Target, TargetRegistry, type LookupTable, type TableSource } from '../tables/targets';
import { ThreadCounters } from './threadcounters';
import { formatPacketTrace, TRACE_PER_PACKET } from '../services/trace';
import { flushReinjections } from '../addon/tun';

/** Most trace bytes posted by all threads and not yet taken by the main thread; beyond, lines are dropped (counted). */
export const TRACE_CHANNEL_BYTES = 4 * 1024 * 1024;

/** How often a thread frees the expired entries of its fragment table (ms). */
export const FRAGMENT_SWEEP_MS = 1000;
/** Expired --conntrack entries freed per sweep at most, so a mass expiry never stalls a thread (the rest go next time, or as new connections need room). */
export const CONNTRACK_SWEEP_BUDGET = 65536;

/** Words of the Int32Array over PacketThreadData.traceState. */
export const TRACE_STATE_ACTIVE = 0; // 1 while a trace client listens (main thread writes)
export const TRACE_STATE_INFLIGHT = 1; // trace bytes posted, not yet taken (threads add, main subtracts)
export const TRACE_STATE_MASK = 2; // the mask when the trace shm is private to the main thread
export const TRACE_STATE_WORDS = 3;

/** What a packet thread gets as workerData: plain, structured-clonable values only. */
export interface PacketThreadData {
  readonly kind: 'nfqlb-packet-thread';
  readonly index: number;
  readonly mode: 'flowlb' | 'lb';
  /** Every queue of the daemon; this thread serves the indexes in `serve`. */
  readonly queues: number[];
  readonly serve: number[];
  readonly qlength: number;
  readonly mtu: number;
  readonly batchSize: number;
  readonly failOpen: boolean;
  readonly rcvbuf?: number;
  /**
   * One netlink socket for all the queues this thread serves (else one per
   * queue). NFQLB_QUEUE_SOCKETS=queue|thread picks it (queueSocketsFromEnv).
   */
  readonly socketPerThread?: boolean;
  readonly promiscuousPing: boolean;
  readonly pipeline: Partial<Omit<PipelineOptions, 'fixedTarget' | 'lbTier' | 'fragmentStats' | 'fragmentStoreCounters' | 'reasonCounts'>>;
  readonly tshm?: string;
  readonly lbshm?: string;
  /** The --tun device's fd (opened once by the main thread; fds are valid in every thread), -1: none. */
  readonly tunFd: number;
  /** ms between table checks (0: never). */
  readonly tableCheckMs: number;
  readonly counters: SharedArrayBuffer;
  readonly traceState: SharedArrayBuffer;
  /** The trace shm name to map, or null when the main thread's is private (mask then in traceState). */
  readonly traceShm: string | null;
  /** Flow changes accepted before this thread started (e.g. from --flows_file), in order. */
  readonly initialOps: FlowOp[];
  /** --conntrack: this thread's table is over buffers[index] (the main thread reads it for metrics and `nfqlb conntrack`). */
  readonly conntrack: (ConnTableOptions & { perThread: number; buffers: SharedArrayBuffer[] }) | null;
}

/** One accepted flow change, as the main thread applied it. */
export type FlowOp =
  | { op: 'set'; cmd: FlowCmd }
  | { op: 'delete'; name: string | undefined }
  | { op: 'trace-set'; cmd: FlowCmd & { name: string } }
  | { op: 'trace-delete'; name: string };

/** Main thread → packet thread. */
export type ToThread =
  | { t: 'start' }
  | { t: 'flows'; gen: number; ops: FlowOp[] }
  | { t: 'publish'; id: number }
  | { t: 'stop' };

/** Per-target fwmark counts, as published. */
export interface PublishedTarget {
  name: string;
  fwmarks: number[];
  counts: number[];
  /** Packets of this table's flows dropped (or sent to notargets_fwmark) for want of an active target. */
  noTarget: number;
}

/** Packet thread → main thread. */
export type FromThread =
  | { t: 'bound'; queues: { qi: number; queueNum: number; portid: number; qlength: number; copyRange: number; rcvbuf: number; rcvbufActual: number }[] }
  | { t: 'error'; message: string; code: string }
  | { t: 'ack'; gen: number; failures: string[] }
  | { t: 'published'; id: number; gen: number; flowMatches: Float64Array; traceMatches: Float64Array; targets: PublishedTarget[] }
  | { t: 'trace'; text: string }
  | { t: 'stopped' };

/** Where trace text of a batch goes; the channel is bounded (see TRACE_CHANNEL_BYTES). */
export interface TraceSink {
  /** The per-packet bits to trace this batch: 0 with no client (then nothing else is called). */
  perPacketMask(): number;
  send(text: string): void;
}

/** Where a batch handler counts: ThreadCounters in a packet thread, the daemon's own arrays on the single loop. */
export interface BatchCounters {
  /** Packets accepted / dropped, by queue index. */
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
}

/**
 * The batch handler of one queue (index `qi`), for a packet thread and for
 * the daemon's single loop alike. One pipeline decision per packet; per
 * packet no allocation, no message. Trace text is built only for batches
 * with a non-zero mask. Kept fragments whose first fragment came in the
 * batch are written to the tun device `tunFd` in one native call after the
 * decisions (the copies come back through the same queue, so to the same
 * thread and fragment table); a failed write leaves its errno in tunErrno[0].
 */
export function makeBatchHandler<T extends LookupTable>(
  pipeline: Pipeline<T>,
  counters: BatchCounters,
  batchSizes: BatchSizeHistogram,
  qi: number | readonly number[],
  trace: TraceSink | null,
  traceFlows: FlowSet<string> | null,
  afterBatch: () => void,
  tunFd = -1,
  tunErrno: Int32Array = new Int32Array(1),
): (batch: QueueBatch) => void {
  const last = pipeline.last;
  const accepted = counters.accepted;
  const dropped = counters.dropped;
  const store = pipeline.fragmentStore;
  const clock = pipeline.clock;
  // One socket for several queues: packet i counts for queue index qis[queueIndex[i]].
  const qis = typeof qi === 'number' ? [qi] : qi;
  const multi = qis.length > 1;
  const qi0 = qis[0];
  // Per batch here, added to the shared counters once per batch: a store per packet into the
  // SharedArrayBuffer the main thread reads cost measurably more than this.
  const accBy = new Float64Array(qis.length);
  const pktBy = new Float64Array(qis.length);
  return (batch: QueueBatch): void => {
    clock[0] = performance.now();
    const n = batch.count;
    const packets = batch.packets;
    const offsets = batch.offsets;
    const lengths = batch.lengths;
    const verdicts = batch.verdicts;
    const queueIndex = batch.queueIndex;
    const traceMask = trace === null ? 0 : trace.perPacketMask();
    let text = '';
    let acc = 0;
    for (let i = 0; i < n; i++) {
      const fw = pipeline.decideNow(packets, offsets[i] | 0, lengths[i] | 0);
      if (multi) pktBy[queueIndex[i]]++;
      if (fw >= 0) {
        verdicts[i] = fw;
        acc++;
        if (multi) accBy[queueIndex[i]]++;
        if (last.reason === REASON_TARGET) last.target!.fwmarks.add(fw);
      } else {
        verdicts[i] = VERDICT_DROP;
      }
      // Per table, so an operator sees which table ran out of targets (nfqlb_table_no_target_total).
      if (last.reason === REASON_NO_TARGET) last.target!.noTarget++;
      if (traceMask !== 0) text += formatPacketTrace(traceMask, traceFlows, pipeline.info, packets, offsets[i], lengths[i], last);
    }
    if (store !== null && store.pendingCount > 0) flushReinjections(tunFd, store, tunErrno);
    if (!multi) {
      accepted[qi0] += acc;
      dropped[qi0] += n - acc;
    } else {
      for (let k = 0; k < qis.length; k++) {
        accepted[qis[k]] += accBy[k];
        dropped[qis[k]] += pktBy[k] - accBy[k];
        accBy[k] = 0;
        pktBy[k] = 0;
      }
    }
    batchSizes.observe(n);
    if (text !== '') trace!.send(text);
    afterBatch();
  };
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

/** The trace sink of a thread: reads the mask, posts batches of lines while the channel has room. */
export function traceChannel(port: Pick<MessagePort, 'postMessage'>, state: Int32Array, shm: TraceShm | null, counters: ThreadCounters, limit = TRACE_CHANNEL_BYTES): TraceSink {
  return {
    perPacketMask(): number {
      if (Atomics.load(state, TRACE_STATE_ACTIVE) === 0) return 0;
      const mask = shm !== null ? shm.mask : Atomics.load(state, TRACE_STATE_MASK) >>> 0;
      return (mask & TRACE_PER_PACKET) >>> 0;
    },
    send(text: string): void {
      if (Atomics.load(state, TRACE_STATE_INFLIGHT) + text.length > limit) {
        counters.trace[0] += countLines(text);
        return;
      }
      Atomics.add(state, TRACE_STATE_INFLIGHT, text.length);
      port.postMessage({ t: 'trace', text } satisfies FromThread);
    },
  };
}

/** Tables by name from /dev/shm; failures are the main thread's to log (it opens the same files). */
function shmTables(): TableSource<ServedTable> {
  return {
    open(name) {
      try {
        const file = bytesToText(name);
        return new ServedTable(file, openTable(file));
      } catch {
        return null;
      }
    },
    close(_name, table) {
      table.close();
    },
  };
}

/** The thread's state; exported for tests that drive it without a Worker. */
export class PacketThread {
  readonly targets = new TargetRegistry<ServedTable>(shmTables());
  readonly flows: FlowSet<Target<ServedTable>>;
  readonly traceFlows = new FlowSet<string>({ promiscuousPing: true });
  readonly pipeline: Pipeline<ServedTable>;
  readonly counters: ThreadCounters;
  /** The sockets: each serves the queue indexes `qis` (qi = qis[0]). */
  readonly queues: { qi: number; qis: number[]; queue: PacketQueue }[] = [];
  readonly batchSizes: BatchSizeHistogram;
  /** The last generation of flows applied. */
  gen = 0;
  private readonly fixed: Target<ServedTable> | null = null;
  private readonly tier: ServedTable | null = null;
  private readonly busFaults = shmFaultCounter();
  private seenBusFaults: number;
  private timer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  /** errno of this thread's last failed tun write (the addon writes it; copied to counters.tunErrno per batch). */
  private readonly tunErrno = new Int32Array(1);
  private trace: TraceShm | null = null;

  constructor(
    readonly data: PacketThreadData,
    private readonly port: Pick<MessagePort, 'postMessage'>,
  ) {
    trustTableOwners(daemonTableOwners()); // as the main thread: each thread has its own module state
    this.seenBusFaults = this.busFaults[0];
    this.counters = new ThreadCounters(data.queues.length, data.counters);
    this.batchSizes = this.counters.batchSizeHistogram();
    this.flows = new FlowSet<Target<ServedTable>>({ targetName: (t) => t.name, promiscuousPing: data.promiscuousPing });
    if (data.mode === 'lb') {
      const name = data.tshm ?? 'nfqlb';
      this.fixed = new Target(name, new ServedTable(name, openTable(name)));
      this.fixed.refs = 1;
    }
    let lbTier: { table: ServedTable; readonly ownFwmark: number } | null = null;
    if (data.lbshm !== undefined) {
      const table = new ServedTable(data.lbshm, openTable(data.lbshm));
      this.tier = table;
      lbTier = {
        table,
        get ownFwmark() {
          return table.ownFwmark;
        },
      };
    }
    // The fragment counters live in this thread's shared counters: the main thread sums them for ftshm and metrics.
    this.pipeline = new Pipeline(data.mode === 'flowlb' ? this.flows : null, {
      ...data.pipeline,
      fixedTarget: this.fixed,
      lbTier,
      fragmentStats: this.counters.fragmentStats,
      fragmentStoreCounters: this.counters.fragmentStore,
      reasonCounts: this.counters.reasons,
      conntrack: data.conntrack === null ? null : new ConnTable(data.conntrack.perThread, data.conntrack, data.conntrack.buffers[data.index]),
    });
    for (const op of data.initialOps) this.apply(op);
  }

  /** Binds this thread's queues (throws NfqlbError as PacketQueue does; nothing stays bound then). */
  bind(): FromThread {
    const d = this.data;
    const groups = d.socketPerThread ? [d.serve] : d.serve.map((qi) => [qi]);
    try {
      for (const qis of groups) {
        const queue = new PacketQueue({
          queueNum: d.queues[qis[0]],
          queueNums: qis.map((qi) => d.queues[qi]),
          copyRange: d.mtu,
          qlength: d.qlength,
          batchSize: d.batchSize,
          failOpen: d.failOpen,
          rcvbuf: d.rcvbuf,
          defaultVerdict: VERDICT_DROP,
        });
        this.queues.push({ qi: qis[0], qis, queue });
      }
    } catch (err) {
      this.close();
      throw err;
    }
    return {
      t: 'bound',
      queues: this.queues.flatMap(({ qis, queue: q }) =>
        // nfqlb's line is per queue: a shared socket's buffer shows as its share per queue.
        qis.map((qi, k) => ({
          qi, queueNum: q.queueNums[k], portid: q.portid, qlength: q.qlength, copyRange: q.copyRange,
          rcvbuf: q.rcvbuf / qis.length, rcvbufActual: Math.floor(q.rcvbufActual / qis.length),
        })),
      ),
    };
  }

  /** Starts reading every queue. */
  start(): void {
    const d = this.data;
    const state = new Int32Array(d.traceState);
    if (d.traceShm !== null) {
      try {
        this.trace = openTraceShm(d.traceShm, false);
      } catch {
        this.trace = null; // the mask then comes from the main thread's word
      }
    }
    const sink = traceChannel(this.port, state, this.trace, this.counters);
    const traceFlows = d.mode === 'flowlb' ? this.traceFlows : null;
    const counters = this.counters;
    const tunErrno = this.tunErrno;
    const afterBatch = (): void => {
      counters.tunErrno[0] = tunErrno[0];
      if (this.busFaults[0] !== this.seenBusFaults) {
        this.seenBusFaults = this.busFaults[0];
        this.refreshTables();
      }
    };
    for (const { qis, queue } of this.queues) queue.start(makeBatchHandler(this.pipeline, counters, this.batchSizes, qis, sink, traceFlows, afterBatch, d.tunFd, tunErrno));
    this.publishQueueStats();
    // As the single loop's housekeeping: expired entries are freed without traffic, so the active count falls back.
    this.sweepTimer = setInterval(() => {
      const now = performance.now();
      this.pipeline.fragments.sweep(now);
      this.pipeline.conntrack?.sweep(now, CONNTRACK_SWEEP_BUDGET);
    }, FRAGMENT_SWEEP_MS);
    this.timer = setInterval(() => {
      this.refreshTables();
      this.publishQueueStats();
    }, d.tableCheckMs > 0 ? d.tableCheckMs : 1000);
  }

  /** Applies one accepted change; returns '' or what went differently here than in the main thread. */
  apply(op: FlowOp): string {
    switch (op.op) {
      case 'set': {
        const r = this.flows.applySet(op.cmd, this.targets);
        return r === 'OK' ? '' : r;
      }
      case 'delete':
        this.flows.applyDelete(op.name, this.targets);
        return '';
      case 'trace-set':
        return this.traceFlows.define({ ...op.cmd, target: op.cmd.name, udpencap: 0 }) ?? '';
      case 'trace-delete':
        this.traceFlows.delete(op.name);
        return '';
      default:
        return 'unknown change';
    }
  }

  /** A `flows` message: all of it is applied before the next batch. */
  applyGeneration(gen: number, ops: FlowOp[]): Extract<FromThread, { t: 'ack' }> {
    const failures: string[] = [];
    for (const op of ops) {
      const r = this.apply(op);
      if (r !== '') failures.push(r);
    }
    this.gen = gen;
    return { t: 'ack', gen, failures };
  }

  /** Counts with unbounded keys, copied at request time (scrape, flow-list): per flow in list order, per target by fwmark. */
  publish(id: number): Extract<FromThread, { t: 'published' }> {
    this.publishQueueStats();
    const flowMatches = new Float64Array(this.flows.flows.length);
    this.flows.flows.forEach((f, i) => (flowMatches[i] = f.matches));
    const traceMatches = new Float64Array(this.traceFlows.flows.length);
    this.traceFlows.flows.forEach((f, i) => (traceMatches[i] = f.matches));
    const all = this.fixed === null ? this.targets.list() : [this.fixed];
    const targets = all.map((t) => {
      const fwmarks: number[] = [];
      const counts: number[] = [];
      t.fwmarks.forEach((fw, c) => {
        fwmarks.push(fw);
        counts.push(c);
      });
      return { name: t.name, fwmarks, counts, noTarget: t.noTarget };
    });
    return { t: 'published', id, gen: this.gen, flowMatches, traceMatches, targets };
  }

  /** A socket's counters go to its first queue index (the socket's, not one queue's, when it serves several). */
  publishQueueStats(): void {
    for (const { qi, queue } of this.queues) {
      if (!queue.closed) this.counters.publishQueueStats(qi, queue.stats());
    }
  }

  refreshTables(): void {
    const all = this.targets.list().map((t) => t.table);
    if (this.fixed !== null) all.push(this.fixed.table);
    if (this.tier !== null) all.push(this.tier);
    for (const table of all) table.check();
  }

  /** Unbinds the queues and closes the tables. Idempotent. */
  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    for (const { queue } of this.queues) queue.close();
    for (const t of this.targets.list()) t.table.close();
    if (this.fixed !== null) this.fixed.table.close();
    if (this.tier !== null) this.tier.close();
    if (this.trace !== null) closeTraceShm(this.trace);
    this.trace = null;
  }
}

/** The worker's main: build, bind, tell, then serve messages until `stop`. */
function runThread(port: MessagePort, data: PacketThreadData): void {
  let thread: PacketThread;
  try {
    // Named, so per-thread CPU (bench, top -H, perf) shows each packet thread's share.
    setThreadName(`nfqlb-pkt${data.index}`);
    thread = new PacketThread(data, port);
    port.postMessage(thread.bind());
  } catch (err) {
    const e = err as Error;
    port.postMessage({ t: 'error', message: e.message, code: err instanceof NfqlbError ? err.code : 'NFQLB_ERR_THREAD' } satisfies FromThread);
    port.close();
    return;
  }
  port.on('message', (m: ToThread) => {
    switch (m.t) {
      case 'start':
        thread.start();
        break;
      case 'flows':
        port.postMessage(thread.applyGeneration(m.gen, m.ops));
        break;
      case 'publish': {
        const reply = thread.publish(m.id);
        port.postMessage(reply, [reply.flowMatches.buffer as ArrayBuffer, reply.traceMatches.buffer as ArrayBuffer]);
        break;
      }
      case 'stop':
        thread.close();
        port.postMessage({ t: 'stopped' } satisfies FromThread);
        port.close();
        break;
      default:
    }
  });
}

if (!isMainThread && parentPort !== null && (workerData as PacketThreadData | undefined)?.kind === 'nfqlb-packet-thread') {
  runThread(parentPort, workerData as PacketThreadData);
}
