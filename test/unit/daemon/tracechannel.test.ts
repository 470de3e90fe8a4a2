/**
 * The packet threads' trace channel: the mask from the shm, or from the
 * main thread's word when its trace shm is private; only the per-packet
 * bits; nfqlb's formatter for the text.
 */
import { formatPacketTrace, TRACE_FLOW_CONF, TRACE_PACKET, TRACE_PER_PACKET } from '../../../src/services/trace';
import { ThreadCounters } from '../../../src/daemon/threadcounters';
import { traceChannel, TRACE_STATE_ACTIVE, TRACE_STATE_MASK, TRACE_STATE_WORDS } from '../../../src/daemon/tracechannel';

describe('traceChannel', () => {
  it('reads the mask from the main thread\'s word without a shared trace shm, per-packet bits only', () => {
    const state = new Int32Array(new SharedArrayBuffer(4 * TRACE_STATE_WORDS));
    const sink = traceChannel({ postMessage: () => {} }, state, null, new ThreadCounters(1));
    Atomics.store(state, TRACE_STATE_MASK, TRACE_PACKET | TRACE_FLOW_CONF);
    expect(sink.perPacketMask()).toBe(0);
    Atomics.store(state, TRACE_STATE_ACTIVE, 1);
    expect(sink.perPacketMask()).toBe(TRACE_PACKET);
    expect(TRACE_PER_PACKET & TRACE_FLOW_CONF).toBe(0);
    expect(sink.formatPacket).toBe(formatPacketTrace);
  });
});
