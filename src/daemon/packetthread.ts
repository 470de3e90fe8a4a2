/**
 * A packet thread (`--workers=N`, N ≥ 2): the body of one worker_threads
 * Worker that serves some of the daemon's queues with its own event loop,
 * its own netlink socket (one for all its queues; one per queue with
 * NFQLB_QUEUE_SOCKETS=queue) and batches, and its own Pipeline, built here from
 * the plain options in workerData. The main thread (packetthreads.ts, used by
 * workers.ts) keeps the control socket, metrics, trace server, logs,
 * configuration and the flows file.
 *
 * What reaches this thread, and how:
 * - Tables: mapped here by name from /dev/shm (its own DaemonTables of
 *   tables.ts: ServedTables, checked on a timer and after a repaired SIGBUS
 *   like the main thread's, silently). Nothing is shared but the files.
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
 * - Trace: through the bounded trace channel (tracechannel.ts); with no
 *   client the batch handler does no trace work.
 *
 * The batch handler itself is the hot path's (src/datapath/batch.ts); the
 * messages are in threadmessages.ts.
 */
import { isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { BatchSizeHistogram } from '../base/counters';
import { ConnTable } from '../datapath/conntrack';
import { NfqlbError } from '../base/errors';
import { setThreadName } from '../addon/process';
import { FlowSet } from '../flows/flowset';
import { Pipeline } from '../datapath/pipeline';
import { PacketQueue, VERDICT_DROP } from '../addon/queue';
import type { ServedTable } from '../tables/servedtable';
import { closeTraceShm, openTraceShm, type TraceShm } from '../addon/shm';
import { daemonTableOwners, trustTableOwners } from '../tables/tablefile';
import type { Target, TargetRegistry } from '../tables/targets';
import { makeBatchHandler } from '../datapath/batch';
import { ThreadCounters } from './threadcounters';
import { BusFaultWatch, DaemonTables } from './tables';
import { traceChannel } from './tracechannel';
import type { FlowOp, FromThread, PacketThreadData, ToThread } from './threadmessages';

/** How often a thread frees the expired entries of its fragment table (ms). */
export const FRAGMENT_SWEEP_MS = 1000;
/** Expired --conntrack entries freed per sweep at most, so a mass expiry never stalls a thread (the rest go next time, or as new connections need room). */
export const CONNTRACK_SWEEP_BUDGET = 65536;

/** Longest a blocking packet thread stays in its receive before its event loop turns (timers: table checks, sweeps). */
const BLOCKING_SLICE_MS = 20;
/** The thread's state; exported for tests that drive it without a Worker. */
export class PacketThread {
  readonly tables: DaemonTables;
  readonly flows: FlowSet<Target<ServedTable>>;
  readonly traceFlows = new FlowSet<string>({ promiscuousPing: true });
  readonly pipeline: Pipeline<ServedTable>;
  readonly counters: ThreadCounters;
  /** The sockets: each serves the queue indexes `qis` (qi = qis[0]). */
  readonly queues: { qi: number; qis: number[]; queue: PacketQueue }[] = [];
  readonly batchSizes: BatchSizeHistogram;
  /** The last generation of flows applied. */
  gen = 0;
  private readonly busFaults = new BusFaultWatch();
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
    this.counters = new ThreadCounters(data.queues.length, data.counters);
    this.batchSizes = this.counters.batchSizeHistogram();
    this.flows = new FlowSet<Target<ServedTable>>({ targetName: (t) => t.name, promiscuousPing: data.promiscuousPing });
    // The main thread opens the same files and logs what fails.
    this.tables = new DaemonTables(data, null);
    // The fragment counters live in this thread's shared counters: the main thread sums them for ftshm and metrics.
    this.pipeline = new Pipeline(data.mode === 'flowlb' ? this.flows : null, {
      ...data.pipeline,
      fixedTarget: this.tables.fixed,
      lbTier: this.tables.tier,
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
      if (this.busFaults.pending) {
        this.busFaults.take();
        this.refreshTables();
      }
    };
    const blocking = d.receive === 'blocking' && this.queues.length === 1;
    for (const { qis, queue } of this.queues) {
      queue.start(makeBatchHandler(this.pipeline, counters, this.batchSizes, qis, sink, traceFlows, afterBatch, d.tunFd, tunErrno), blocking);
    }
    if (blocking) this.pumpBlocking(this.queues[0].queue, new Int32Array(d.wake));
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

  /**
   * Serves a blocking queue: the receive waits for packets, and every
   * BLOCKING_SLICE_MS, or as soon as the main thread posted a message (wake),
   * the event loop turns once for messages and timers. The flag is cleared
   * before that turn, so a message posted after the turn began sets it again
   * and ends the next slice at once: none waits for a slice to run out.
   */
  private pumpBlocking(queue: PacketQueue, wake: Int32Array): void {
    const pump = (): void => {
      if (!queue.running) return;
      queue.runBlocking(BLOCKING_SLICE_MS, wake);
      Atomics.store(wake, 0, 0);
      setImmediate(pump);
    };
    setImmediate(pump);
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
    const targets = this.tables.served().map((t) => {
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
    this.tables.refresh();
  }

  /** The flows' targets (the daemon's TargetRegistry's twin in this thread). */
  get targets(): TargetRegistry<ServedTable> {
    return this.tables.targets;
  }

  /** Unbinds the queues and closes the tables. Idempotent. */
  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    for (const { queue } of this.queues) queue.close();
    for (const t of this.targets.list()) t.table.close();
    this.tables.closeFixed();
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
