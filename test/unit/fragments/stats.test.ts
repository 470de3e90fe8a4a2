/**
 * The fragment-table statistics object (72 bytes in nfqlb 1.2.0's layout) and
 * `nfqlb stats`: decoded from bytes written here, and printed byte for byte as
 * the original nfqlb prints the same file (its missing comma included). The
 * files are /dev/shm objects with private names, removed afterwards; runs
 * that cannot write /dev/shm, or have no original nfqlb, skip those parts
 * with one line saying why.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { FragmentTable } from '../../../src/fragments/table';
import { FRAG_STATS_FIELDS, fragStatsOf } from '../../../src/fragments/tablestats';
import { KEY_LEN } from '../../../src/packet/hashkey';
import {
  decodeFragStats, encodeFragStats, FRAG_STATS_BYTES, formatFragStats, FragStatsWriter, readFragStats, type FragStats,
} from '../../../src/fragments/stats';
import { runInProcess } from '../../helpers/cli';
import { describeUnless, ORIGINAL, originalUnavailable } from '../../helpers/skip';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-ft`;
let seq = 0;
const written: string[] = [];

/** nfqlb's struct fragStats on x86-64: ctStats (u64 ttlNanos, 7 × u32, 4 bytes padding), then 8 × u32. */
function statsBytes(ttlNanos: bigint, u32s: number[], padding = 0): Buffer {
  const b = Buffer.alloc(FRAG_STATS_BYTES);
  b.writeBigUInt64LE(ttlNanos, 0);
  u32s.slice(0, 7).forEach((v, i) => b.writeUInt32LE(v, 8 + 4 * i));
  b.writeUInt32LE(padding, 36);
  u32s.slice(7).forEach((v, i) => b.writeUInt32LE(v, 40 + 4 * i));
  return b;
}

/** Writes `bytes` as a fresh /dev/shm object; returns its name. */
function shmFile(bytes: Uint8Array): string {
  const name = `${PREFIX}-${++seq}`;
  fs.writeFileSync(`/dev/shm/${name}`, bytes, { mode: 0o600 });
  written.push(name);
  return name;
}
afterAll(() => {
  for (const name of written) fs.rmSync(`/dev/shm/${name}`, { force: true });
});

function shmUnwritable(): string | null {
  try {
    fs.rmSync(`/dev/shm/${shmFile(new Uint8Array(0))}`);
    return null;
  } catch (err) {
    return `cannot write /dev/shm as this user (${(err as NodeJS.ErrnoException).code})`;
  }
}
const noShm = shmUnwritable();

const DISTINCT = statsBytes(123456789012345n, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
const CASES: Array<[string, Buffer]> = [
  ['every field distinct', DISTINCT],
  ['all zero', statsBytes(0n, Array(15).fill(0))],
  ['every u32 at its maximum, ttl past 2^32 ms', statsBytes(0xffffffffffffffffn, Array(15).fill(0xffffffff), 0xffffffff)],
  ['ttl of exactly 2^32 ms', statsBytes(4294967296n * 1000000n, [7, 0, 0, 0, 0, 0, 0, 1500, 0, 0, 0, 0, 0, 0, 0])],
];

describe('decodeFragStats', () => {
  it('reads every field at its offset, whatever the padding holds', () => {
    const expected: FragStats = {
      ttlNanos: 123456789012345n, size: 1, active: 2, collisions: 3, inserts: 4, rejectedInserts: 5, lookups: 6, objGC: 7,
      mtu: 8, bucketsMax: 9, bucketsAllocated: 10, bucketsUsed: 11, fragsMax: 12, fragsDiscarded: 13, fragsAllocated: 14, reAssembled: 15,
    };
    expect(decodeFragStats(DISTINCT)).toEqual(expected);
    expect(decodeFragStats(statsBytes(123456789012345n, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], 0xdeadbeef))).toEqual(expected);
  });

  it('reads a view that starts inside a larger buffer, and ignores bytes past 72', () => {
    const big = Buffer.concat([Buffer.alloc(13, 0xee), DISTINCT, Buffer.alloc(9, 0xee)]);
    expect(decodeFragStats(new Uint8Array(big.buffer, big.byteOffset + 13, FRAG_STATS_BYTES + 9))).toEqual(decodeFragStats(DISTINCT));
  });
});

describe('encodeFragStats and fragStatsOf', () => {
  it('encode is the inverse of decode, byte for byte (padding zero, counters wrap at 2^32)', () => {
    for (const [, bytes] of CASES.filter(([what]) => !what.startsWith('every u32'))) {
      expect(Buffer.from(encodeFragStats(decodeFragStats(bytes)))).toEqual(bytes);
    }
    const wrapped = decodeFragStats(encodeFragStats({ ...decodeFragStats(DISTINCT), inserts: 2 ** 32 + 5 }));
    expect(wrapped.inserts).toBe(5);
  });

  it("maps a fragment table's statistics and the daemon's options to nfqlb's fields", () => {
    const ft = new FragmentTable({ hashSize: 1, extraBuckets: 2, ttlMs: 200, seed: 1 });
    const key = new Uint8Array(KEY_LEN);
    for (let id = 0; id < 9; id++) ft.store(key, id, id, 0); // one bucket: 1 home + 2 overflow, the rest refused
    ft.lookup(key, 1, 1);
    ft.lookup(key, 99, 1);
    ft.sweep(500);
    const s = fragStatsOf(ft.stats, { size: 1, bucketsMax: 2, ttlMs: 200, mtu: 1500, fragsMax: 0 });
    expect(s).toEqual({
      ttlNanos: 200000000n, size: 1, active: 0, collisions: 8, inserts: 9, rejectedInserts: 6, lookups: 11, objGC: 3,
      mtu: 1500, bucketsMax: 2, bucketsAllocated: 2, bucketsUsed: 0, fragsMax: 0, fragsDiscarded: 0, fragsAllocated: 0, reAssembled: 0,
    });
    expect(ft.stats.length).toBe(FRAG_STATS_FIELDS);
  });
});

