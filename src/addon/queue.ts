/**
 * NFQUEUE access: `PacketQueue` wraps the addon's `NfQueue` (native/nfqueue.cc),
 * one netlink socket bound to one queue (or to several: `queueNums`), read in batches.
 *
 * Per batch the addon copies up to `batchSize` packets into buffers shared with
 * JavaScript and calls the handler ONCE with a reusable `QueueBatch` (no
 * allocation per batch). Packet i is `packets.subarray(offsets[i], offsets[i] +
 * lengths[i])`. The handler writes `verdicts[i]`:
 *   - `fwmark >= 0`  ACCEPT with that mark
 *   - `VERDICT_DROP` (-1) DROP (so does any other negative value but -2)
 *   - `VERDICT_ACCEPT` (-2) ACCEPT without touching the mark
 * Every entry is preset to `defaultVerdict` (DROP unless configured) before the
 * handler runs. When the handler returns, all verdicts of the batch go to the
 * kernel in one send. If it throws, the verdicts it wrote (and the presets for
 * the rest) are still sent, then the exception goes to Node's uncaught-exception
 * path. The buffers are only valid during the call: copy what must outlive it.
 */
import * as fs from 'node:fs';
import { errnoName, NfqlbError } from '../base/errors';
import { native } from './native';

/** verdicts[i] value: drop the packet. */
export const VERDICT_DROP = -1;
/** verdicts[i] value: accept the packet, leaving its mark as it is. */
export const VERDICT_ACCEPT = -2;

export interface PacketQueueOptions {
  /** Queue number, 0..65535 (with queueNums: its first). */
  queueNum: number;
  /**
   * Every queue this one socket binds (distinct, 0..65535; the first is
   * queueNum). One socket serves them all: one wake-up, one receive and one
   * verdict send per round for all of them (docs/performance.md, "Receive
   * shape"). Packet i came from queueNums[queueIndex[i]]. Default [queueNum].
   */
  queueNums?: number[];
  /** Bytes copied per packet (nfqlb's --mtu), 1..65535; default 1500. */
  copyRange?: number;
  /** Kernel queue length (NFQA_CFG_QUEUE_MAXLEN), default 1024. */
  qlength?: number;
  /** SO_RCVBUF in bytes per queue of the socket (the socket gets it times queueNums.length); default qlength*copyRange/2 rounded down to 4 KiB (min 4096). */
  rcvbuf?: number;
  /** Most packets handed to one handler call, 1..1024; default 64. */
  batchSize?: number;
  /** NFQA_CFG_F_FAIL_OPEN: accept packets instead of dropping them when the queue is full. */
  failOpen?: boolean;
  /** Preset of verdicts[i] before each handler call: a fwmark, VERDICT_DROP (default) or VERDICT_ACCEPT. */
  defaultVerdict?: number;
}

export interface QueueStats {
  /** Handler calls. */
  batches: number;
  packets: number;
  /** Largest batch so far. */
  maxBatch: number;
  accepted: number;
  dropped: number;
  /** Packets that arrived before the bind was acknowledged, handed back with NF_REPEAT. */
  repeated: number;
  /** ENOBUFS from recv (the socket overran; the kernel dropped packets). */
  enobufs: number;
  recvErrors: number;
  /** Failed verdict sends (those packets stay queued in the kernel). */
  sendErrors: number;
  /** Packets whose verdict was in a failed send (they stay queued until the kernel drops them). */
  unsentVerdicts: number;
  /** Error answers from the kernel to verdicts (e.g. unknown packet id). */
  verdictErrors: number;
  /** Messages without a packet header, or trailing bytes. */
  parseErrors: number;
  /** Datagrams larger than the receive slot (should never happen). */
  truncated: number;
  /** errno of the last error counted above, negative as in Node (-105), or null. */
  lastErrno: number | null;
  /** Its name (ENOBUFS), or null. */
  lastErrnoName: string | null;
}

/**
 * The numbers of QueueStats, in the order the addon sets them (NfQueue::GetStats
 * in native/nfqueue.cc, whose Stats fields have these names): the one list
 * the packet threads copy and the metrics read. test/native/queue.test.ts
 * checks it against what the addon returns.
 */
