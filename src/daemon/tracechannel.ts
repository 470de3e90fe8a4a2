/**
 * The trace channel of the packet threads: the per-packet mask is the
 * nfqlb-trace shm mask (mapped in each thread), gated by a flag the main
 * thread sets while a trace client listens; with no client the batch handler
 * does no trace work. Lines go to the main thread's TraceServer in one
 * message per batch through a bounded channel: past TRACE_CHANNEL_BYTES in
 * flight, lines are dropped and counted.
 */
import type { MessagePort } from 'node:worker_threads';
import { countLines } from '../base/lines';
import type { TraceShm } from '../addon/shm';
import type { TraceSink } from '../datapath/batch';
import { formatPacketTrace, TRACE_PER_PACKET } from '../services/trace';
import type { FromThread } from './threadmessages';
import type { ThreadCounters } from './threadcounters';

/** Most trace bytes posted by all threads and not yet taken by the main thread; beyond, lines are dropped (counted). */
export const TRACE_CHANNEL_BYTES = 4 * 1024 * 1024;

/** Words of the Int32Array over PacketThreadData.traceState. */
export const TRACE_STATE_ACTIVE = 0; // 1 while a trace client listens (main thread writes)
export const TRACE_STATE_INFLIGHT = 1; // trace bytes posted, not yet taken (threads add, main subtracts)
export const TRACE_STATE_MASK = 2; // the mask when the trace shm is private to the main thread
export const TRACE_STATE_WORDS = 3;

/** The trace sink of a thread: reads the mask, posts batches of lines while the channel has room. */
export function traceChannel(port: Pick<MessagePort, 'postMessage'>, state: Int32Array, shm: TraceShm | null, counters: ThreadCounters, limit = TRACE_CHANNEL_BYTES): TraceSink {
  return {
    perPacketMask(): number {
      if (Atomics.load(state, TRACE_STATE_ACTIVE) === 0) return 0;
      const mask = shm !== null ? shm.mask : Atomics.load(state, TRACE_STATE_MASK) >>> 0;
      return (mask & TRACE_PER_PACKET) >>> 0;
    },
    formatPacket: formatPacketTrace,
    send(text: string): void {
      if (Atomics.load(state, TRACE_STATE_INFLIGHT) + text.length > limit) {
        counters.trace[0] += countLines(text);
        return;
      }
      Atomics.add(state, TRACE_STATE_INFLIGHT, text.length);
      port.postMessage({ t: 'trace', text } satisfies FromThread);
    },
  };
}
