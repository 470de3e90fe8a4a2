/**
 * A packet thread's counters in shared memory: the layout seen the same from
 * the writer and a reader over the same buffer, the arrays apart, queue
 * stats stored per queue index, a too small buffer refused, the threads'
 * counters summed (the batch size histogram included), queues split round robin.
 */
import { BatchSizeHistogram } from '../../../src/base/counters';
import { REASON_NAMES } from '../../../src/datapath/pipeline';
import { queuesOfThread, sumThreadCounters, ThreadCounters } from '../../../src/daemon/threadcounters';
import { QUEUE_STAT_FIELDS } from '../../../src/addon/queue';

describe('ThreadCounters', () => {
  it('lays its arrays one after another over one buffer, seen the same by a reader', () => {
    const w = new ThreadCounters(3);
    expect(w.buffer.byteLength).toBe(ThreadCounters.bytes(3));
    const arrays = [w.accepted, w.dropped, w.reasons, w.batchBuckets, w.batchTotals, w.queueStats, w.trace, w.fragmentStats, w.fragmentStore, w.tunErrno];
    arrays.forEach((a, i) => a.fill(i + 1));
    const r = new ThreadCounters(3, w.buffer);
    expect([r.accepted, r.dropped, r.reasons, r.batchBuckets, r.batchTotals, r.queueStats, r.trace, r.fragmentStats, r.fragmentStore, r.tunErrno].map((a) => [...new Set(a)])).toEqual(arrays.map((_, i) => [i + 1]));
    expect(r.reasons.length).toBe(REASON_NAMES.length);
    expect(r.queueStats.length).toBe(3 * QUEUE_STAT_FIELDS.length);
    expect(arrays.reduce((n, a) => n + a.byteLength, 0)).toBe(ThreadCounters.bytes(3));
  });

  it('refuses a buffer too small for its queues', () => {
    expect(() => new ThreadCounters(4, new ThreadCounters(3).buffer)).toThrow(RangeError);
  });

  it('stores a queue\'s stats at its index; lastErrno as a positive errno, null as 0', () => {
    const t = new ThreadCounters(2);
    const stats = Object.fromEntries(QUEUE_STAT_FIELDS.map((f, i) => [f, i + 1])) as Record<(typeof QUEUE_STAT_FIELDS)[number], number | null>;
    t.publishQueueStats(1, { ...stats, lastErrno: -11 });
    expect(t.queueStat(1, 'packets')).toBe(2);
    expect(t.queueStat(1, 'lastErrno')).toBe(11);
    expect(t.queueStat(0, 'packets')).toBe(0);
    t.publishQueueStats(1, { ...stats, lastErrno: null });
    expect(t.queueStat(1, 'lastErrno')).toBe(0);
  });

  it('counts batch sizes straight into the shared buffer', () => {
    const t = new ThreadCounters(1);
    t.batchSizeHistogram().observe(5);
    const r = new ThreadCounters(1, t.buffer);
    expect([...r.batchTotals]).toEqual([5, 1]);
  });
});

describe('sumThreadCounters', () => {
  it('sums every thread into the daemon\'s arrays, replacing what they held', () => {
    const a = new ThreadCounters(2);
    const b = new ThreadCounters(2);
    a.accepted[0] = 3;
    b.accepted[1] = 4;
    a.reasons[1] = 1;
    b.reasons[1] = 2;
    a.batchSizeHistogram().observe(2);
    b.batchSizeHistogram().observe(6);
    b.trace[0] = 8;
    const into = { accepted: new Float64Array([99, 99]), dropped: new Float64Array(2), reasons: new Float64Array(REASON_NAMES.length), batchSizes: new BatchSizeHistogram(), traceDropped: 0 };
    sumThreadCounters([a, b], into);
    sumThreadCounters([a, b], into);
    expect([...into.accepted]).toEqual([3, 4]);
    expect(into.reasons[1]).toBe(3);
    expect([into.batchSizes.sum, into.batchSizes.count]).toEqual([8, 2]);
    expect(into.traceDropped).toBe(8);
  });
});

describe('queuesOfThread', () => {
  it('gives each queue one thread, round robin', () => {
    expect([0, 1, 2].map((t) => queuesOfThread(5, 3, t))).toEqual([[0, 3], [1, 4], [2]]);
    expect(queuesOfThread(0, 2, 0)).toEqual([]);
  });
});
