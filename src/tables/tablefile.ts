/**
 * Maglev tables and trace settings in POSIX shared memory (/dev/shm/<name>,
 * mode 0600), so that `nfqlb activate` in one process changes the decisions of
 * a running daemon in another (SPEC.md §3). Pure TypeScript over the addon's
 * shmMap/shmUnmap/shmUnlink/shmSize.
 */
// Not `import * as`: its helper reads every export, which on Node 24 loads node:util's streams and worker_threads (CLI start-up).
import fs = require('node:fs');
import { NfqlbError } from '../base/errors';
import { MaglevTable, TABLE_HEADER_BYTES, checkShape, maglevLen, tableBytes, writeFreshTable } from '../tables/maglev';
import { native } from './native';
import { openRegularFile } from '../base/regularfile';

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
function mapExisting(name: string, writable: boolean, what: string): ArrayBuffer {
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
function unmap(buffer: ArrayBuffer): void {
  native().shmUnmap(buffer);
}

/** Throws NFQLB_ERR_SHM_SPACE when /dev/shm cannot hold `bytes` more; writing past a full tmpfs through a mapping would kill the process with SIGBUS. */
function checkFreeSpace(name: string, bytes: number): void {
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
 * `nfqlb init`: writes a fresh table (all slots free) to shm `name`, replacing
 * any table there, and returns it open read-write (closeTable it when done).
 * M must already be adjusted (adjustM) and N ≤ M; NfqlbError NFQLB_ERR_RANGE
 * otherwise.
 *
 * A table of the same M and N is rewritten in place (its permutation rows are
 * the same, so only ownFwmark, lookup and active change, in an order safe for
 * running readers: lookup entries to -1 first, then the slots). Anything else
 * (another shape, a foreign file) is unlinked and created anew, because
 * shrinking a file that a daemon has mapped would cost it its mapping (it
 * would fall back to its private copy, see servedtable.ts); a daemon keeps
 * its old mapping until it picks up the new table.
 */
export function createTable(name: string, M: number, N: number, ownFwmark: number): MaglevTable {
  checkShape(M, N);
  const bytes = tableBytes(M, N);
  const addon = native();
  const object = shmObjectName(name);
  const existing = tryOpen(name);
  if (existing !== null) {
    if (existing.M === M && existing.N === N && existing.buffer.byteLength === bytes) {
      return reinitInPlace(existing, ownFwmark);
    }
    closeTable(existing);
    addon.shmUnlink(object);
  } else if (addon.shmSize(object) >= 0) {
    addon.shmUnlink(object); // Not a table (or unreadable as one): replace it.
  }
  checkFreeSpace(name, bytes);
  const buffer = addon.shmMap(object, 2, bytes);
  try {
    writeFreshTable(buffer, M, N, ownFwmark);
    return new MaglevTable(buffer, name);
  } catch (err) {
    unmap(buffer);
    throw err;
  }
}

function tryOpen(name: string): MaglevTable | null {
  let buffer: ArrayBuffer;
  try {
    buffer = native().shmMap(shmObjectName(name), 1, 0);
  } catch {
    return null;
  }
  try {
    return new MaglevTable(buffer, name);
  } catch {
    unmap(buffer);
    return null;
  }
}

function reinitInPlace(table: MaglevTable, ownFwmark: number): MaglevTable {
  try {
    table.applyActive(new Int32Array(table.N).fill(-1));
    // Rewrites header, permutations and padding with the same values (repairs
    // a damaged row); lookup and active are already -1 so nothing flickers.
    writeFreshTable(table.buffer, table.M, table.N, ownFwmark);
    return table;
  } catch (err) {
    closeTable(table);
    throw err;
  }
}

/** The open file behind a table from openTable(): kept open so its size and identity can be re-checked cheaply. */
export interface TableFile {
  fd: number;
  /** Inode of the object mapped (a re-created table has another). */
  ino: bigint;
  /** Bytes mapped: what the header asks for (4 + len). */
  bytes: number;
}

const tableFiles = new WeakMap<MaglevTable, TableFile>();

/** The file of a table from openTable(), or undefined (private tables, createTable). */
export function tableFile(table: MaglevTable): TableFile | undefined {
  return tableFiles.get(table);
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed.
  }
}

function shmFormatError(name: string, what: string): NfqlbError {
  return new NfqlbError(
    `shared memory '${name}' is not a valid nfqlb table: ${what}. ` +
      `Recreate it with \`nfqlb init --shm=${name}\` (or \`nfqlb delete --shm=${name}\` if it is not yours).`,
    'NFQLB_ERR_SHM_FORMAT',
  );
}

/**
 * Opens the table in shm `name` (read-only unless `writable`), validated.
 * The file's size is checked (fstat) before anything is mapped, and only the
 * bytes that the header and the size agree on are mapped, so a short or
 * truncated file is an error here rather than a SIGBUS later.
 * Throws NfqlbError: NFQLB_ERR_SHM_MISSING when it does not exist,
 * NFQLB_ERR_SHM_FORMAT when it is not a table (too short for its header, or
 * for the M and N in it), NFQLB_ERR_SHM_OPEN/_MAP (with errno) when it cannot
 * be opened or mapped. Close with closeTable().
 */
let trustedOwners: readonly number[] | null = null;

/**
 * From now on (in this thread), openTable() takes only tables owned by one
 * of `uids` (the daemon passes its own uid and root's; the CLI never calls
 * this). /dev/shm is world-writable: after `nfqlb delete --shm=T` while a
 * flow still names T, any user could create T again with targets of their
 * choosing, and the daemon's once-a-second check would take it.
 */
export function trustTableOwners(uids: readonly number[]): void {
  trustedOwners = uids;
}

/** The owners a daemon takes tables from: its effective uid and root. */
export function daemonTableOwners(): number[] {
  const euid = process.geteuid?.() ?? 0;
  return euid === 0 ? [0] : [euid, 0];
}

export function openTable(name: string, writable = false): MaglevTable {
  const object = shmObjectName(name);
  let fd: number;
  try {
    // Never blocks, never opens anything but a regular file (src/base/regularfile.ts): the table
    // check runs every second in every thread, and a FIFO put under a table's name froze them all.
    const c = fs.constants;
    fd = openRegularFile(`${SHM_DIR}/${object}`, writable ? c.O_RDWR : c.O_RDONLY, undefined, `cannot open shared memory '${name}'`,
      `Remove it (rm ${SHM_DIR}/${object}) and create the table again with \`nfqlb init --shm=${name}\``);
  } catch (err) {
    if (err instanceof NfqlbError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') {
      throw new NfqlbError(`shared memory '${name}' does not exist; create it with \`nfqlb init --shm=${name}\``, 'NFQLB_ERR_SHM_MISSING', { cause: err });
    }
    const advice = e.code === 'EACCES' ? ' (it belongs to another user: run as its owner, or chown/chmod it)'
      : e.code === 'ELOOP' ? ` (${SHM_DIR}/${object} is a symbolic link: remove it)` : '';
    throw new NfqlbError(`cannot open shared memory '${name}'${advice}: ${e.message}`, 'NFQLB_ERR_SHM_OPEN', { cause: e });
  }
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    const size = Number(st.size);
    const uid = Number(st.uid);
    if (trustedOwners !== null && !trustedOwners.includes(uid)) {
      throw new NfqlbError(
        `shared memory '${name}' belongs to uid ${uid}, neither the daemon's user nor root: not taken (anyone can create files in ${SHM_DIR}). ` +
          `Create the table as the daemon's user, or \`chown\` it to that user`,
        'NFQLB_ERR_SHM_OWNER',
      );
    }
    if (size < TABLE_HEADER_BYTES) throw shmFormatError(name, `it is ${size} bytes, smaller than the ${TABLE_HEADER_BYTES}-byte header (truncated?)`);
    const head = Buffer.alloc(TABLE_HEADER_BYTES);
    fs.readSync(fd, head, 0, TABLE_HEADER_BYTES, 0);
    const M = head.readUInt32LE(4);
    const N = head.readUInt32LE(8);
    const len = head.readUInt32LE(12);
    if (M < 1) throw shmFormatError(name, 'M is 0');
    if (len !== maglevLen(M, N)) throw shmFormatError(name, `len field is ${len} but M=${M}, N=${N} need ${maglevLen(M, N)}`);
    if (size < 4 + len) throw shmFormatError(name, `it is ${size} bytes but M=${M}, N=${N} need ${4 + len} (truncated?)`);
    const buffer = native().fdMap(fd, writable, 4 + len);
    let table: MaglevTable;
    try {
      table = new MaglevTable(buffer, name, !writable);
    } catch (err) {
      unmap(buffer);
      throw err;
    }
    tableFiles.set(table, { fd, ino: st.ino, bytes: 4 + len });
    return table;
  } catch (err) {
    closeQuietly(fd);
    throw err;
  }
}

