/**
 * POSIX shared memory objects (/dev/shm/<name>, mode 0600) as ArrayBuffers,
 * over the addon's shmMap/shmUnmap/shmUnlink/shmSize/fdMap (native/shm.cc),
 * and the `nfqlb-trace` object (log level and trace mask) that `nfqlb
 * loglevel` and `nfqlb trace` change in a running daemon. Tables are built on
 * this in src/tables/tablefile.ts.
 */
// Not `import * as`: its helper reads every export, which on Node 24 loads node:util's streams and worker_threads (CLI start-up).
import fs = require('node:fs');
import { NfqlbError } from '../base/errors';
import { native } from './native';

/** Where shm_open puts objects on Linux; used only to check free space. */
export const SHM_DIR = '/dev/shm';

/**
 * The name shm_open() really uses for `name`, checked as glibc 2.36 checks it
 * (so every name nfqlb accepts works here and the others fail the same way):
 * leading '/' are dropped (`/tshm-x` is `tshm-x`); then an empty name, a '/'
 * inside, or 260 bytes and more are EINVAL, 256-259 bytes ENAMETOOLONG (the
 * kernel's limit is 255). A NUL would cut the name short in C: EINVAL.
 * Throws NfqlbError NFQLB_ERR_SHM_NAME with that errno.
 */
export function shmObjectName(name: string): string {
  const object = name.replace(/^\/+/, '');
  const bytes = Buffer.byteLength(object, 'utf8');
  let errno: string | undefined;
  let why = '';
  if (object === '' || object.includes('/') || object.includes('\0')) {
    errno = 'EINVAL';
    why = "it must be a file name in /dev/shm: not empty, no '/' except at the start, no NUL";
  } else if (bytes > 255) {
    errno = bytes >= 260 ? 'EINVAL' : 'ENAMETOOLONG';
    why = `it has ${bytes} bytes, at most 255 are possible`;
  }
  if (errno !== undefined) throw new NfqlbError(`invalid shared memory name '${name}': ${why}`, 'NFQLB_ERR_SHM_NAME', errno);
  return object;
}

function isMissing(err: unknown): boolean {
  return err instanceof NfqlbError && err.errnoName === 'ENOENT';
}

/** Maps an existing object (a page lost to a truncation reads as zeros); throws NFQLB_ERR_SHM_MISSING (with what to do) when it does not exist. */
export function mapExisting(name: string, writable: boolean, what: string): ArrayBuffer {
  try {
    return native().shmMap(shmObjectName(name), writable ? 1 : 0, 0, 0);
  } catch (err) {
    if (isMissing(err)) {
      throw new NfqlbError(`shared memory '${name}' does not exist; ${what}`, 'NFQLB_ERR_SHM_MISSING', { cause: err });
    }
    throw err;
  }
}

/** Unmaps quietly: the buffer may be a private one (size-0 objects are not mapped). */
export function unmap(buffer: ArrayBuffer): void {
  native().shmUnmap(buffer);
}

/** Throws NFQLB_ERR_SHM_SPACE when /dev/shm cannot hold `bytes` more; writing past a full tmpfs through a mapping would kill the process with SIGBUS. */
export function checkFreeSpace(name: string, bytes: number): void {
  let free: number;
  try {
    const st = fs.statfsSync(SHM_DIR);
    free = st.bavail * st.bsize;
  } catch {
    return; // No statfs (or no /dev/shm): let shm_open report what is wrong.
  }
  if (free < bytes) {
    throw new NfqlbError(
      `cannot create shared memory '${name}': it needs ${bytes} bytes but ${SHM_DIR} has ${free} free; use a smaller M or N, or free space in ${SHM_DIR}`,
      'NFQLB_ERR_SHM_SPACE',
    );
  }
}

/**
 * Maps object `object` (from shmObjectName): mode 0 read-only, 1 read-write,
 * 2 created with `bytes`. A page later lost to a truncation reads as bytes of
 * `fill` (0xFF when omitted: a table's -1).
 */
export function mapShmObject(object: string, mode: 0 | 1 | 2, bytes: number, fill?: number): ArrayBuffer {
  return fill === undefined ? native().shmMap(object, mode, bytes) : native().shmMap(object, mode, bytes, fill);
}

/** Size of object `object` in bytes, or a negative errno when it cannot be seen (ENOENT: none). */
export function shmObjectSize(object: string): number {
  return native().shmSize(object);
}

/** Removes object `object`; false when it did not exist. Mappings stay valid until unmapped. */
export function unlinkShmObject(object: string): boolean {
  return native().shmUnlink(object);
}

/** Maps `bytes` of the open file `fd` (its size checked by the caller). */
export function mapFd(fd: number, writable: boolean, bytes: number): ArrayBuffer {
  return native().fdMap(fd, writable, bytes);
}

/** Size of the open file `fd` now (one fstat, no allocation), or -errno. */
export function fdSize(fd: number): number {
  return native().fdSize(fd);
}