describe('formatFragStats', () => {
  it("prints nfqlb's text: aligned keys, ttl in ms, fragsAllocated before fragsDiscarded, no comma after fragsDiscarded", () => {
    expect(formatFragStats(decodeFragStats(DISTINCT))).toBe([
      '{',
      '  "hsize":            1,',
      '  "ttlMillis":        123456789,',
      '  "collisions":       3,',
      '  "inserts":          4,',
      '  "rejected":         5,',
      '  "lookups":          6,',
      '  "objGC":            7,',
      '  "mtu":              8,',
      '  "bucketsMax":       9,',
      '  "bucketsAllocated": 10,',
      '  "bucketsUsed":      11,',
      '  "fragsMax":         12,',
      '  "fragsAllocated":   14,',
      '  "fragsDiscarded":   13',
      '  "reAssembled":      15',
      '}',
      '',
    ].join('\n'));
  });
});

describeUnless(noShm)('readFragStats and `nfqlb stats` on /dev/shm objects', () => {
  it('reads an object written in place', () => {
    expect(readFragStats(shmFile(DISTINCT))).toEqual(decodeFragStats(DISTINCT));
  });

  it('a missing object is NFQLB_ERR_SHM_MISSING; the CLI says it in nfqlb\'s words and exits 1', async () => {
    const name = `${PREFIX}-missing`;
    expect(() => readFragStats(name)).toThrow(expect.objectContaining({ code: 'NFQLB_ERR_SHM_MISSING' }));
    expect(await runInProcess(['stats', `--ft_shm=${name}`])).toEqual({ rc: 1, stdout: '', stderr: `FAILED mapSharedData: ${name}\n` });
  });

  it('an object too short to be the stats is refused (nfqlb reads past its end), with its size', async () => {
    const name = shmFile(Buffer.from('abc'));
    expect(() => readFragStats(name)).toThrow(expect.objectContaining({
      code: 'NFQLB_ERR_SHM_FORMAT', message: `shared memory '${name}' is 3 bytes, not nfqlb's fragment statistics (72 bytes)`,
    }));
    const r = await runInProcess(['stats', `--ft_shm=${name}`]);
    expect([r.rc, r.stdout]).toEqual([1, '']);
    expect(r.stderr).toContain('is 3 bytes');
  });
});

describeUnless(noShm ?? originalUnavailable())('`nfqlb stats` against the original on the same object', () => {
  const original = (words: string[]): { rc: number; stdout: string; stderr: string } => {
    const r = spawnSync(ORIGINAL, words, { encoding: 'latin1', timeout: 10000 });
    return { rc: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };

  it.each(CASES)('%s: the same bytes and exit code', async (_what, bytes) => {
    const name = shmFile(bytes);
    const theirs = original(['stats', `--ft_shm=${name}`]);
    expect(theirs.rc).toBe(0);
    expect(await runInProcess(['stats', `--ft_shm=${name}`])).toEqual({ rc: 0, stdout: theirs.stdout, stderr: '' });
  });

  it('an object written by the daemon\'s FragStatsWriter: the original prints what ours prints', async () => {
    const name = shmFile(new Uint8Array(0));
    const writer = new FragStatsWriter(name);
    const stats = { ...decodeFragStats(DISTINCT), ttlNanos: 200000000n, active: 77 };
    writer.write(stats);
    writer.write({ ...stats, inserts: 1234 }); // rewritten in place
    expect(fs.statSync(`/dev/shm/${name}`).size).toBe(FRAG_STATS_BYTES);
    const theirs = original(['stats', `--ft_shm=${name}`]);
    expect(theirs.rc).toBe(0);
    expect(theirs.stdout).toContain('"inserts":          1234,');
    expect(await runInProcess(['stats', `--ft_shm=${name}`])).toEqual({ rc: 0, stdout: theirs.stdout, stderr: '' });
  });

  it('FragStatsWriter cuts an existing object of another size to the 72 bytes, as nfqlb does', () => {
    const name = shmFile(new Uint8Array(1 << 20).fill(0xab));
    new FragStatsWriter(name).write(decodeFragStats(DISTINCT));
    expect(fs.statSync(`/dev/shm/${name}`).size).toBe(FRAG_STATS_BYTES);
    expect(decodeFragStats(new Uint8Array(fs.readFileSync(`/dev/shm/${name}`)))).toEqual(decodeFragStats(DISTINCT));
  });

  it('FragStatsWriter does not follow a symbolic link planted under the --ft_shm name (shm_open in nfqlb refuses it: O_NOFOLLOW)', () => {
    const victim = shmFile(Buffer.from('not the daemon\'s file, must stay as it is'));
    const link = `${PREFIX}-link-${++seq}`;
    fs.symlinkSync(`/dev/shm/${victim}`, `/dev/shm/${link}`);
    written.push(link);
    expect(() => new FragStatsWriter(link).write(decodeFragStats(DISTINCT))).toThrow(/is a symbolic link, not a regular file; it was not opened\. Remove it/);
    expect(fs.readFileSync(`/dev/shm/${victim}`, 'latin1')).toBe('not the daemon\'s file, must stay as it is');
  });

  it('a missing object: the same words and exit code', async () => {
    const name = `${PREFIX}-missing`;
    const theirs = original(['stats', `--ft_shm=${name}`]);
    expect(await runInProcess(['stats', `--ft_shm=${name}`])).toEqual(theirs);
  });
});