function statIno(name: string): bigint | undefined {
  try {
    return fs.statSync(`${SHM_DIR}/${shmObjectName(name)}`, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

/**
 * True when shm `table.name` is no longer the object this table maps: it was
 * deleted, or deleted and made again (`nfqlb delete` + `init`, or an `init`
 * with another M or N). The mapping itself stays valid; a long-running reader
 * (the daemon) should then close it and openTable() again. One stat() call.
 * Only for tables from openTable(); others always report false.
 */
export function tableIsStale(table: MaglevTable): boolean {
  const file = tableFiles.get(table);
  if (file === undefined) return false;
  return statIno(table.name) !== file.ino;
}

/** Inode of /dev/shm/<name> now, or undefined when it does not exist. */
export function shmInode(name: string): bigint | undefined {
  return statIno(name);
}

/** Size of a table's file now (one fstat, no allocation), or -errno; -1 for tables without a file. */
export function tableFileSize(table: MaglevTable): number {
  const file = tableFiles.get(table);
  return file === undefined ? -1 : native().fdSize(file.fd);
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

/** Unmaps a table from openTable/createTable (and closes its file); its arrays become empty and fwmarkOf returns -1 afterwards. */
export function closeTable(table: MaglevTable): void {
  unmap(table.buffer);
  const file = tableFiles.get(table);
  if (file !== undefined) {
    tableFiles.delete(table);
    closeQuietly(file.fd);
  }
}

/** `nfqlb delete`: removes shm `name`. Returns false when it did not exist (not an error). Mappings stay valid until closed. */
export function deleteTable(name: string): boolean {
  return native().shmUnlink(shmObjectName(name));
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
  const addon = native();
  const object = shmObjectName(name);
  let buffer: ArrayBuffer;
  try {
    buffer = addon.shmMap(object, 1, 0, 0);
  } catch (err) {
    if (!isMissing(err)) throw err;
    buffer = addon.shmMap(object, 2, TRACE_BYTES, 0);
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