export const QUEUE_STAT_FIELDS = [
  'batches', 'packets', 'maxBatch', 'accepted', 'dropped', 'repeated', 'enobufs', 'recvErrors',
  'sendErrors', 'unsentVerdicts', 'verdictErrors', 'parseErrors', 'truncated', 'lastErrno',
] as const satisfies ReadonlyArray<keyof QueueStats>;
export type QueueStatField = (typeof QUEUE_STAT_FIELDS)[number];
/** Compile-time proof that QUEUE_STAT_FIELDS names every number of QueueStats (a missing one turns `true` into an error). */
export const QUEUE_STAT_FIELDS_COMPLETE: [Exclude<keyof QueueStats, QueueStatField | 'lastErrnoName'>] extends [never] ? true : never = true;

/** The failure counts of QueueStats by the `reason` label of nfqlb_verdict_errors_total / nfqlb_queue_errors_total. */
export const QUEUE_ERROR_FIELDS = [
  ['send', 'sendErrors'],
  ['unsent', 'unsentVerdicts'],
  ['kernel', 'verdictErrors'],
  ['enobufs', 'enobufs'],
  ['recv', 'recvErrors'],
  ['parse', 'parseErrors'],
  ['truncated', 'truncated'],
] as const satisfies ReadonlyArray<readonly [string, QueueStatField]>;
/** The reasons of QUEUE_ERROR_FIELDS that mean a verdict did not reach the kernel (or was refused by it). */
export const VERDICT_ERROR_REASONS: ReadonlySet<string> = new Set(['send', 'unsent', 'kernel']);

/** The object handed to the handler; the same object for every batch of a queue. */
export interface QueueBatch {
  /** Packets in this batch (entries 0..count-1 of the arrays are valid). */
  readonly count: number;
  readonly queueNum: number;
  readonly packets: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly origLengths: Uint32Array;
  readonly ids: Uint32Array;
  /** ETH_P_* in host order: 0x0800 IPv4, 0x86dd IPv6. */
  readonly hwProtocol: Uint16Array;
  /** Packet i came from queueNums[queueIndex[i]] (always 0 with one queue). */
  readonly queueIndex: Uint16Array;
  readonly verdicts: Int32Array;
}

export type BatchHandler = (batch: QueueBatch) => void;

/** The addon's class (native/nfqueue.cc). */
interface NativeNfQueue {
  readonly packets: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly origLengths: Uint32Array;
  readonly ids: Uint32Array;
  readonly verdicts: Int32Array;
  readonly hwProtocol: Uint16Array;
  readonly queueIndex: Uint16Array;
  readonly queueNum: number;
  readonly copyRange: number;
  readonly qlength: number;
  readonly batchSize: number;
  readonly rcvbuf: number;
  readonly rcvbufActual: number;
  readonly failOpen: boolean;
  readonly defaultVerdict: number;
  readonly portid: number;
  readonly closed: boolean;
  readonly running: boolean;
  start(onBatch: (count: number) => void, blocking?: boolean): void;
  runBlocking(maxMs: number, wake: Int32Array): number;
  stop(): void;
  close(): void;
  /** lastErrno is C's positive errno here; PacketQueue.stats() makes it Node's. */
  stats(): Omit<QueueStats, 'lastErrnoName'>;
}

interface NfQueueAddon {
  /** Every option given, checked by validateQueueOptions (the addon does no range checks of its own). */
  NfQueue: new (options: Required<Omit<PacketQueueOptions, 'queueNums'>> & { queueNums: number[] }) => NativeNfQueue;
}

export const DEFAULT_COPY_RANGE = 1500;
/**
 * Longer than nfqlb's 1024 (its `--qlength` default, which the CLI keeps when
 * --qlength is given): 16384 packets per queue absorb trafgen's bursty
 * `--rate 100000pps` (each second's packets back to back at ~500k/s), where
 * 1024 loses a sixth to a half of them (docs/performance.md, "Bursts"). It costs
 * kernel memory only while packets wait: about 1.9 KiB per queued 60-byte
 * packet, 4.7 KiB per full-size one.
 */
export const DEFAULT_QLENGTH = 16384;
export const DEFAULT_BATCH_SIZE = 64;
const MAX_RCVBUF = 2 ** 30 - 1;

/**
 * nfqlb's SO_RCVBUF for a queue: qlength * mtu / 2, rounded down to 4 KiB,
 * at least 4 KiB (and at most what SO_RCVBUFFORCE takes, 1 GiB - 4 KiB).
 */
