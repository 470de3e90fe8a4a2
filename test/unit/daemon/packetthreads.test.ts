/**
 * Packet threads: the main thread's protocol (PacketThreads) against stand-in
 * threads (test/fixtures/threads/fake-thread.js) — a change is resolved only
 * when every thread acked it, a silent thread turns into a FAIL text after
 * the bound, a thread's failure is reported, a bind error rejects the start
 * with the thread's own line, a dying thread is reported; the summing of the
 * shared counters; and the real thread's state (PacketThread) deciding batches
 * with whole generations of flows over tables in /dev/shm.
 */
import * as path from 'node:path';
import { BatchSizeHistogram } from '../../../src/base/counters';
import { NfqlbError } from '../../../src/base/errors';
import { PacketThread } from '../../../src/daemon/packetthread';
import { makeBatchHandler } from '../../../src/datapath/batch';
import { traceChannel, TRACE_STATE_ACTIVE, TRACE_STATE_INFLIGHT, TRACE_STATE_WORDS } from '../../../src/daemon/tracechannel';
import type { FromThread, PacketThreadData } from '../../../src/daemon/threadmessages';
import { DEFAULT_QUEUE_SOCKETS, PacketThreads, queueSocketsFromEnv, type PacketThreadsEvents } from '../../../src/daemon/packetthreads';
import { REASON_NAMES, REASON_NO_FLOW, REASON_TARGET } from '../../../src/datapath/pipeline';
import type { QueueBatch } from '../../../src/addon/queue';
import { createTable, deleteTable, openTable } from '../../../src/tables/tablefile';
import { queuesOfThread, sumThreadCounters, ThreadCounters } from '../../../src/daemon/threadcounters';
import { TRACE_FLOWS } from '../../../src/services/trace';
import { ipv4, udp } from '../../helpers/packets';
import { FS_LOOKUPS } from '../../../src/fragments/tablestats';
import { FSTORE_IN_USE, FSTORE_STORED } from '../../../src/fragments/store';
import { workerCount } from '../../../src/cli/commands/lb';

const FAKE = path.join(__dirname, '..', '..', 'fixtures', 'threads', 'fake-thread.js');
const BASE = { mode: 'flowlb' as const, queues: [0, 1, 2, 3], qlength: 1024, mtu: 1500, batchSize: 64, failOpen: false, promiscuousPing: false, pipeline: {}, tunFd: -1, tableCheckMs: 0, traceShm: null, initialOps: [], conntrack: null };

async function startFake(threads: number, fake: string, ev: PacketThreadsEvents): Promise<PacketThreads> {
  return PacketThreads.start(threads, { ...BASE, fake } as never, ev, FAKE);
}

function recorder(): { ev: PacketThreadsEvents; traced: string[]; died: Error[]; onDeath: Promise<Error> } {
  const traced: string[] = [];
  const died: Error[] = [];
  let tell: (e: Error) => void = () => {};
  const onDeath = new Promise<Error>((resolve) => (tell = resolve));
  return {
    traced,
    died,
    onDeath,
    ev: {
      trace: (t) => traced.push(t),
      died: (e) => {
        died.push(e);
        tell(e);
      },
    },
  };
}

describe('--workers', () => {
  it('defaults to one thread per queue, at most the CPUs less one and at least one; 0 and 1 are the single loop; 2..1024 as given; anything else is a usage error', () => {
    expect(workerCount(undefined, 4, 2)).toBe(1);
    expect(workerCount(undefined, 4, 1)).toBe(1);
    expect(workerCount(undefined, 1, 8)).toBe(1);
    expect(workerCount(undefined, 4, 3)).toBe(2);
    expect(workerCount(undefined, 4, 16)).toBe(4);
    expect(workerCount('0', 4, 2)).toBe(0);
    expect(workerCount('1', 4, 2)).toBe(0);
    expect(workerCount('2', 4, 2)).toBe(2);
    expect(workerCount('3', 4, 2)).toBe(3);
    expect(() => workerCount('-1', 4, 2)).toThrow('Invalid --workers=-1: use a number from 0 to 1024');
    expect(() => workerCount('two', 4, 2)).toThrow('Invalid --workers=two');
    expect(() => workerCount('1025', 4, 2)).toThrow('Invalid --workers=1025');
  });
});

describe('queuesOfThread', () => {
  it('gives every queue exactly one thread, round robin', () => {
    expect([0, 1].map((t) => queuesOfThread(4, 2, t))).toEqual([[0, 2], [1, 3]]);
    expect([0, 1, 2].map((t) => queuesOfThread(4, 3, t))).toEqual([[0, 3], [1], [2]]);
    expect([0, 1].map((t) => queuesOfThread(1, 2, t))).toEqual([[0], []]);
  });
});

