/**
 * What guards the daemon's process: signals that would kill it or open its
 * inspector are logged and ignored, and a daemon with the inspector open is
 * refused at start.
 */
import * as inspector from 'node:inspector';
import { NfqlbError } from '../base/errors';
import type { Logger } from '../base/log';
import { RateLimitedLog } from '../base/ratelog';
import { HOUSEKEEPING_INTERVAL_MS } from './failurelog';

/**
 * Signals that would kill (or core-dump) a Node.js process by default, or
 * open its inspector (SIGUSR1), and mean nothing to the daemon: each is
 * logged (at most once a second per signal, with a count) and ignored.
 * SIGTERM and SIGINT stop the daemon (lb.ts). SIGKILL and SIGSTOP cannot be
 * caught; SIGSEGV/SIGBUS/SIGILL/SIGFPE from a real fault are not survivable.
 */
export const LOGGED_SIGNALS: readonly NodeJS.Signals[] = ['SIGHUP', 'SIGQUIT', 'SIGPIPE', 'SIGUSR1', 'SIGUSR2'];

/**
 * Installs the handlers of LOGGED_SIGNALS. Returns a function that removes
 * them again (the no-op SIGUSR1 listener of bin/nfqlb stays, so the inspector
 * can still not be opened). The log line is rate-limited: a SIGPIPE storm
 * from a closed stderr cannot turn into a logging loop.
 */
export function installSignalLogging(log: Logger): () => void {
  const lines = new RateLimitedLog((signal, count) => log.warn({ signal, count }, 'signal ignored'));
  const timer = setInterval(() => lines.flush(), HOUSEKEEPING_INTERVAL_MS);
  timer.unref();
  const handlers = LOGGED_SIGNALS.map((signal) => {
    const h = (): void => lines.note(signal);
    process.on(signal, h);
    return [signal, h] as const;
  });
  return () => {
    clearInterval(timer);
    for (const [signal, h] of handlers) process.off(signal, h);
  };
}

/**
 * Refuses to run the daemon with the Node.js inspector open (NODE_OPTIONS
 * with --inspect, or a SIGUSR1 that arrived before bin/nfqlb installed its
 * listener): anyone who can connect to it runs code as the daemon.
 * NFQLB_ALLOW_INSPECTOR=1 allows it for debugging. Throws NfqlbError
 * NFQLB_ERR_INSPECTOR.
 */
export function checkInspectorClosed(env: NodeJS.ProcessEnv = process.env): void {
  const url = inspector.url();
  if (url === undefined || env.NFQLB_ALLOW_INSPECTOR === '1') return;
  throw new NfqlbError(
    `the Node.js inspector is open (${url}): anyone who can connect to it can run code in the daemon; ` +
      'remove --inspect* from NODE_OPTIONS and the node command line, or set NFQLB_ALLOW_INSPECTOR=1 to debug',
    'NFQLB_ERR_INSPECTOR',
  );
}