export function defaultRcvbuf(qlength: number, copyRange: number): number {
  const bytes = Math.floor((qlength * copyRange) / 2);
  const rounded = bytes - (bytes % 4096);
  return Math.min(Math.max(rounded, 4096), MAX_RCVBUF - (MAX_RCVBUF % 4096));
}

function checkInt(options: PacketQueueOptions, name: keyof PacketQueueOptions, lo: number, hi: number, required = false): void {
  const v = options[name];
  if (v === undefined) {
    if (required) throw new NfqlbError(`queue option '${name}' is required`, 'NFQLB_ERR_QUEUE_OPTION');
    return;
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new NfqlbError(
      `invalid queue option ${name}=${String(v)}: must be an integer from ${lo} to ${hi}`,
      'NFQLB_ERR_QUEUE_OPTION',
    );
  }
}

/** Throws NFQLB_ERR_QUEUE_OPTION for the first invalid option. */
export function validateQueueOptions(options: PacketQueueOptions): void {
  if (options === null || typeof options !== 'object') {
    throw new NfqlbError('queue options must be an object with at least queueNum', 'NFQLB_ERR_QUEUE_OPTION');
  }
  checkInt(options, 'queueNum', 0, 65535, true);
  if (options.queueNums !== undefined) {
    const qs = options.queueNums;
    if (
      !Array.isArray(qs) || qs.length < 1 || qs.length > 1024 || qs[0] !== options.queueNum ||
      new Set(qs).size !== qs.length || !qs.every((q) => Number.isInteger(q) && q >= 0 && q <= 65535)
    ) {
      throw new NfqlbError(
        `invalid queue option queueNums=${String(qs)}: must be 1 to 1024 distinct queue numbers (0 to 65535), the first being queueNum`,
        'NFQLB_ERR_QUEUE_OPTION',
      );
    }
  }
  checkInt(options, 'copyRange', 1, 65535);
  checkInt(options, 'qlength', 1, 2 ** 31 - 1);
  checkInt(options, 'rcvbuf', 4096, MAX_RCVBUF);
  checkInt(options, 'batchSize', 1, 1024);
  checkInt(options, 'defaultVerdict', VERDICT_ACCEPT, 2 ** 31 - 1);
  if (options.failOpen !== undefined && typeof options.failOpen !== 'boolean') {
    throw new NfqlbError(
      `invalid queue option failOpen=${String(options.failOpen)}: must be true or false`,
      'NFQLB_ERR_QUEUE_OPTION',
    );
  }
}

/**
 * One bound NFQUEUE queue. The constructor binds the queue synchronously and
 * throws NfqlbError: NFQLB_ERR_QUEUE_BUSY (another process holds it),
 * NFQLB_ERR_QUEUE_PERM (no CAP_NET_ADMIN), NFQLB_ERR_QUEUE (other, with errno),
 * NFQLB_ERR_QUEUE_OPTION (bad option). Packets wait in the kernel until start().
 */
export class PacketQueue {
  readonly queueNum: number;
  /** Every queue of the socket (queueNum first). */
  readonly queueNums: readonly number[];
  readonly copyRange: number;
  readonly qlength: number;
  readonly batchSize: number;
  /** SO_RCVBUF asked for, and as the kernel reports it (doubled). */
  readonly rcvbuf: number;
  readonly rcvbufActual: number;
  readonly failOpen: boolean;
  readonly defaultVerdict: number;
  /** Netlink port id of the socket (the `portid` column of /proc/net/netfilter/nfnetlink_queue). */
  readonly portid: number;
  readonly packets: Uint8Array;
  readonly offsets: Uint32Array;
  readonly lengths: Uint32Array;
  readonly origLengths: Uint32Array;
  readonly ids: Uint32Array;
  readonly hwProtocol: Uint16Array;
  readonly queueIndex: Uint16Array;
  readonly verdicts: Int32Array;

  private readonly nq: NativeNfQueue;
  private readonly batch: { count: number } & Omit<QueueBatch, 'count'>;

