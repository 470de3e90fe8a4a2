/**
 * ScrapeReadings: the NFQUEUE proc table read at most once per scrape and
 * matched to the held queues on queue number AND portid; a failed read gives
 * no proc series and one log line per distinct error.
 */
import { BatchSizeHistogram } from '../../../../src/base/counters';
import type { QueueProcEntry } from '../../../../src/addon/queue';
import { ScrapeReadings } from '../../../../src/services/metrics/readings';
import type { MetricsSource, QueueCounts } from '../../../../src/services/metrics/source';

const entry = (queue: number, portid: number, waiting: number): QueueProcEntry => ({
  queue, portid, waiting, copyMode: 2, copyRange: 1500, queueDropped: 0, userDropped: 0, lastId: 0,
});

function source(queues: QueueCounts[]): MetricsSource {
  return {
    ready: () => true, queues: () => queues, reasons: () => [], flows: () => [], targets: () => [],
    batchSizes: new BatchSizeHistogram(), controlRequests: () => [],
  };
}

const held = (r: ScrapeReadings): string[] => {
  const out: string[] = [];
  r.heldProc((q, e) => out.push(`${q.queueNum}:${e.waiting}`));
  return out;
};

it('reads /proc once per scrape and keeps only the lines of the queues held (number and portid)', async () => {
  let reads = 0;
  const proc = [entry(0, 100, 1), entry(1, 999, 2), entry(1, 101, 3)];
  const r = new ScrapeReadings(
    source([{ queueNum: 0, portid: 100, accepted: 0, dropped: 0 }, { queueNum: 1, portid: 101, accepted: 0, dropped: 0 }]),
    () => (reads++, proc),
    undefined,
  );
  expect(held(r)).toEqual(['0:1', '1:3']);
  expect(held(r)).toEqual(['0:1', '1:3']);
  expect(reads).toBe(1);
  await Promise.resolve();
  proc[0] = entry(0, 100, 7);
  expect(held(r)).toEqual(['0:7', '1:3']);
  expect(reads).toBe(2);
});

it('does not read /proc when no queue is held', () => {
  let reads = 0;
  const r = new ScrapeReadings(source([]), () => (reads++, []), undefined);
  expect(held(r)).toEqual([]);
  expect(reads).toBe(0);
});

it('answers a failed read with no lines, logged once per distinct error', async () => {
  const warned: string[] = [];
  const log = { info: () => {}, warn: (o: object) => void warned.push((o as { err: string }).err) };
  let msg = 'EACCES';
  const r = new ScrapeReadings(source([{ queueNum: 0, portid: 1, accepted: 0, dropped: 0 }]), () => {
    throw new Error(msg);
  }, log);
  for (let i = 0; i < 3; i++) {
    expect(held(r)).toEqual([]);
    await Promise.resolve();
  }
  msg = 'ENOENT';
  held(r);
  expect(warned).toEqual(['EACCES', 'ENOENT']);
});

it('sums fragment and connection-table statistics once per scrape', async () => {
  let reads = 0;
  const src = { ...source([]), conntrack: () => (reads++, { capacity: 4, stats: new Float64Array(10) }) };
  const r = new ScrapeReadings(src, () => [], undefined);
  expect(r.conntrack()?.capacity).toBe(4);
  r.conntrack();
  expect(reads).toBe(1);
  expect(r.fragments()).toBeNull();
});
