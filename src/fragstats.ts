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
import { NfqlbError } from './errors';
import { SHM_DIR, shmObjectName } from './shm';

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
    bytes = fs.readFileSync(`${SHM_DIR}/${object}`);
  } catch (err) {
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