  constructor(options: PacketQueueOptions) {
    validateQueueOptions(options);
    const addon = native() as unknown as NfQueueAddon;
    const copyRange = options.copyRange ?? DEFAULT_COPY_RANGE;
    const qlength = options.qlength ?? DEFAULT_QLENGTH;
    const queueNums = options.queueNums ?? [options.queueNum];
    try {
      this.nq = new addon.NfQueue({
        queueNum: options.queueNum,
        queueNums,
        copyRange,
        qlength,
        // Per queue of the socket (nfqlb's rule is per queue, and so is --rcvbuf): room for every
        // queue of the socket to be full, so loss shows as the queue's drops, never as a full socket.
        rcvbuf: Math.min((options.rcvbuf ?? defaultRcvbuf(qlength, copyRange)) * queueNums.length, MAX_RCVBUF - (MAX_RCVBUF % 4096)),
        batchSize: options.batchSize ?? DEFAULT_BATCH_SIZE,
        failOpen: options.failOpen ?? false,
        defaultVerdict: options.defaultVerdict ?? VERDICT_DROP,
      });
    } catch (err) {
      // With several queues, the one whose bind failed is in the addon's message.
      const failed = err instanceof Error ? /^cannot bind queue (\d+)/.exec(err.message) : null;
      throw bindFailure(failed !== null ? Number(failed[1]) : options.queueNum, err);
    }
    const nq = this.nq;
    this.queueNum = nq.queueNum;
    this.queueNums = Object.freeze([...queueNums]);
    this.copyRange = nq.copyRange;
    this.qlength = nq.qlength;
    this.batchSize = nq.batchSize;
    this.rcvbuf = nq.rcvbuf;
    this.rcvbufActual = nq.rcvbufActual;
    this.failOpen = nq.failOpen;
    this.defaultVerdict = nq.defaultVerdict;
    this.portid = nq.portid;
    this.packets = nq.packets;
    this.offsets = nq.offsets;
    this.lengths = nq.lengths;
    this.origLengths = nq.origLengths;
    this.ids = nq.ids;
    this.hwProtocol = nq.hwProtocol;
    this.queueIndex = nq.queueIndex;
    this.verdicts = nq.verdicts;
    this.batch = {
      count: 0,
      queueNum: this.queueNum,
      packets: this.packets,
      offsets: this.offsets,
      lengths: this.lengths,
      origLengths: this.origLengths,
      ids: this.ids,
      hwProtocol: this.hwProtocol,
      queueIndex: this.queueIndex,
      verdicts: this.verdicts,
    };
  }

  /**
   * Starts delivering batches to `handler` (throws NFQLB_ERR_QUEUE_STATE when running or closed).
   * By default the event loop watches the socket and each readable event is a round. With
   * `blocking`, nothing is delivered until runBlocking() is called: the thread then waits in the
   * receive itself (for a thread that has nothing else to wait for but its messages).
   */
  start(handler: BatchHandler, blocking = false): void {
    if (typeof handler !== 'function') {
      throw new NfqlbError('PacketQueue.start(handler) needs a function', 'NFQLB_ERR_QUEUE_OPTION');
    }
    const batch = this.batch;
    this.nq.start((count: number) => {
      batch.count = count;
      handler(batch);
    }, blocking);
  }

  /**
   * For a queue started with `blocking`: receives and hands over rounds on this thread, each
   * waiting in recvmmsg for its first packet (no epoll, no event-loop turn per round), until
   * `maxMs` have passed, the queue is stopped or closed, or `wake[0]` is not 0 (set by another
   * thread that posted this one a message). Returns the rounds that carried packets. While it
   * runs, this thread's timers and messages wait: call it again from setImmediate.
   */
  runBlocking(maxMs: number, wake: Int32Array): number {
    return this.nq.runBlocking(maxMs, wake);
  }

  /**
   * Stops reading; packets wait in the kernel (up to qlength) until start() again.
   * Called from the handler, the batches already read in this round are still delivered.
   */
  stop(): void {
    this.nq.stop();
  }

  /**
   * Unbinds the queue and closes the socket; idempotent. Called from the handler,
   * the current batch's verdicts are sent first. Packets still queued in the
   * kernel are dropped by the kernel. Also done at env teardown and on GC.
   */
  close(): void {
    this.nq.close();
  }

  get closed(): boolean {
    return this.nq.closed;
  }

  get running(): boolean {
    return this.nq.running;
  }

