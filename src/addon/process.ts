/**
 * The addon's process-wide calls: a thread's name as ps and top show it, and
 * the stop deadline (native/stopwatchdog.cc), which has to work when every
 * JavaScript thread is stuck in a system call, so no timer could do it.
 */
import { native } from './native';

/** Names the calling thread (at most 15 bytes show); false where the system refuses. */
export function setThreadName(name: string): boolean {
  return native().setThreadName(name);
}

/**
 * From now on, the first SIGTERM or SIGINT starts a native clock: `ms` later
 * the process writes `line` to stderr and exits with `code`, whatever its
 * threads are doing. Call after process.on('SIGTERM'), so libuv's handler is
 * there to be chained to.
 */
export function armStopWatchdog(ms: number, code: number, line: string): boolean {
  return native().armStopWatchdog(ms, code, line);
}
