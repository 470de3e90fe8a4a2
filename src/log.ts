/**
 * Logging: pino JSON lines on stderr, with nfqlb's syslog-style levels
 * (4 warning, 5 notice — the default, 6 info, 7 debug) mapped onto pino's.
 * pino turns disabled levels into no-ops, so a disabled call costs nothing;
 * still, nothing on the per-packet path logs at any level.
 */
import pino from 'pino';

export type Logger = pino.Logger<'notice'>;

const NFQLB_TO_PINO: Record<number, string> = { 0: 'fatal', 1: 'fatal', 2: 'fatal', 3: 'error', 4: 'warn', 5: 'notice', 6: 'info', 7: 'debug' };
export const DEFAULT_LOGLEVEL = 5;

/** The pino level name for an nfqlb level (clamped to 0..7). */
export function pinoLevel(nfqlbLevel: number): string {
  const l = Math.max(0, Math.min(7, Math.trunc(nfqlbLevel)));
  return NFQLB_TO_PINO[l];
}

/** A logger writing to stderr (fd 2) at the given nfqlb level. */
export function createLogger(nfqlbLevel = DEFAULT_LOGLEVEL, destination: pino.DestinationStream = pino.destination(2)): Logger {
  return pino(
    {
      name: 'nfqlb',
      level: pinoLevel(nfqlbLevel),
      customLevels: { notice: 35 },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
