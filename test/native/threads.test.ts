/**
 * The addon in several threads at once: 4 worker threads load it, each binds
 * and closes its own NFQUEUE queue and creates, maps and removes its own shm
 * objects 20 times, while they all map one object that the main thread then
 * shrinks; the thread that reads past the new end gets the guard's fill byte
 * instead of a SIGBUS, and the fault counter (process-wide, one atomic) moves
 * for every thread. Runs in a network namespace of its own (queues are per
 * namespace); needs root and dist/.
 */
import * as path from 'node:path';
import { createNetns, deleteNetns, nsExec } from '../../testbed/testbed';
import { describeUnless, netnsUnavailable } from '../helpers/skip';

const describeNs = describeUnless(netnsUnavailable());
const CHILD = path.join(__dirname, 'fixtures', 'addon-threads.js');

interface ThreadResult {
  index: number;
  queues: number;
  portids: number[];
  shm: number;
  afterTruncate: number;
  faultsSeen: number;
  errors: string[];
  error?: string;
}

describeNs('the addon in 4 worker threads', () => {
  let ns: string;
  beforeAll(() => {
    ns = createNetns('thr');
  });
  afterAll(() => {
    if (ns !== undefined) deleteNetns(ns);
  });

  it('queues and shm in each thread, and a repaired SIGBUS in one of them', () => {
    const prefix = `nfqlbts-thr-${process.pid}-${Math.floor(Math.random() * 1e9)}`;
    const r = nsExec(ns, process.execPath, [CHILD, prefix, '4', '20'], { timeoutMs: 60000 });
    const { results, faults } = JSON.parse(r.stdout) as { results: ThreadResult[]; faults: number };
    expect(results.map((t) => t.index)).toEqual([0, 1, 2, 3]);
    for (const t of results) {
      expect(t.error).toBeUndefined();
      expect(t.errors).toEqual([]);
      expect(t.queues).toBe(20);
      expect(t.shm).toBe(20);
      expect(t.portids.every((p) => p > 0)).toBe(true);
    }
    expect(results[1].afterTruncate).toBe(0xff);
    expect(results[1].faultsSeen).toBeGreaterThanOrEqual(1);
    expect(faults).toBeGreaterThanOrEqual(1);
  });
});
