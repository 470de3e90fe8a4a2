/**
 * The fragment-table statistics object nfqlb keeps in shared memory
 * (`--ft_shm`, default `ftshm`), byte-compatible with nfqlb 1.2.0's
 * `struct fragStats` on x86-64, and `nfqlb stats`' rendering of it.
 *
 * Layout (little-endian, 72 bytes): struct ctStats { u64 ttlNanos; u32 size,
 * active, collisions, inserts, rejectedInserts, lookups, objGC; (4 bytes of
 * padding) } then u32 mtu, bucketsMax, bucketsAllocated, bucketsUsed,
 * fragsMax, fragsDiscarded, fragsAllocated, reAssembled.
 */
import * as fs from 'node:fs';
import { NfqlbError } from '../base/errors';
import { openRegularFile } from '../base/regularfile';
import { SHM_DIR, shmObjectName } from '../addon/shm';

export const FRAG_STATS_SHM = 'ftshm';
export const FRAG_STATS_BYTES = 72;

export interface FragStats {
  ttlNanos: bigint;
  size: number;
  active: number;
  collisions: number;
  inserts: number;
  rejectedInserts: number;
  lookups: number;
  objGC: number;
  mtu: number;
  bucketsMax: number;
  bucketsAllocated: number;
  bucketsUsed: number;
  fragsMax: number;
  fragsDiscarded: number;
  fragsAllocated: number;
  reAssembled: number;
}

/** Reads the stats from 72 bytes in nfqlb's layout. Prerequisite: bytes.length >= FRAG_STATS_BYTES. */
export function decodeFragStats(bytes: Uint8Array): FragStats {
  const v = new DataView(bytes.buffer, bytes.byteOffset, FRAG_STATS_BYTES);
  const u = (off: number): number => v.getUint32(off, true);
  return {
    ttlNanos: v.getBigUint64(0, true),
    size: u(8), active: u(12), collisions: u(16), inserts: u(20), rejectedInserts: u(24), lookups: u(28), objGC: u(32),
    mtu: u(40), bucketsMax: u(44), bucketsAllocated: u(48), bucketsUsed: u(52),
    fragsMax: u(56), fragsDiscarded: u(60), fragsAllocated: u(64), reAssembled: u(68),
  };
}

/**
 * Reads the stats object `name` from /dev/shm (a copy: the CLI never maps it,
 * so a file truncated meanwhile cannot fault). Throws NfqlbError
 * NFQLB_ERR_SHM_MISSING / NFQLB_ERR_SHM_OPEN (with errno) when it cannot be
 * read, NFQLB_ERR_SHM_FORMAT when it is too short to be nfqlb's stats.
 */
export function readFragStats(name: string): FragStats {
  const object = shmObjectName(name);
  let bytes: Buffer;
  try {
    // Only the 72 bytes, and never from a FIFO or device (src/base/regularfile.ts).
    const fd = openRegularFile(`${SHM_DIR}/${object}`, fs.constants.O_RDONLY, undefined, `cannot read shared memory '${name}'`,
      `Remove it (rm ${SHM_DIR}/${object}); the daemon creates it again`);
    try {
      const buf = Buffer.alloc(FRAG_STATS_BYTES);
      bytes = buf.subarray(0, fs.readSync(fd, buf, 0, FRAG_STATS_BYTES, 0));
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    if (err instanceof NfqlbError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new NfqlbError(`shared memory '${name}' does not exist; start the daemon (nfqlb lb / flowlb) first`, 'NFQLB_ERR_SHM_MISSING', { cause: e });
    throw new NfqlbError(`cannot read shared memory '${name}': ${e.message}`, 'NFQLB_ERR_SHM_OPEN', { cause: e });
  }
  if (bytes.length < FRAG_STATS_BYTES) {
    throw new NfqlbError(`shared memory '${name}' is ${bytes.length} bytes, not nfqlb's fragment statistics (${FRAG_STATS_BYTES} bytes)`, 'NFQLB_ERR_SHM_FORMAT');
  }
  return decodeFragStats(bytes);
}

/**
 * `nfqlb stats` output, byte for byte as nfqlb 1.2.0 prints it — including
 * its missing comma after "fragsDiscarded", which scripts written against
 * nfqlb may depend on (so the output is not strict JSON, as nfqlb's is not).
 */
export function formatFragStats(s: FragStats): string {
  const line = (key: string, value: number | bigint, last = false): string => `  ${`"${key}":`.padEnd(20)}${value}${last ? '' : ','}\n`;
  return '{\n'
    + line('hsize', s.size)
    + line('ttlMillis', Number(s.ttlNanos / 1000000n) >>> 0)
    + line('collisions', s.collisions)
    + line('inserts', s.inserts)
    + line('rejected', s.rejectedInserts)
    + line('lookups', s.lookups)
    + line('objGC', s.objGC)
    + line('mtu', s.mtu)
    + line('bucketsMax', s.bucketsMax)
    + line('bucketsAllocated', s.bucketsAllocated)
    + line('bucketsUsed', s.bucketsUsed)
    + line('fragsMax', s.fragsMax)
    + line('fragsAllocated', s.fragsAllocated)
    + line('fragsDiscarded', s.fragsDiscarded, true)
    + line('reAssembled', s.reAssembled, true)
    + '}\n';
}

/** Writes the stats in nfqlb's layout into `out` (FRAG_STATS_BYTES; the padding is zero). Counters wrap at 2^32 as nfqlb's u32 do. */
export function encodeFragStats(s: FragStats, out: Uint8Array = new Uint8Array(FRAG_STATS_BYTES)): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset, FRAG_STATS_BYTES);
  const u = (off: number, value: number): void => v.setUint32(off, value >>> 0, true);
  v.setBigUint64(0, BigInt.asUintN(64, s.ttlNanos), true);
  u(8, s.size); u(12, s.active); u(16, s.collisions); u(20, s.inserts); u(24, s.rejectedInserts); u(28, s.lookups); u(32, s.objGC);
  u(36, 0);
  u(40, s.mtu); u(44, s.bucketsMax); u(48, s.bucketsAllocated); u(52, s.bucketsUsed);
  u(56, s.fragsMax); u(60, s.fragsDiscarded); u(64, s.fragsAllocated); u(68, s.reAssembled);
  return out;
}

