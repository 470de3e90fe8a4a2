/** The trace mask as `nfqlb trace` takes it: --selection names (nfqlb's order), --mask as strtol reads it, 0x%08x. */
import { NfqlbError } from '../../../../src/base/errors';
import { hex8, parseMask, parseSelection, TRACE_FLOWS, TRACE_LOG, TRACE_PACKET, TRACE_PER_PACKET, TRACE_SELECTION } from '../../../../src/services/trace/selection';

describe('parseSelection', () => {
  it('ors the named bits; empty items are skipped as strtok does', () => {
    expect(parseSelection('log,packet')).toBe(TRACE_LOG | TRACE_PACKET);
    expect(parseSelection(',,flows,')).toBe(TRACE_FLOWS);
    expect(parseSelection('')).toBe(0);
    expect(parseSelection(Object.keys(TRACE_SELECTION).join(','))).toBe(127);
  });

  it('refuses an unknown name (nfqlb ignores it) and one of Object.prototype', () => {
    for (const bad of ['log,nope', 'toString', '__proto__']) {
      let err: unknown;
      try {
        parseSelection(bad);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(NfqlbError);
      expect((err as NfqlbError).code).toBe('NFQLB_ERR_TRACE_SELECTION');
    }
  });
});

describe('parseMask and hex8', () => {
  it('reads hex, octal and decimal with strtol, the low 32 bits', () => {
    expect(parseMask('0x40')).toBe(64);
    expect(parseMask('010')).toBe(8);
    expect(parseMask('  12abc')).toBe(12);
    expect(parseMask('junk')).toBe(0);
    expect(parseMask('-1')).toBe(0xffffffff);
    expect(parseMask('0x1ffffffff')).toBe(0xffffffff);
  });

  it('prints 0x%08x', () => {
    expect(hex8(TRACE_PER_PACKET)).toBe('0x00000056');
    expect(hex8(-1)).toBe('0xffffffff');
  });
});