describe('sumThreadCounters', () => {
  it('sums every thread\'s shared counters into the daemon\'s arrays', () => {
    const a = new ThreadCounters(3);
    const b = new ThreadCounters(3, new SharedArrayBuffer(ThreadCounters.bytes(3)));
    a.accepted[0] = 5;
    a.dropped[0] = 1;
    b.accepted[1] = 7;
    b.accepted[2] = 2;
    a.reasons[REASON_TARGET] = 5;
    b.reasons[REASON_TARGET] = 9;
    b.reasons[REASON_NO_FLOW] = 1;
    // A thread's histogram counts straight into its shared counters.
    const ha = a.batchSizeHistogram();
    ha.observe(1);
    ha.observe(3);
    const hb = b.batchSizeHistogram();
    hb.observe(64);
    a.trace[0] = 4;
    const into = { accepted: new Float64Array(3).fill(99), dropped: new Float64Array(3), reasons: new Float64Array(REASON_NAMES.length), batchSizes: new BatchSizeHistogram(), traceDropped: 0 };
    sumThreadCounters([a, b], into);
    expect([...into.accepted]).toEqual([5, 7, 2]);
    expect([...into.dropped]).toEqual([1, 0, 0]);
    expect(into.reasons[REASON_TARGET]).toBe(14);
    expect(into.reasons[REASON_NO_FLOW]).toBe(1);
    expect(into.batchSizes.count).toBe(3);
    expect(into.batchSizes.sum).toBe(68);
    expect(into.batchSizes.bucketCounts[0]).toBe(1); // le=1
    expect(into.batchSizes.bucketCounts[2]).toBe(1); // le=4
    expect(into.batchSizes.bucketCounts[6]).toBe(1); // le=64
    expect(into.traceDropped).toBe(4);
    // Summing again gives the same (it is a sum, not an accumulation).
    sumThreadCounters([a, b], into);
    expect([...into.accepted]).toEqual([5, 7, 2]);
  });

  it('keeps queue stats per queue, lastErrno as a positive number', () => {
    const c = new ThreadCounters(2);
    c.publishQueueStats(1, { batches: 3, packets: 9, maxBatch: 4, accepted: 8, dropped: 1, repeated: 0, enobufs: 2, recvErrors: 0, sendErrors: 0, unsentVerdicts: 0, verdictErrors: 0, parseErrors: 0, truncated: 0, lastErrno: -105 });
    expect(c.queueStat(1, 'enobufs')).toBe(2);
    expect(c.queueStat(1, 'lastErrno')).toBe(105);
    expect(c.queueStat(0, 'packets')).toBe(0);
  });
});

describe('PacketThreads (stand-in threads)', () => {
  it('starts, splits the queues, sums counters, and resolves a change once every thread acked', async () => {
    const r = recorder();
    const pool = await startFake(2, 'ok', r.ev);
    try {
      expect(pool.bound.map((b) => [b.qi, b.queueNum, b.portid])).toEqual([[0, 0, 1000], [1, 1, 1001], [2, 2, 1002], [3, 3, 1003]]);
      pool.run();
      expect(await pool.change([{ op: 'set', cmd: { name: 'a' } }])).toBeNull();
      expect(await pool.change([{ op: 'set', cmd: { name: 'b' } }])).toBeNull();
      expect(pool.generation).toBe(2);
      const pubs = await pool.publish();
      // Each thread publishes for the generation it acked; counts per flow position.
      expect(pubs.map((p) => [p!.gen, [...p!.flowMatches]])).toEqual([[2, [1, 1]], [2, [2, 2]]]);
      const into = { accepted: new Float64Array(4), dropped: new Float64Array(4), reasons: new Float64Array(REASON_NAMES.length), batchSizes: new BatchSizeHistogram(), traceDropped: 0 };
      sumThreadCounters(pool.counters, into);
      expect([...into.accepted]).toEqual([10, 20, 30, 40]);
    } finally {
      await pool.stop();
    }
    expect(r.died).toEqual([]);
  });

  it('a thread that does not ack within the bound: the change resolves with a FAIL text naming it', async () => {
    const pool = await startFake(2, 'silent:1', recorder().ev);
    try {
      expect(await pool.change([{ op: 'delete', name: 'x' }], 100)).toBe('packet thread 1 did not take the change within 100 ms');
    } finally {
      await pool.stop();
    }
  });

  it('a thread that applied a change differently reports it', async () => {
    const pool = await startFake(2, 'fail:0', recorder().ev);
    try {
      expect(await pool.change([{ op: 'set', cmd: { name: 'a', target: 't' } }])).toBeNull();
      expect(pool.failures).toEqual(['packet thread 0: FAIL: no table here']);
    } finally {
      await pool.stop();
    }
  });

  it('a bind error of one thread rejects the start with that thread\'s line; the others are stopped', async () => {
    const err = await startFake(2, 'bind-error:1', recorder().ev).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(NfqlbError);
    expect((err as NfqlbError).code).toBe('NFQLB_ERR_QUEUE_BUSY');
    expect((err as NfqlbError).message).toBe('queue 1 is bound by another process (EBUSY); stop the other nfqlb or pick another --queue');
  });

  it('a thread that dies is reported (the daemon then exits non-zero), and changes no longer wait for it', async () => {
    const r = recorder();
    const pool = await startFake(2, 'die:0', r.ev);
    try {
      pool.run();
      const e = await r.onDeath;
      expect(e.message).toBe('packet thread 0 exited unexpectedly (code 3)');
      expect((e as NfqlbError).code).toBe('NFQLB_ERR_THREAD');
      expect(pool.alive).toBe(false);
      expect(await pool.change([{ op: 'delete', name: 'x' }], 5000)).toBe('packet thread 0 has stopped');
    } finally {
      await pool.stop();
    }
    expect(r.died).toHaveLength(1);
  });

  it('forwards trace text and gives the channel\'s room back', async () => {
    const r = recorder();
    const pool = await startFake(1, 'trace', r.ev);
    try {
      pool.run();
      await pool.publish(); // handled after the trace messages of 'start'
      expect(r.traced).toEqual(['thread 0 a\n', 'thread 0 b\n']);
      expect(Atomics.load(pool.traceState, TRACE_STATE_INFLIGHT)).toBe(-('thread 0 a\n'.length * 2)); // the stand-in did not add
    } finally {
      await pool.stop();
    }
  });
});