/**
 * The daemon's side of `--ft_shm`: creates the object as nfqlb does
 * (O_RDWR|O_CREAT, mode 0600; a file of another size is cut to 72 bytes, as
 * nfqlb's ftruncate does) and rewrites its 72 bytes in
 * place on every write(). Each write opens the object again, so one that was
 * deleted meanwhile is created again rather than written into a lost inode.
 * Throws NfqlbError (NFQLB_ERR_SHM_NAME, NFQLB_ERR_SHM_OPEN with what to do)
 * when the object cannot be written.
 */
export class FragStatsWriter {
  readonly object: string;
  private readonly bytes = new Uint8Array(FRAG_STATS_BYTES);

  constructor(readonly name: string) {
    this.object = shmObjectName(name);
  }

  write(s: FragStats): void {
    encodeFragStats(s, this.bytes);
    let fd: number | undefined;
    try {
      // Not a symbolic link (the daemon must not write into the file it points at), nor a
      // FIFO, socket or device: this runs every second (src/base/regularfile.ts).
      fd = openRegularFile(`${SHM_DIR}/${this.object}`, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600,
        `cannot write the fragment statistics to shared memory '${this.name}'`, `Remove it (rm ${SHM_DIR}/${this.object}), or give another name with --ft_shm`);
      if (fs.fstatSync(fd).size !== FRAG_STATS_BYTES) fs.ftruncateSync(fd, FRAG_STATS_BYTES);
      fs.writeSync(fd, this.bytes, 0, FRAG_STATS_BYTES, 0);
    } catch (err) {
      if (err instanceof NfqlbError) throw err;
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EMFILE' || e.code === 'ENFILE') {
        // The name is fine; the process (EMFILE) or the system (ENFILE) is out of descriptors.
        throw new NfqlbError(
          `cannot write the fragment statistics to shared memory '${this.name}': ${e.message}; ` +
            (e.code === 'EMFILE' ? 'the daemon has as many files open as `ulimit -n` allows: raise it (ulimit -n, or the container\'s nofile limit)' : 'the system is out of file descriptors (fs.file-max)'),
          'NFQLB_ERR_SHM_OPEN',
          { cause: e },
        );
      }
      if (e.code === 'ELOOP') {
        throw new NfqlbError(
          `cannot write the fragment statistics to shared memory '${this.name}': ${SHM_DIR}/${this.object} is a symbolic link; remove it, or give another name with --ft_shm`,
          'NFQLB_ERR_SHM_OPEN',
          { cause: e },
        );
      }
      throw new NfqlbError(
        `cannot write the fragment statistics to shared memory '${this.name}': ${e.message}; give another name with --ft_shm, or remove ${SHM_DIR}/${this.object}`,
        'NFQLB_ERR_SHM_OPEN',
        { cause: e },
      );
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }
}
