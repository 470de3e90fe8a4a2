/**
 * nfqlb's trace mask: its bits, and the two ways `nfqlb trace` gives one
 * (`--selection=log,packet,...` and `--mask=...`), as cmdTrace.c reads them.
 */
import { UsageError } from '../../base/errors';
import { strtol } from '../../base/catoi';

/** Trace mask bits, nfqlb's TRACE_* (log.h, trace.h). */
export const TRACE_LOG = 1;
export const TRACE_PACKET = 2;
export const TRACE_FRAG = 4;
export const TRACE_FLOW_CONF = 8;
export const TRACE_SCTP = 16;
export const TRACE_TARGET = 32;
export const TRACE_FLOWS = 64;
/** The bits that produce lines per packet: the daemon needs a traced batch handler only for these. */
export const TRACE_PER_PACKET = TRACE_PACKET | TRACE_FRAG | TRACE_SCTP | TRACE_FLOWS;

/** `--selection` names, in nfqlb's order (cmdTrace.c str2mask). */
export const TRACE_SELECTION: Readonly<Record<string, number>> = {
  log: TRACE_LOG,
  packet: TRACE_PACKET,
  frag: TRACE_FRAG,
  'flow-conf': TRACE_FLOW_CONF,
  sctp: TRACE_SCTP,
  target: TRACE_TARGET,
  flows: TRACE_FLOWS,
};

/**
 * `--selection=log,packet,...` → mask. Names are split on ',' and empty
 * items skipped (strtok, as nfqlb). Throws UsageError (an NfqlbError, code
 * NFQLB_ERR_TRACE_SELECTION) on an unknown name — nfqlb silently ignores it,
 * which leaves a user tracing nothing without knowing why.
 */
export function parseSelection(selection: string): number {
  let mask = 0;
  for (const name of selection.split(',')) {
    if (name === '') continue;
    const bit = TRACE_SELECTION[name];
    if (bit === undefined || !Object.prototype.hasOwnProperty.call(TRACE_SELECTION, name)) {
      throw new UsageError(
        `Unknown trace selection [${name}]; use a comma separated list of ${Object.keys(TRACE_SELECTION).join(',')}`,
        1, 'NFQLB_ERR_TRACE_SELECTION',
      );
    }
    mask |= bit;
  }
  return mask >>> 0;
}

/**
 * `--mask=...` → mask, as nfqlb's strtol(text, NULL, 0) assigned to a
 * uint32: leading blanks, optional sign, 0x.. hex, 0.. octal or decimal, up
 * to the first character that does not fit; 0 when there is no number;
 * saturated at the limits of a 64-bit long, then the low 32 bits.
 */
export function parseMask(text: string): number {
  return Number(BigInt.asUintN(32, strtol(text, 0)));
}

/** `0x%08x`. */
export function hex8(mask: number): string {
  return `0x${(mask >>> 0).toString(16).padStart(8, '0')}`;
}
