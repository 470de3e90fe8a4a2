/**
 * Maglev tables in POSIX shared memory, so that `nfqlb activate` in one
 * process changes the decisions of a running daemon in another: created,
 * opened (validated before anything is mapped), checked for replacement and
 * closed. The objects themselves are src/addon/shm.ts's.
 */
// Not `import * as`: its helper reads every export, which on Node 24 loads node:util's streams and worker_threads (CLI start-up).
import fs = require('node:fs');
import { NfqlbError } from '../base/errors';
import { openRegularFile } from '../base/regularfile';
import { SHM_DIR, checkFreeSpace, fdSize, mapFd, mapShmObject, shmObjectName, shmObjectSize, unlinkShmObject, unmap } from '../addon/shm';
import { MaglevTable, TABLE_HEADER_BYTES, checkShape, maglevLen, tableBytes, writeFreshTable } from './maglev';

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
  const object = shmObjectName(name);
  const existing = tryOpen(name);
  if (existing !== null) {
    if (existing.M === M && existing.N === N && existing.buffer.byteLength === bytes) {
      return reinitInPlace(existing, ownFwmark);
    }
    closeTable(existing);
    unlinkShmObject(object);
  } else if (shmObjectSize(object) >= 0) {
    unlinkShmObject(object); // Not a table (or unreadable as one): replace it.
  }
  checkFreeSpace(name, bytes);
  const buffer = mapShmObject(object, 2, bytes);
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
    buffer = mapShmObject(shmObjectName(name), 1, 0);
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
    const buffer = mapFd(fd, writable, 4 + len);
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
  return file === undefined ? -1 : fdSize(file.fd);
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
  return unlinkShmObject(shmObjectName(name));
}

