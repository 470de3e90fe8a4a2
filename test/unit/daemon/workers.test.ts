/**
 * The daemon's side of --workers: the threads' shared counters folded into
 * the daemon's arrays, and their published counts collected into its flows
 * and targets (matches only when every thread answered for the current
 * generation; fwmark counts only ever grow).
 */
import { BatchSizeHistogram } from '../../../src/base/counters';
import { FlowSet } from '../../../src/flows/flowset';
import { REASON_NAMES, REASON_TARGET } from '../../../src/datapath/pipeline';
import { MaglevTable } from '../../../src/tables/maglev';
import { Target, TargetRegistry } from '../../../src/tables/targets';
import type { ServedTable } from '../../../src/tables/servedtable';
import type { PacketThreads, ThreadPublication } from '../../../src/daemon/packetthreads';
import { ThreadCounters } from '../../../src/daemon/threadcounters';
import { collectFromThreads, foldThreadCounters } from '../../../src/daemon/workers';

describe('foldThreadCounters', () => {
  it('sums the threads\' counters into the daemon\'s arrays and returns the dropped trace lines', () => {
    const a = new ThreadCounters(2);
    const b = new ThreadCounters(2);
    a.accepted[0] = 5;
    b.accepted[1] = 7;
    b.dropped[1] = 1;
    a.reasons[REASON_TARGET] = 5;
    b.reasons[REASON_TARGET] = 7;
    a.trace[0] = 2;
    b.trace[0] = 3;
    const into = { accepted: new Float64Array(2), dropped: new Float64Array(2), reasons: new Float64Array(REASON_NAMES.length), batchSizes: new BatchSizeHistogram() };
    expect(foldThreadCounters({ counters: [a, b] } as unknown as PacketThreads, into)).toBe(5);
    expect([...into.accepted]).toEqual([5, 7]);
    expect([...into.dropped]).toEqual([0, 1]);
    expect(into.reasons[REASON_TARGET]).toBe(12);
  });
});

describe('collectFromThreads', () => {
  function setup(pubs: (ThreadPublication | null)[], generation = 1): { threads: PacketThreads; flows: FlowSet<Target<ServedTable>>; traceFlows: FlowSet<string>; target: Target<ServedTable> } {
    const table = MaglevTable.create(97, 4, 0, 't1') as unknown as ServedTable;
    const registry = new TargetRegistry<ServedTable>({ open: () => table, close: () => undefined });
    const flows = new FlowSet<Target<ServedTable>>({ targetName: (t) => t.name });
    expect(flows.applySet({ name: 'f', target: 't1' }, registry)).toBe('OK');
    expect(flows.applySet({ name: 'g', target: 't1', priority: 2 }, registry)).toBe('OK');
    const traceFlows = new FlowSet<string>({ promiscuousPing: true });
    return { threads: { generation, publish: async () => pubs } as unknown as PacketThreads, flows, traceFlows, target: registry.list()[0] };
  }
  const pub = (gen: number, flowMatches: number[], fwmarks: number[], counts: number[], noTarget = 0): ThreadPublication => ({
    gen, flowMatches: new Float64Array(flowMatches), traceMatches: new Float64Array(0), targets: [{ name: 't1', fwmarks, counts, noTarget }],
  });

  it('sums matches by position and fwmarks per target, after folding the shared counters', async () => {
    const s = setup([pub(1, [1, 2], [10, 11], [3, 4], 1), pub(1, [10, 20], [10], [5], 2)]);
    let folded = 0;
    await collectFromThreads(s.threads, s.flows, s.traceFlows, () => [s.target], () => folded++);
    expect(folded).toBe(1);
    expect(s.flows.flows.map((f) => f.matches).sort((x, y) => x - y)).toEqual([11, 22]);
    expect(s.target.fwmarks.get(10)).toBe(8);
    expect(s.target.fwmarks.get(11)).toBe(4);
    expect(s.target.noTarget).toBe(3);
    // Counts only grow: a thread's lower figure (a restart of its count) does not take any back.
    s.threads.publish = async () => [pub(1, [0, 0], [10], [1])];
    await collectFromThreads(s.threads, s.flows, s.traceFlows, () => [s.target], () => {});
    expect(s.target.fwmarks.get(10)).toBe(8);
    expect(s.target.noTarget).toBe(3);
  });

  it('leaves the matches alone when a thread did not answer, or answered for another generation', async () => {
    for (const pubs of [[pub(1, [1, 2], [], []), null], [pub(1, [1, 2], [], []), pub(0, [5, 5], [], [])]]) {
      const s = setup(pubs);
      await collectFromThreads(s.threads, s.flows, s.traceFlows, () => [s.target], () => {});
      expect(s.flows.flows.map((f) => f.matches)).toEqual([0, 0]);
    }
  });
});
