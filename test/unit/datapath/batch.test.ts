/**
 * The batch handler (the hot path): a verdict per packet written into the
 * batch, counts per queue index added once per batch, per-target fwmark and
 * no-target counts, the batch size observed, and trace text built only when
 * the sink's mask asks for it and sent in one piece per batch.
 */
import { BatchSizeHistogram } from '../../../src/base/counters';
import { VERDICT_DROP, type QueueBatch } from '../../../src/addon/queue';
import { makeBatchHandler, type TraceSink } from '../../../src/datapath/batch';
import { Pipeline } from '../../../src/datapath/pipeline';
import { MaglevTable } from '../../../src/tables/maglev';
import { Target } from '../../../src/tables/targets';
import { ipv4, tcp } from '../../helpers/packets';

/** A batch of the given packets as the addon hands it over. */
function batchOf(pkts: Uint8Array[]): QueueBatch {
  const n = pkts.length;
  const packets = new Uint8Array(pkts.reduce((a, p) => a + p.length, 0));
  const offsets = new Uint32Array(n);
  const lengths = new Uint32Array(n);
  let at = 0;
  pkts.forEach((p, i) => {
    packets.set(p, at);
    offsets[i] = at;
    lengths[i] = p.length;
    at += p.length;
  });
  return { count: n, queueNum: 3, packets, offsets, lengths, origLengths: lengths, ids: new Uint32Array(n), hwProtocol: new Uint16Array(n), queueIndex: new Uint16Array(n), verdicts: new Int32Array(n) };
}

function setup(): { table: MaglevTable; target: Target<MaglevTable>; pipeline: Pipeline<MaglevTable> } {
  const table = MaglevTable.create(97, 4, 0, 'lb');
  const target = new Target('lb', table);
  return { table, target, pipeline: new Pipeline<MaglevTable>(null, { fixedTarget: target }) };
}

const PKT = ipv4('198.51.100.7', '192.0.2.1', 6, tcp(1234, 80));
const BAD = new Uint8Array([0x45, 0, 0]);

describe('makeBatchHandler', () => {
  it('writes a verdict per packet and counts the batch for its queue index', () => {
    const { table, target, pipeline } = setup();
    table.activate([42]);
    const counters = { accepted: new Float64Array(2), dropped: new Float64Array(2) };
    const sizes = new BatchSizeHistogram();
    let after = 0;
    const handler = makeBatchHandler(pipeline, counters, sizes, 1, null, null, () => after++);
    const b = batchOf([PKT, BAD, PKT]);
    handler(b);
    expect([...b.verdicts]).toEqual([42, VERDICT_DROP, 42]);
    expect([...counters.accepted]).toEqual([0, 2]);
    expect([...counters.dropped]).toEqual([0, 1]);
    expect(target.fwmarks.get(42)).toBe(2);
    expect(sizes.count).toBe(1);
    expect(sizes.sum).toBe(3);
    expect(after).toBe(1);
  });

  it('counts a table without active targets per table (no_target) and drops', () => {
    const { target, pipeline } = setup();
    const counters = { accepted: new Float64Array(1), dropped: new Float64Array(1) };
    const b = batchOf([PKT, PKT]);
    makeBatchHandler(pipeline, counters, new BatchSizeHistogram(), 0, null, null, () => {})(b);
    expect([...b.verdicts]).toEqual([VERDICT_DROP, VERDICT_DROP]);
    expect(target.noTarget).toBe(2);
    expect([...counters.dropped]).toEqual([2]);
  });

  it('builds trace text only when the sink has a mask, and sends a batch in one piece', () => {
    const { table, pipeline } = setup();
    table.activate([7]);
    let mask = 0;
    const formatted: number[] = [];
    const sent: string[] = [];
    const sink: TraceSink = {
      perPacketMask: () => mask,
      formatPacket: (m, _flows, _info, _pkt, _off, len, decision) => {
        formatted.push(m);
        return `len=${len} fwmark=${decision.fwmark}\n`;
      },
      send: (text) => sent.push(text),
    };
    const handler = makeBatchHandler(pipeline, { accepted: new Float64Array(1), dropped: new Float64Array(1) }, new BatchSizeHistogram(), 0, sink, null, () => {});
    handler(batchOf([PKT, PKT]));
    expect(formatted).toEqual([]);
    expect(sent).toEqual([]);
    mask = 4;
    handler(batchOf([PKT, PKT]));
    expect(formatted).toEqual([4, 4]);
    expect(sent).toEqual([`len=${PKT.length} fwmark=7\nlen=${PKT.length} fwmark=7\n`]);
  });

  it('with one socket for several queues, counts each packet for the queue index it came from', () => {
    const { table, pipeline } = setup();
    table.activate([9]);
    const counters = { accepted: new Float64Array(3), dropped: new Float64Array(3) };
    const handler = makeBatchHandler(pipeline, counters, new BatchSizeHistogram(), [2, 0], null, null, () => {});
    const b = batchOf([PKT, BAD, PKT]);
    b.queueIndex.set([0, 0, 1]);
    handler(b);
    handler(b);
    expect([...counters.accepted]).toEqual([2, 0, 2]);
    expect([...counters.dropped]).toEqual([0, 0, 2]);
  });
});
