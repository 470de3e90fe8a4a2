/**
 * The main thread's side of the packet threads (`--workers=N`): starts one
 * worker_threads Worker per thread (src/daemon/packetthread.ts), splits the queues
 * over them, hands them every accepted flow change and waits for their acks,
 * collects their counters, and forwards their trace lines. See packetthread.ts
 * for what runs in a thread, docs/architecture.md for the picture.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { NfqlbError } from '../base/errors';
import type { FlowOp, FromThread, PacketThreadData, PublishedTarget, ToThread } from './threadmessages';
import { TRACE_STATE_ACTIVE, TRACE_STATE_INFLIGHT, TRACE_STATE_MASK, TRACE_STATE_WORDS } from './tracechannel';
import { QUEUE_STAT_FIELDS, type QueueStatField } from '../addon/queue';
import { queuesOfThread, ThreadCounters } from './threadcounters';

/** How long a flow change may take to reach every thread before the client is told FAIL. */
export const ACK_TIMEOUT_MS = 1000;
/** How long a publish (scrape, flow-list) waits for the threads' counts; the last ones are used after that. */
export const PUBLISH_TIMEOUT_MS = 1000;
/**
 * How a packet thread reads its queues: `thread` = one netlink socket bound
 * to all of them, `queue` = one socket per queue (the shape before; kept
 * selectable for measuring). NFQLB_QUEUE_SOCKETS=thread|queue; default
 * DEFAULT_QUEUE_SOCKETS, chosen by measurement (docs/performance.md,
 * "Receive shape"). Anything else is the default.
 */
export const DEFAULT_QUEUE_SOCKETS: 'thread' | 'queue' = 'thread';
export function queueSocketsFromEnv(env: NodeJS.ProcessEnv = process.env): 'thread' | 'queue' {
  const v = env.NFQLB_QUEUE_SOCKETS;
  return v === 'thread' || v === 'queue' ? v : DEFAULT_QUEUE_SOCKETS;
}

/**
 * How a packet thread with one socket waits for packets (NFQLB_RECEIVE):
 * 'blocking' (the default) waits in recvmmsg itself and turns its event loop
 * only when told a message is there or every 20 ms (one system call fewer per
 * round, and no event-loop turn per round: 3-10% less CPU per packet in the
 * quiet run of docs/performance.md, "How a round waits"); 'poll' is the event
 * loop's readiness watch, as the single loop and a thread with several
 * sockets always use.
 */
export function receiveModeFromEnv(env: NodeJS.ProcessEnv = process.env): 'blocking' | 'poll' {
  return env.NFQLB_RECEIVE === 'poll' ? 'poll' : 'blocking';
}

/** How long stop() lets a thread unbind its queues before it is terminated. */
const STOP_TIMEOUT_MS = 400;

/** One queue as a thread bound it. */
export interface BoundQueue {
  qi: number;
  queueNum: number;
  portid: number;
  qlength: number;
  copyRange: number;
  rcvbuf: number;
  rcvbufActual: number;
}

/** What one thread published: counts in its flow list order, fwmarks per target. */
export interface ThreadPublication {
  gen: number;
  flowMatches: Float64Array;
  traceMatches: Float64Array;
  targets: PublishedTarget[];
}

/** The compiled packetthread.js: beside this file in dist/, or in dist/daemon/ when this runs from src/daemon/ (ts-jest). */
export function packetThreadScript(): string {
  const here = path.join(__dirname, 'packetthread.js');
  if (fs.existsSync(here)) return here;
  return path.join(__dirname, '..', '..', 'dist', 'daemon', 'packetthread.js');
}

interface Slot {
  readonly index: number;
  readonly worker: Worker;
  /** Set after every message to the thread: a thread waiting in its receive then turns its event loop. */
  readonly wake: Int32Array;
  readonly counters: ThreadCounters;
  acked: number;
  exited: boolean;
  stopping: boolean;
  /** Its death was reported (an 'error' is followed by an 'exit'). */
  reported: boolean;
  published: ThreadPublication | null;
}

export interface PacketThreadsEvents {
  /** Trace text from a thread (whole lines), for the TraceServer. */
  trace(text: string): void;
  /** A thread ended without being asked to: the daemon cannot answer its queues any more. */
  died(err: Error): void;
}