  stats(): QueueStats {
    const s = this.nq.stats() as QueueStats;
    if (s.lastErrno !== null) s.lastErrno = -Math.abs(s.lastErrno);
    s.lastErrnoName = s.lastErrno === null ? null : errnoName(s.lastErrno);
    return s;
  }
}

/**
 * The error for a failed bind of `queueNum`, from the addon's error `err`
 * (NFQLB_ERR_QUEUE with the errno of the bind), saying what to do; `err` is
 * the cause. The kernel answers EPERM both without CAP_NET_ADMIN and when
 * another netlink socket holds the queue (/proc tells them apart), EBUSY or
 * EEXIST (another socket created it at the same moment) when it is held.
 */
export function bindFailure(queueNum: number, err: unknown, holders: () => QueueProcEntry[] = () => readQueueProcQuiet()): unknown {
  if (!(err instanceof NfqlbError) || err.code !== 'NFQLB_ERR_QUEUE' || err.errno === undefined) return err;
  const q = `queue ${queueNum}`;
  const name = err.errnoName;
  if (name === 'EPERM' || name === 'EBUSY' || name === 'EEXIST') {
    const holder = holders().find((e) => e.queue === queueNum);
    if (holder !== undefined || name !== 'EPERM') {
      const who = holder !== undefined ? ` (netlink portid ${holder.portid})` : '';
      return new NfqlbError(
        `${q} is bound by another process${who} (EBUSY); stop the other nfqlb or pick another --queue`,
        'NFQLB_ERR_QUEUE_BUSY',
        { errno: 'EBUSY', cause: err },
      );
    }
    return new NfqlbError(
      `cannot bind ${q}: operation not permitted (EPERM); run as root or with CAP_NET_ADMIN`,
      'NFQLB_ERR_QUEUE_PERM',
      { cause: err },
    );
  }
  if (name === 'ETIMEDOUT') {
    return new NfqlbError(`cannot bind ${q}: the kernel did not answer (ETIMEDOUT)`, 'NFQLB_ERR_QUEUE', { cause: err });
  }
  if (!err.message.startsWith(`cannot bind ${q}:`)) return err; // socket(), setup: the addon's words say it all
  return new NfqlbError(`cannot bind ${q} (${name})${err.message.slice(`cannot bind ${q}`.length)}`, 'NFQLB_ERR_QUEUE', { cause: err });
}

/** readQueueProc, or [] when /proc cannot be read (a bind error is then reported without the holder). */
function readQueueProcQuiet(): QueueProcEntry[] {
  try {
    return readQueueProc();
  } catch {
    return [];
  }
}

/** One line of /proc/net/netfilter/nfnetlink_queue. */
export interface QueueProcEntry {
  queue: number;
  /** Netlink port id of the listener. */
  portid: number;
  /** Packets waiting for a verdict. */
  waiting: number;
  /** 0 none, 1 meta, 2 packet. */
  copyMode: number;
  copyRange: number;
  /** Dropped because the queue was full. */
  queueDropped: number;
  /** Dropped because the netlink socket could not take them (receive buffer full). */
  userDropped: number;
  lastId: number;
}

export const NFQUEUE_PROC_FILE = '/proc/net/netfilter/nfnetlink_queue';

/** Parses the text of /proc/net/netfilter/nfnetlink_queue; malformed lines are skipped. */
export function parseQueueProc(text: string): QueueProcEntry[] {
  const entries: QueueProcEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || !f.slice(0, 8).every((x) => /^\d+$/.test(x))) continue;
    const n = f.slice(0, 8).map(Number);
    entries.push({
      queue: n[0],
      portid: n[1],
      waiting: n[2],
      copyMode: n[3],
      copyRange: n[4],
      queueDropped: n[5],
      userDropped: n[6],
      lastId: n[7],
    });
  }
  return entries;
}

/**
 * Queues bound in this process's network namespace. Returns [] when the file is
 * absent (nfnetlink_queue not loaded yet); other read errors throw NFQLB_ERR_QUEUE_PROC.
 */
export function readQueueProc(file: string = NFQUEUE_PROC_FILE): QueueProcEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return [];
    throw new NfqlbError(`cannot read ${file}: ${e.message}`, 'NFQLB_ERR_QUEUE_PROC', { cause: e });
  }
  return parseQueueProc(text);
}
