/**
 * Logging: pino JSON lines on stderr, on pino's own levels only, so
 * pino-pretty and log pipelines read every line's level (a custom level such
 * as the 35 used before shows as USERLVL there). nfqlb's syslog-style levels
 * map onto them: 0-2 fatal, 3 error, 4 warn, 5 notice (the default) and
 * 6 info both info, 7 debug. `log.notice()` is kept as the name the daemon's
 * code uses for nfqlb's notice lines: it is pino's info.
 * pino turns disabled levels into no-ops, so a disabled call costs nothing;
 * still, nothing on the per-packet path logs at any level.
 */
import pino from 'pino';

export type Logger = pino.Logger & { readonly notice: pino.LogFn };

const NFQLB_TO_PINO: Record<number, pino.Level> = { 0: 'fatal', 1: 'fatal', 2: 'fatal', 3: 'error', 4: 'warn', 5: 'info', 6: 'info', 7: 'debug' };
export const DEFAULT_LOGLEVEL = 5;

/** The pino level name for an nfqlb level (clamped to 0..7). */
export function pinoLevel(nfqlbLevel: number): pino.Level {
  const l = Math.max(0, Math.min(7, Math.trunc(nfqlbLevel)));
  return NFQLB_TO_PINO[l];
}

/** A logger writing to stderr (fd 2) at the given nfqlb level. */
export function createLogger(nfqlbLevel = DEFAULT_LOGLEVEL, destination: pino.DestinationStream = pino.destination(2)): Logger {
  const log = pino(
    {
      name: 'nfqlb',
      level: pinoLevel(nfqlbLevel),
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
  // A getter, not a copy: pino swaps `info` for a no-op (and back) when the
  // level changes, and child loggers inherit this through their prototype.
  Object.defineProperty(log, 'notice', {
    get(this: pino.Logger) {
      return this.info;
    },
  });
  return log as Logger;
}