let guardCounters: Int32Array | undefined;

/**
 * SIGBUS faults on shm mappings that the addon repaired so far (a page of a
 * shrunk file now reads as -1). A live view: read `[0]` per batch to notice a
 * truncation at once, without a system call.
 */
export function shmFaultCounter(): Int32Array {
  guardCounters ??= native().shmGuardCounters();
  return guardCounters;
}

/** Name of the shared log level / trace mask object. */
export const TRACE_SHM = 'nfqlb-trace';
/** Log level when nothing set one (nfqlb's default_config). */
export const DEFAULT_LOG_LEVEL = 5;
const TRACE_BYTES = 8;

/**
 * The `nfqlb-trace` object: { int32 level; uint32 tracemask }. Reads and
 * writes go straight to the shared memory, so `nfqlb loglevel` / `nfqlb trace`
 * in one process change the daemon in another.
 */
export class TraceShm {
  private readonly words: Int32Array;

  constructor(
    readonly buffer: ArrayBuffer,
    readonly name = TRACE_SHM,
  ) {
    if (buffer.byteLength < TRACE_BYTES) {
      throw new NfqlbError(
        `shared memory '${name}' is ${buffer.byteLength} bytes, smaller than the ${TRACE_BYTES} of {level, tracemask}; ` +
          `remove it (\`rm /dev/shm/${name}\`) and restart the daemon`,
        'NFQLB_ERR_SHM_FORMAT',
      );
    }
    this.words = new Int32Array(buffer, 0, 2);
  }

  get level(): number {
    return Atomics.load(this.words, 0);
  }

  set level(v: number) {
    Atomics.store(this.words, 0, v | 0);
  }

  /** The trace mask as an unsigned 32-bit number. */
  get mask(): number {
    return Atomics.load(this.words, 1) >>> 0;
  }

  set mask(v: number) {
    Atomics.store(this.words, 1, v | 0);
  }
}

/**
 * For the daemon (nfqlb's logConfigShm): maps `name` read-write, creating it
 * with level 5 and mask 0 when it does not exist. An existing object keeps its
 * values. Throws NfqlbError when it cannot be mapped or is too small.
 */
export function openOrCreateTraceShm(name = TRACE_SHM): TraceShm {
  const object = shmObjectName(name);
  let buffer: ArrayBuffer;
  try {
    buffer = mapShmObject(object, 1, 0, 0);
  } catch (err) {
    if (!isMissing(err)) throw err;
    buffer = mapShmObject(object, 2, TRACE_BYTES, 0);
    // A new object is zero-filled. Another process may have created and set
    // it between our two calls, so the default goes in only over a zero.
    if (buffer.byteLength >= TRACE_BYTES) Atomics.compareExchange(new Int32Array(buffer, 0, 2), 0, 0, DEFAULT_LOG_LEVEL);
  }
  try {
    return new TraceShm(buffer, name);
  } catch (err) {
    unmap(buffer);
    throw err;
  }
}

/**
 * For the daemon: openOrCreateTraceShm(), or, when the object exists but
 * cannot be opened (EACCES: made by root, 0600, while the daemon runs as
 * another user; or it is a FIFO, socket or device: `notFile`), a private one in process memory with level 5 and mask 0 —
 * the daemon then runs, but `nfqlb loglevel` and `nfqlb trace` cannot reach
 * it. `why` says so, for one warning line. Other errors are thrown.
 */
export function openTraceShmForDaemon(name = TRACE_SHM): { trace: TraceShm; shared: boolean; why?: string; notFile?: boolean } {
  try {
    return { trace: openOrCreateTraceShm(name), shared: true };
  } catch (err) {
    const notFile = err instanceof NfqlbError && err.code === 'NFQLB_ERR_NOT_FILE';
    if (!(err instanceof NfqlbError) || (err.errnoName !== 'EACCES' && !notFile)) throw err;
    const words = new Int32Array(2);
    words[0] = DEFAULT_LOG_LEVEL;
    return {
      trace: new TraceShm(words.buffer, name),
      shared: false,
      notFile,
      why: notFile
        ? `${err.message}; loglevel and trace cannot be changed at run time until the daemon is restarted without it there`
        : `${SHM_DIR}/${name} belongs to another user (${err.message}); loglevel and trace cannot be changed at run time. Remove it, or run every nfqlb command as the daemon's user`,
    };
  }
}

/**
 * For commands that talk to a running daemon (`loglevel`, `trace`): maps an
 * existing `name`. Throws NFQLB_ERR_SHM_MISSING when no daemon has created it.
 */
export function openTraceShm(name = TRACE_SHM, writable = true): TraceShm {
  const buffer = mapExisting(name, writable, 'start the daemon (nfqlb lb / flowlb) first');
  try {
    return new TraceShm(buffer, name);
  } catch (err) {
    unmap(buffer);
    throw err;
  }
}

/** Unmaps a TraceShm. */
export function closeTraceShm(trace: TraceShm): void {
  unmap(trace.buffer);
}
