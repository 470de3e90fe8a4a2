/**
 * What the main thread and a packet thread say to each other: the thread's
 * start data (workerData) and the messages both ways, plain
 * structured-clonable values only. The protocol is in packetthread.ts
 * (thread side) and packetthreads.ts (main side).
 */
import type { FlowCmd } from '../flows/fields';
import type { PipelineOptions } from '../datapath/pipeline';
import type { ConnTableOptions } from '../datapath/conntrack';

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
  /** How a thread with one socket waits for packets (receiveModeFromEnv); several sockets always poll. */
  readonly receive?: 'blocking' | 'poll';
  /** The main thread sets wake[0] after each message it posts (see PacketQueue.runBlocking). */
  readonly wake: SharedArrayBuffer;
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