describe('traceChannel', () => {
  it('traces nothing without a client, posts while there is room, counts dropped lines past the bound', () => {
    const state = new Int32Array(new SharedArrayBuffer(4 * TRACE_STATE_WORDS));
    const posted: FromThread[] = [];
    const counters = new ThreadCounters(1);
    const shm = { mask: TRACE_FLOWS } as never;
    const sink = traceChannel({ postMessage: (m: FromThread) => posted.push(m) } as never, state, shm, counters, 10);
    expect(sink.perPacketMask()).toBe(0);
    Atomics.store(state, TRACE_STATE_ACTIVE, 1);
    expect(sink.perPacketMask()).toBe(TRACE_FLOWS);
    sink.send('abc\ndef\n');
    expect(posted).toEqual([{ t: 'trace', text: 'abc\ndef\n' }]);
    sink.send('ghi\n'); // 8 + 4 > 10: dropped
    expect(counters.trace[0]).toBe(1);
    Atomics.sub(state, TRACE_STATE_INFLIGHT, 8); // the main thread took the first
    sink.send('ghi\n');
    expect(posted).toHaveLength(2);
  });
});

// ---------------------------------------------------------------------------
// The real thread state, without a Worker: generations of flows at batch boundaries.

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-pt`;
const TA = `${PREFIX}-a`;
const TB = `${PREFIX}-b`;

describe('PacketThread: flows swapped between batches', () => {
  beforeAll(() => {
    for (const [name, fw] of [[TA, 11], [TB, 22]] as const) {
      createTable(name, 997, 4, 0);
      const t = openTable(name, true);
      t.activate([fw]);
    }
  });
  afterAll(() => {
    deleteTable(TA);
    deleteTable(TB);
  });

  function data(): PacketThreadData {
    return { ...BASE, kind: 'nfqlb-packet-thread', index: 0, queues: [7], serve: [], counters: new ThreadCounters(1).buffer, traceState: new SharedArrayBuffer(4 * TRACE_STATE_WORDS), wake: new SharedArrayBuffer(4), initialOps: [{ op: 'set', cmd: { name: 'f', target: TA, protocols: 'udp', dports: '5001' } }] };
  }

  /** One batch of `n` copies of a UDP packet to port 5001, as the addon hands it over. */
  function batch(n: number): QueueBatch & { count: number } {
    const pkt = ipv4('198.51.100.1', '192.0.2.1', 17, udp(1234, 5001));
    const packets = new Uint8Array(pkt.length * n);
    const offsets = new Uint32Array(n);
    const lengths = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      packets.set(pkt, i * pkt.length);
      offsets[i] = i * pkt.length;
      lengths[i] = pkt.length;
    }
    return { count: n, queueNum: 7, packets, offsets, lengths, origLengths: lengths, ids: new Uint32Array(n), hwProtocol: new Uint16Array(n), queueIndex: new Uint16Array(n), verdicts: new Int32Array(n) };
  }

  it('counts fragments straight into its shared counters: table statistics and store counters, which the main thread sums', () => {
    const d = { ...data(), pipeline: { fragmentStoreSlots: 4 } };
    const t = new PacketThread(d, { postMessage: () => {} } as never);
    try {
      expect(t.pipeline.fragments.stats).toBe(t.counters.fragmentStats);
      expect(t.pipeline.fragmentStore!.counters).toBe(t.counters.fragmentStore);
      // A later fragment before its first: kept in the store.
      const later = ipv4('198.51.100.1', '192.0.2.1', 17, new Array<number>(16).fill(0), { id: 77, fragOffset: 1 });
      const b = { count: 1, queueNum: 7, packets: later, offsets: new Uint32Array([0]), lengths: new Uint32Array([later.length]), origLengths: new Uint32Array([later.length]), ids: new Uint32Array(1), hwProtocol: new Uint16Array(1), queueIndex: new Uint16Array(1), verdicts: new Int32Array(1) };
      makeBatchHandler(t.pipeline, t.counters, t.batchSizes, 0, null, null, () => {})(b);
      const seen = new ThreadCounters(1, d.counters);
      expect(seen.fragmentStats[FS_LOOKUPS]).toBeGreaterThan(0);
      expect(seen.fragmentStore[FSTORE_STORED]).toBe(1);
      expect(seen.fragmentStore[FSTORE_IN_USE]).toBe(1);
    } finally {
      t.close();
    }
  });

  it('NFQLB_QUEUE_SOCKETS picks one socket per thread or per queue; anything else is the default (one per thread)', () => {
    expect(DEFAULT_QUEUE_SOCKETS).toBe('thread');
    expect(queueSocketsFromEnv({})).toBe('thread');
    expect(queueSocketsFromEnv({ NFQLB_QUEUE_SOCKETS: 'queue' })).toBe('queue');
    expect(queueSocketsFromEnv({ NFQLB_QUEUE_SOCKETS: 'thread' })).toBe('thread');
    expect(queueSocketsFromEnv({ NFQLB_QUEUE_SOCKETS: 'Queue' })).toBe('thread');
  });

  it('with one socket for several queues, counts each packet for the queue it came from (queueIndex)', () => {
    const d = { ...data(), queues: [7, 8, 9], counters: new ThreadCounters(3).buffer };
    const t = new PacketThread(d, { postMessage: () => {} } as never);
    try {
      const b = batch(5);
      b.queueIndex.set([0, 2, 2, 1, 2]);
      // Queue indexes 0, 1, 2 of the daemon; the socket's queueIndex k is qis[k].
      makeBatchHandler(t.pipeline, t.counters, t.batchSizes, [2, 0, 1], null, null, () => {})(b);
      expect([...b.verdicts]).toEqual([11, 11, 11, 11, 11]);
      expect([...t.counters.accepted]).toEqual([1, 3, 1]);
      expect([...t.counters.dropped]).toEqual([0, 0, 0]);
    } finally {
      t.close();
    }
  });

  it('decides each batch with one whole generation; acks carry the generation; publish reports per-flow and per-fwmark counts', () => {
    const posted: FromThread[] = [];
    const t = new PacketThread(data(), { postMessage: (m: FromThread) => posted.push(m) } as never);
    try {
      const handler = makeBatchHandler(t.pipeline, t.counters, t.batchSizes, 0, null, null, () => {});
      const b = batch(3);
      handler(b);
      expect([...b.verdicts]).toEqual([11, 11, 11]);
      // A higher-priority flow to the other table: the next batch uses it entirely.
      expect(t.applyGeneration(1, [{ op: 'set', cmd: { name: 'g', target: TB, protocols: 'udp', dports: '5001', priority: 5 } }])).toEqual({ t: 'ack', gen: 1, failures: [] });
      handler(b);
      expect([...b.verdicts]).toEqual([22, 22, 22]);
      expect(t.applyGeneration(2, [{ op: 'delete', name: 'g' }])).toEqual({ t: 'ack', gen: 2, failures: [] });
      handler(b);
      expect([...b.verdicts]).toEqual([11, 11, 11]);
      expect([...t.counters.accepted]).toEqual([9]);
      expect(t.counters.reasons[REASON_TARGET]).toBe(9);
      expect(t.counters.batchTotals[1]).toBe(3);
      const p = t.publish(9);
      expect(p).toMatchObject({ t: 'published', id: 9, gen: 2 });
      expect([...p.flowMatches]).toEqual([6]);
      expect(p.targets).toEqual([{ name: TA, fwmarks: [11], counts: [6], noTarget: 0 }]);
      // A change the thread cannot make the same way is reported, not hidden.
      expect(t.applyGeneration(3, [{ op: 'set', cmd: { name: 'h', target: `${PREFIX}-none`, protocols: 'udp' } }]).failures).toEqual(["FAIL: Couldn't create load-balancer"]);
    } finally {
      t.close();
    }
  });
});
