/**
 * Opening a file by name when someone else may have put something else
 * there. /dev/shm is writable by every user of the pod, and a FIFO under a
 * table's name froze the daemon: a plain open() of a FIFO waits for a writer,
 * in whichever thread made it. Every open of a name the daemon does not own
 * outright goes through openRegularFile(): lstat first (a device node or
 * socket is never opened), O_NONBLOCK|O_NOFOLLOW (a FIFO or link swapped in
 * between returns at once or fails), then fstat of what was really opened.
 * The addon's shmMap/shmSize do the same in C++ (native/shm.cc).
 */
// Not `import * as`: its helper reads every export, which on Node 24 loads node:util's streams and worker_threads (CLI start-up).
import fs = require('node:fs');
import { NfqlbError } from './errors';

/**
 * NFQLB_TEST_OPEN_BLOCKS=1 brings back the plain open() this module replaced,
 * so a test can get a thread stuck in a system call (a FIFO under a table's
 * name) and check that SIGTERM still ends the daemon in time. Never set it
 * otherwise.
 */
const OPEN_BLOCKS_FOR_TEST = process.env.NFQLB_TEST_OPEN_BLOCKS === '1';

/** What a non-regular file is, for messages ("a FIFO (named pipe)"), or null for a regular file. */
export function notRegularKind(st: fs.Stats | fs.BigIntStats): string | null {
  if (st.isFile()) return null;
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device node';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a regular file';
}

/**
 * Opens `file` with `flags` (fs.constants) plus O_NONBLOCK|O_NOFOLLOW, only
 * if it is a regular file. Returns the fd (close it). Throws NfqlbError
 * NFQLB_ERR_NOT_FILE (the message is `failure`, e.g. "cannot open shared
 * memory 'T'", what is there, and `advice`) when something else is there;
 * other failures are Node's errors of the open (ENOENT, EACCES...) as they
 * come, for the caller to word.
 */
export function openRegularFile(file: string, flags: number, mode: number | undefined, failure: string, advice: string): number {
  const c = fs.constants;
  if (OPEN_BLOCKS_FOR_TEST) return fs.openSync(file, flags, mode);
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(file);
  } catch {
    // Nothing there (or not reachable): the open says why, in its own words.
  }
  if (st !== undefined) {
    const kind = notRegularKind(st);
    if (kind !== null) throw notRegular(file, kind, failure, advice);
  }
  const fd = fs.openSync(file, flags | c.O_NONBLOCK | c.O_NOFOLLOW, mode);
  let kind: string | null;
  try {
    kind = notRegularKind(fs.fstatSync(fd));
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  if (kind !== null) {
    fs.closeSync(fd);
    throw notRegular(file, kind, failure, advice);
  }
  return fd;
}

/** The whole of a regular file (see openRegularFile), as readFileSync would return it. */
export function readRegularFile(file: string, failure: string, advice: string): Buffer {
  const fd = openRegularFile(file, fs.constants.O_RDONLY, undefined, failure, advice);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function notRegular(file: string, kind: string, failure: string, advice: string): NfqlbError {
  return new NfqlbError(`${failure}: ${file} is ${kind}, not a regular file; it was not opened. ${advice}`, 'NFQLB_ERR_NOT_FILE');
}
