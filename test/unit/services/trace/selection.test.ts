/**
 * The trace mask's vocabulary: nfqlb's bits and --selection names in its
 * order, the per-packet bits, empty items skipped as strtok does, 0x%08x.
 * Unknown names and --mask as strtol reads it are in test/unit/services/trace/trace.test.ts
 * ("parseSelection / parseMask").
 */
import { hex8, parseSelection, TRACE_FLOWS, TRACE_FRAG, TRACE_PACKET, TRACE_PER_PACKET, TRACE_SCTP, TRACE_SELECTION } from '../../../../src/services/trace/selection';

it("names nfqlb's bits in its order (cmdTrace.c str2mask), one bit each", () => {
  expect(Object.entries(TRACE_SELECTION)).toEqual([
    ['log', 1], ['packet', 2], ['frag', 4], ['flow-conf', 8], ['sctp', 16], ['target', 32], ['flows', 64],
  ]);
  expect(parseSelection(Object.keys(TRACE_SELECTION).join(','))).toBe(127);
});

it('makes lines per packet for packet, frag, sctp and flows only', () => {
  expect(TRACE_PER_PACKET).toBe(TRACE_PACKET | TRACE_FRAG | TRACE_SCTP | TRACE_FLOWS);
});

it('skips empty items as strtok does', () => {
  expect(parseSelection(',,flows,')).toBe(TRACE_FLOWS);
  expect(parseSelection('')).toBe(0);
});

it('prints 0x%08x, unsigned', () => {
  expect(hex8(TRACE_PER_PACKET)).toBe('0x00000056');
  expect(hex8(-1)).toBe('0xffffffff');
  expect(hex8(0)).toBe('0x00000000');
});
