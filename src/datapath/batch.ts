/**
 * The batch handler: what runs for every batch a queue delivers, in a packet
 * thread and on the daemon's single loop alike. This is the hot path: one
 * pipeline decision per packet, its verdict written into the batch (the addon
 * sends them all in one message when the handler returns), the counts added
 * once per batch. Per packet: no allocation, no message, no string work
 * unless a trace client asked for it.
 */
import type { BatchSizeHistogram } from '../base/counters';
import type { FlowSet } from '../flows/flowset';
import type { PacketInfo } from '../packet/classify';
import type { LookupTable } from '../tables/targets';
import { VERDICT_DROP, type QueueBatch } from '../addon/queue';
import { flushReinjections } from '../addon/tun';
import { REASON_NO_TARGET, REASON_TARGET, type Decision, type Pipeline } from './pipeline';

/** nfqlb's trace text of one decided packet ('' when `mask` selects nothing for it). */
export type PacketTraceFormatter = (
  mask: number,
  traceFlows: FlowSet<string> | null,
  info: PacketInfo,
  pkt: Uint8Array,
  off: number,
  len: number,
  decision: Decision<LookupTable>,
) => string;

/** Where trace text of a batch goes, and how a packet's text is written. */
export interface TraceSink {
  /** The per-packet bits to trace this batch: 0 with no client (then nothing else is called). */
  perPacketMask(): number;
  /** Called per traced packet only. */
  formatPacket: PacketTraceFormatter;
  send(text: string): void;
}

/** Where a batch handler counts: ThreadCounters in a packet thread, the daemon's own arrays on the single loop. */
export interface BatchCounters {
  /** Packets accepted / dropped, by queue index. */
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
}

/**
 * The batch handler of one queue (index `qi`), for a packet thread and for
 * the daemon's single loop alike. One pipeline decision per packet; per
 * packet no allocation, no message. Trace text is built only for batches
 * with a non-zero mask. Kept fragments whose first fragment came in the
 * batch are written to the tun device `tunFd` in one native call after the
 * decisions (the copies come back through the same queue, so to the same
 * thread and fragment table); a failed write leaves its errno in tunErrno[0].
 */
export function makeBatchHandler<T extends LookupTable>(
  pipeline: Pipeline<T>,
  counters: BatchCounters,
  batchSizes: BatchSizeHistogram,
  qi: number | readonly number[],
  trace: TraceSink | null,
  traceFlows: FlowSet<string> | null,
  afterBatch: () => void,
  tunFd = -1,
  tunErrno: Int32Array = new Int32Array(1),
): (batch: QueueBatch) => void {
  const last = pipeline.last;
  const accepted = counters.accepted;
  const dropped = counters.dropped;
  const store = pipeline.fragmentStore;
  const clock = pipeline.clock;
  // One socket for several queues: packet i counts for queue index qis[queueIndex[i]].
  const qis = typeof qi === 'number' ? [qi] : qi;
  const multi = qis.length > 1;
  const qi0 = qis[0];
  // Per batch here, added to the shared counters once per batch: a store per packet into the
  // SharedArrayBuffer the main thread reads cost measurably more than this.
  const accBy = new Float64Array(qis.length);
  const pktBy = new Float64Array(qis.length);
  return (batch: QueueBatch): void => {
    clock[0] = performance.now();
    const n = batch.count;
    const packets = batch.packets;
    const offsets = batch.offsets;
    const lengths = batch.lengths;
    const verdicts = batch.verdicts;
    const queueIndex = batch.queueIndex;
    const traceMask = trace === null ? 0 : trace.perPacketMask();
    let text = '';
    let acc = 0;
    for (let i = 0; i < n; i++) {
      const fw = pipeline.decideNow(packets, offsets[i] | 0, lengths[i] | 0);
      if (multi) pktBy[queueIndex[i]]++;
      if (fw >= 0) {
        verdicts[i] = fw;
        acc++;
        if (multi) accBy[queueIndex[i]]++;
        if (last.reason === REASON_TARGET) last.target!.fwmarks.add(fw);
      } else {
        verdicts[i] = VERDICT_DROP;
      }
      // Per table, so an operator sees which table ran out of targets (nfqlb_table_no_target_total).
      if (last.reason === REASON_NO_TARGET) last.target!.noTarget++;
      if (traceMask !== 0) text += trace!.formatPacket(traceMask, traceFlows, pipeline.info, packets, offsets[i], lengths[i], last);
    }
    if (store !== null && store.pendingCount > 0) flushReinjections(tunFd, store, tunErrno);
    if (!multi) {
      accepted[qi0] += acc;
      dropped[qi0] += n - acc;
    } else {
      for (let k = 0; k < qis.length; k++) {
        accepted[qis[k]] += accBy[k];
        dropped[qis[k]] += pktBy[k] - accBy[k];
        accBy[k] = 0;
        pktBy[k] = 0;
      }
    }
    batchSizes.observe(n);
    if (text !== '') trace!.send(text);
    afterBatch();
  };
}