export class PacketThreads {
  readonly traceState = new Int32Array(new SharedArrayBuffer(4 * TRACE_STATE_WORDS));
  readonly bound: BoundQueue[] = [];
  private readonly slots: Slot[] = [];
  private gen = 0;
  private publishId = 0;
  private readonly ackWaiters = new Set<() => void>();
  private readonly publishWaiters = new Set<() => void>();

  private constructor(private readonly events: PacketThreadsEvents) {}

  /**
   * Starts `threads` threads over `data`'s queues and resolves when each has
   * bound its queues (packets wait in the kernel until run()). Rejects with
   * the first thread's error (NfqlbError with the code and one-line message a
   * single-loop daemon would give, e.g. NFQLB_ERR_QUEUE_BUSY); every thread is
   * stopped then.
   */
  static async start(
    threads: number,
    data: Omit<PacketThreadData, 'kind' | 'index' | 'serve' | 'counters' | 'traceState' | 'wake'>,
    events: PacketThreadsEvents,
    script = packetThreadScript(),
  ): Promise<PacketThreads> {
    const pool = new PacketThreads(events);
    const ready: Promise<void>[] = [];
    for (let i = 0; i < threads; i++) {
      const counters = new ThreadCounters(data.queues.length);
      const wake = new Int32Array(new SharedArrayBuffer(4));
      const workerData: PacketThreadData = {
        ...data,
        kind: 'nfqlb-packet-thread',
        index: i,
        serve: queuesOfThread(data.queues.length, threads, i),
        socketPerThread: data.socketPerThread ?? queueSocketsFromEnv() === 'thread',
        receive: data.receive ?? receiveModeFromEnv(),
        counters: counters.buffer,
        traceState: pool.traceState.buffer as SharedArrayBuffer,
        wake: wake.buffer as SharedArrayBuffer,
      };
      const worker = new Worker(script, { workerData, stdout: false, stderr: false });
      const slot: Slot = { index: i, worker, wake, counters, acked: 0, exited: false, stopping: false, reported: false, published: null };
      pool.slots.push(slot);
      ready.push(pool.watch(slot));
    }
    const results = await Promise.allSettled(ready);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      await pool.stop();
      throw failed.reason;
    }
    pool.bound.sort((a, b) => a.qi - b.qi);
    return pool;
  }

  /** Wires a thread's messages; resolves when it has bound its queues, rejects if it could not. */
  private watch(slot: Slot): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let started = false;
      slot.worker.on('message', (m: FromThread) => {
        switch (m.t) {
          case 'bound':
            started = true;
            this.bound.push(...m.queues);
            resolve();
            break;
          case 'error':
            reject(new NfqlbError(m.message, m.code));
            break;
          case 'ack':
            slot.acked = Math.max(slot.acked, m.gen);
            if (m.failures.length > 0) this.failures.push(...m.failures.map((f) => `packet thread ${slot.index}: ${f}`));
            for (const w of [...this.ackWaiters]) w();
            break;
          case 'published':
            if (m.id === this.publishId) slot.published = m;
            for (const w of [...this.publishWaiters]) w();
            break;
          case 'trace':
            Atomics.sub(this.traceState, TRACE_STATE_INFLIGHT, m.text.length);
            this.events.trace(m.text);
            break;
          default:
        }
      });
      slot.worker.on('error', (err) => {
        if (!started) reject(new NfqlbError(`packet thread ${slot.index} failed to start: ${err.message}`, 'NFQLB_ERR_THREAD', { cause: err }));
        else if (!slot.stopping && !slot.reported) {
          slot.reported = true;
          this.events.died(new NfqlbError(`packet thread ${slot.index} failed: ${err.message}`, 'NFQLB_ERR_THREAD', { cause: err }));
        }
      });
      slot.worker.on('exit', (code) => {
        slot.exited = true;
        for (const w of [...this.ackWaiters]) w();
        for (const w of [...this.publishWaiters]) w();
        if (!started) reject(new NfqlbError(`packet thread ${slot.index} exited (code ${code}) before binding its queues`, 'NFQLB_ERR_THREAD'));
        else if (!slot.stopping && !slot.reported) {
          slot.reported = true;
          this.events.died(new NfqlbError(`packet thread ${slot.index} exited unexpectedly (code ${code})`, 'NFQLB_ERR_THREAD'));
        }
      });
    });
  }

  /** Differences a thread reported while applying a change (drained by the caller). */
  readonly failures: string[] = [];

  /** Per-thread counters, for summing. */
  get counters(): ThreadCounters[] {
    return this.slots.map((s) => s.counters);
  }

  get size(): number {
    return this.slots.length;
  }

  /** True while every thread runs. */
  get alive(): boolean {
    return this.slots.every((s) => !s.exited);
  }

  /** The generation of the last change sent. */
  get generation(): number {
    return this.gen;
  }

  /** Lets every thread read its queues. */
  run(): void {
    this.post({ t: 'start' });
  }

  /** Whether trace clients listen (the threads trace nothing per packet while 0), and the mask when the shm is private. */
  setTrace(active: boolean, privateMask = 0): void {
    Atomics.store(this.traceState, TRACE_STATE_MASK, privateMask | 0);
    Atomics.store(this.traceState, TRACE_STATE_ACTIVE, active ? 1 : 0);
  }

  /**
   * Sends accepted changes to every thread as one new generation and resolves
   * with null once every thread acknowledged it (it then decides every packet
   * with it), or with the text of what went wrong: a thread that did not ack
   * within `timeoutMs`, or that is gone.
   */
  async change(ops: FlowOp[], timeoutMs = ACK_TIMEOUT_MS): Promise<string | null> {
    const gen = ++this.gen;
    this.post({ t: 'flows', gen, ops });
    const late = (): Slot[] => this.slots.filter((s) => s.acked < gen);
    const done = await this.waitFor(this.ackWaiters, () => late().every((s) => s.exited), timeoutMs);
    const missing = late();
    if (done && missing.length === 0) return null;
    const gone = missing.filter((s) => s.exited);
    if (gone.length > 0) return `packet thread ${gone.map((s) => s.index).join(', ')} has stopped`;
    return `packet thread ${missing.map((s) => s.index).join(', ')} did not take the change within ${timeoutMs} ms`;
  }

  /**
   * Asks every thread for its per-flow and per-target counts; resolves with
   * what each answered (null for a thread that did not within `timeoutMs`).
   */
  async publish(timeoutMs = PUBLISH_TIMEOUT_MS): Promise<(ThreadPublication | null)[]> {
    const id = ++this.publishId;
    for (const s of this.slots) s.published = null;
    this.post({ t: 'publish', id });
    await this.waitFor(this.publishWaiters, () => this.slots.every((s) => s.published !== null || s.exited), timeoutMs);
    return this.slots.map((s) => s.published);
  }

  /** Stats of queue index `qi` as its thread last copied them (once a second, and at each publish). */
  queueStat(qi: number, field: QueueStatField): number {
    let v = 0;
    for (const s of this.slots) v += s.counters.queueStat(qi, field);
    return v;
  }

  /** The QueueStats-like object of queue index `qi` (lastErrno negative as in Node, or null). */
  queueStats(qi: number): Record<QueueStatField, number> {
    const out = {} as Record<QueueStatField, number>;
    for (const f of QUEUE_STAT_FIELDS) out[f] = this.queueStat(qi, f);
    return out;
  }

  /** Asks every thread to unbind its queues and waits until they are gone (terminating those that take too long). Idempotent. */
  async stop(): Promise<void> {
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.exited) return;
        s.stopping = true;
        const gone = new Promise<void>((resolve) => s.worker.once('exit', () => resolve()));
        try {
          s.worker.postMessage({ t: 'stop' } satisfies ToThread);
          Atomics.store(s.wake, 0, 1);
        } catch {
          // Already closing.
        }
        const timer = setTimeout(() => void s.worker.terminate(), STOP_TIMEOUT_MS);
        await gone;
        clearTimeout(timer);
      }),
    );
  }

  private post(m: ToThread): void {
    for (const s of this.slots) {
      if (s.exited) continue;
      s.worker.postMessage(m);
      Atomics.store(s.wake, 0, 1);
    }
  }

  private waitFor(waiters: Set<() => void>, cond: () => boolean, timeoutMs: number): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const check = (): void => {
        if (!cond()) return;
        finish(true);
      };
      const finish = (ok: boolean): void => {
        clearTimeout(timer);
        waiters.delete(check);
        resolve(ok);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      waiters.add(check);
    });
  }
}
