/**
 * Maglev lookup tables in nfqlb 1.2.0's byte layout, over any
 * ArrayBuffer: a POSIX shm mapping (src/addon/shm.ts) or private memory (replay).
 *
 * Layout, little-endian, 4-byte fields, byte offsets:
 *
 *   0        int32  ownFwmark
 *   4        uint32 M          lookup table size (a prime)
 *   8        uint32 N          number of target slots
 *   12       uint32 len        bytes from offset 4 to the end = 12 + 4*(3 + M*N) + 4*(M + N)
 *   16       int32  lookup[M]  slot index, or -1 when no slot is active
 *   16+4M    uint32 perm[N][M] permutation row of each slot
 *   ..       int32  active[N]  fwmark of the slot, < 0 when free
 *   ..       12 zero bytes     nfqlb over-allocates by 3 words; kept for byte parity
 *
 * Everything here is byte-for-byte what nfqlb writes (reference/shm/*.bin),
 * except two deliberate differences: permutation rows are computed exactly for
 * every M (nfqlb overflows 32 bits above M = 65537), and a live table is
 * repopulated so that concurrent readers never see a half-built table (see
 * MaglevTable.applyActive).
 */
import { NfqlbError } from '../base/errors';

/** 997², the largest M nfqlb accepts before taking the prime below it. */
export const PRIME_CAP = 994009;
/** Bytes before lookup[]: ownFwmark, M, N, len. */
export const TABLE_HEADER_BYTES = 16;
/** The len field is a uint32, so no table may be larger than this. */
const MAX_LEN = 0xffffffff;

// Trial division by the primes up to 997 decides primality for every n ≤ 997²,
// which is all primeBelow ever sees because of the cap. Made on first use:
// most command lines (activate, show, ...) never ask, and at load time it
// was a measurable part of their start-up (interpreted, before any JIT).
let smallPrimes: number[] | null = null;

function primesTo997(): number[] {
  const primes: number[] = [];
  for (let n = 3; n <= 997; n += 2) {
    let prime = true;
    for (const p of primes) {
      if (p * p > n) break;
      if (n % p === 0) {
        prime = false;
        break;
      }
    }
    if (prime) primes.push(n);
  }
  return primes;
}

function isPrime(n: number): boolean {
  if (n === 2) return true;
  if (n < 2 || n % 2 === 0) return false;
  smallPrimes ??= primesTo997();
  for (const p of smallPrimes) {
    if (p * p > n) return true;
    if (n % p === 0) return false;
  }
  return true;
}

/**
 * nfqlb's primeBelow(): the largest prime ≤ n, where n is first capped at
 * 994009 (997²), so the result is never above 993997. n is taken as C's
 * `unsigned` (a negative number wraps, and so hits the cap).
 * Throws NfqlbError NFQLB_ERR_RANGE with nfqlb's text for n < 2.
 */
export function primeBelow(n: number): number {
  let m = n >>> 0;
  if (m >= PRIME_CAP) m = PRIME_CAP;
  if (m < 2) throw new NfqlbError(`There is no prime below ${m}`, 'NFQLB_ERR_RANGE');
  if (m < 4) return m;
  if (m % 2 === 0) m--;
  while (!isPrime(m)) m -= 2;
  return m;
}

/**
 * The M that `nfqlb init --M=m` really uses: 3 when m < 3, else primeBelow(m)
 * (m as C's unsigned). A prime M makes every skip coprime with M, which is what
 * turns each row into a permutation.
 */
export function adjustM(m: number): number {
  const u = m >>> 0;
  return u < 3 ? 3 : primeBelow(u);
}

/**
 * glibc's default rand() (TYPE_3 additive feedback, srand(1)), so that tables
 * are byte-identical to nfqlb's: each `nfqlb init` is a new process and draws
 * its permutations from a fresh seed-1 sequence. Outputs 1804289383,
 * 846930886, 1681692777, ...
 */
export class GlibcRandom {
  // r[i] = r[i-31] + r[i-3]; a ring of 34 words holds every term still needed.
  private readonly r = new Uint32Array(34);
  private i = 0;

  constructor(seed = 1) {
    const r = this.r;
    r[0] = seed >>> 0;
    for (let k = 1; k < 31; k++) {
      // 16807 * r < 2^46, so the product is exact in a double.
      const prev = r[k - 1] | 0;
      let word = (16807 * prev) % 2147483647;
      if (word < 0) word += 2147483647;
      r[k] = word;
    }
    for (let k = 31; k < 34; k++) r[k] = r[k - 31];
    this.i = 34;
    // glibc discards the first 310 outputs after seeding.
    for (let k = 34; k < 344; k++) this.step();
  }

  private step(): number {
    const r = this.r;
    const i = this.i;
    const v = (r[(i - 31) % 34] + r[(i - 3) % 34]) >>> 0;
    r[i % 34] = v;
    this.i = i + 1;
    return v;
  }

  /** The next rand() value, 0 ≤ v < 2^31. */
  next(): number {
    return this.step() >>> 1;
  }
}

/** Value of the len field for M and N (bytes after ownFwmark). */
export function maglevLen(M: number, N: number): number {
  return 12 + 4 * (3 + M * N) + 4 * (M + N);
}

/** Total byte size of a table file for M and N (4 + len), e.g. 131760 for 997/32. */
export function tableBytes(M: number, N: number): number {
  return 4 + maglevLen(M, N);
}

function formatError(name: string, what: string): NfqlbError {
  return new NfqlbError(
    `shared memory '${name}' is not a valid nfqlb table: ${what}. ` +
      `Recreate it with \`nfqlb init --shm=${name}\` (or \`nfqlb delete --shm=${name}\` if it is not yours).`,
    'NFQLB_ERR_SHM_FORMAT',
  );
}

/**
 * Checks that `buffer` holds a well-formed table and returns its M and N.
 * Throws NfqlbError NFQLB_ERR_SHM_FORMAT naming `name` and the defect.
 * Permutation rows are not scanned here (that is O(M*N)); populate checks
 * every entry it uses.
 */
export function validateTable(buffer: ArrayBuffer, name: string): { M: number; N: number } {
  const size = buffer.byteLength;
  if (size < TABLE_HEADER_BYTES) {
    throw formatError(name, `it is ${size} bytes, smaller than the ${TABLE_HEADER_BYTES}-byte header`);
  }
  const view = new DataView(buffer);
  const M = view.getUint32(4, true);
  const N = view.getUint32(8, true);
  const len = view.getUint32(12, true);
  if (M < 1) throw formatError(name, 'M is 0');
  const expected = maglevLen(M, N);
  if (len !== expected) {
    throw formatError(name, `len field is ${len} but M=${M}, N=${N} need ${expected}`);
  }
  if (size < 4 + len) {
    throw formatError(name, `it is ${size} bytes but M=${M}, N=${N} need ${4 + len} (truncated?)`);
  }
  const lookup = new Int32Array(buffer, TABLE_HEADER_BYTES, M);
  for (let i = 0; i < M; i++) {
    const v = lookup[i];
    if (v < -1 || v >= N) {
      throw formatError(name, `lookup[${i}] is ${v}, outside -1..${N - 1}`);
    }
  }
  return { M, N };
}

/**
 * Writes a fresh table (nfqlb `init`) into `buffer`, which must be at least
 * tableBytes(M, N) long: header, all lookup entries -1, permutation rows from a
 * seed-1 glibc rand(), all slots free. M must be adjustM(M) (a prime ≥ 3) and
 * N ≤ M. Any bytes of the buffer beyond the table are left alone.
 */
export function writeFreshTable(buffer: ArrayBuffer, M: number, N: number, ownFwmark: number): void {
  checkShape(M, N);
  const bytes = tableBytes(M, N);
  if (buffer.byteLength < bytes) {
    throw new NfqlbError(`buffer of ${buffer.byteLength} bytes is too small for M=${M}, N=${N} (${bytes})`, 'NFQLB_ERR_RANGE');
  }
  // Body first, header last, `len` last of all: a new shm object is zero-filled,
  // and a daemon that opens it before init is done must find no valid table
  // (len 0) rather than one whose slots all say fwmark 0.
  new Int32Array(buffer, TABLE_HEADER_BYTES, M).fill(-1);
  fillPermutations(new Uint32Array(buffer, TABLE_HEADER_BYTES + 4 * M, M * N), M, N);
  new Int32Array(buffer, TABLE_HEADER_BYTES + 4 * M + 4 * M * N, N).fill(-1);
  new Uint8Array(buffer, bytes - 12, 12).fill(0);
  const head = new Int32Array(buffer, 0, 4);
  Atomics.store(head, 0, ownFwmark | 0);
  Atomics.store(head, 1, M | 0);
  Atomics.store(head, 2, N | 0);
  Atomics.store(head, 3, maglevLen(M, N) | 0);
}

/** Throws NFQLB_ERR_RANGE unless M and N can make a table: M a prime ≥ 3 (as adjustM gives), N ≤ M, len fits 32 bits. */
export function checkShape(M: number, N: number): void {
  if (!Number.isInteger(M) || !Number.isInteger(N) || N < 0 || M < 3 || adjustM(M) !== M) {
    throw new NfqlbError(
      `invalid table shape M=${M}, N=${N}: M must be a prime 3..993997 (use adjustM) and N a non-negative integer`,
      'NFQLB_ERR_RANGE',
    );
  }
  if (N > M) throw new NfqlbError(`N can't be larger than M (M=${M}, N=${N})`, 'NFQLB_ERR_RANGE');
  if (maglevLen(M, N) > MAX_LEN) {
    throw new NfqlbError(
      `table M=${M}, N=${N} would be ${tableBytes(M, N)} bytes, more than the 32-bit len field allows; use a smaller M or N`,
      'NFQLB_ERR_RANGE',
    );
  }
}

/**
 * Row i: offset = rand() % M, skip = rand() % (M-1) + 1,
 * perm[i][j] = (offset + j*skip) % M. Stepping by skip modulo M is the exact
 * value for every M; nfqlb's 32-bit `offset + j*skip` is the same for M ≤ 65537
 * and wraps (giving a non-permutation) above it; here it does not: a deliberate divergence from nfqlb.
 */
function fillPermutations(perm: Uint32Array, M: number, N: number): void {
  const rand = new GlibcRandom(1);
  for (let i = 0; i < N; i++) {
    const offset = rand.next() % M;
    const skip = (rand.next() % (M - 1)) + 1;
    const row = i * M;
    let v = offset;
    for (let j = 0; j < M; j++) {
      perm[row + j] = v;
      v += skip;
      if (v >= M) v -= M;
    }
  }
}

/**
 * Maglev algorithm 1 (Eisenbud et al., NSDI 2016, §3.4) into `out`: every entry gets the slot that
 * owns it, or -1 when no slot in `active` is ≥ 0. Reads the permutation rows
 * from `perm`. Throws NFQLB_ERR_SHM_FORMAT (naming `name`) when a row is not a
 * permutation of 0..M-1, which is what nfqlb's overflowing init leaves for
 * M > 65537; nfqlb itself would loop forever or read past the row.
 */
export function computeLookup(
  perm: Uint32Array,
  active: Int32Array,
  M: number,
  N: number,
  out: Int32Array,
  name = 'table',
): void {
  out.fill(-1, 0, M);
  // Indexed loops over typed arrays: a command line runs this once, cold, in
  // the interpreter, where an iterator per pass (M passes with one target)
  // was most of `activate`'s work (docs/performance.md, CLI start-up).
  const slots = new Int32Array(N);
  let count = 0;
  for (let i = 0; i < N; i++) if (active[i] >= 0) slots[count++] = i;
  if (count === 0) return;
  const next = new Uint32Array(N);
  let filled = 0;
  for (;;) {
    for (let s = 0; s < count; s++) {
      const i = slots[s];
      const row = i * M;
      let k = next[i];
      let c = perm[row + k];
      while (c >= M || out[c] >= 0) {
        if (c >= M) throw formatError(name, `perm[${i}][${k}] is ${c}, not below M=${M}`);
        k++;
        if (k >= M) throw formatError(name, `permutation row ${i} is not a permutation of 0..${M - 1}`);
        c = perm[row + k];
      }
      out[c] = i;
      next[i] = k + 1;
      if (++filled === M) return;
    }
  }
}

/**
 * One Maglev table over an ArrayBuffer, for readers (the daemon's per-packet
 * lookup) and writers (activate/deactivate). M and N are read once, when the
 * table is opened; lookup, active and ownFwmark are read live, so a change made
 * by another process through the same shm is seen on the next call.
 */
export class MaglevTable {
  readonly M: number;
  readonly N: number;
  /** lookup[M]: slot index or -1. Live view of the buffer. */
  readonly lookup: Int32Array;
  /** perm[N*M], row-major. Live view of the buffer. */
  readonly perm: Uint32Array;
  /** active[N]: fwmark, < 0 when the slot is free. Live view of the buffer. */
  readonly active: Int32Array;
  private readonly head: Int32Array;
  private scratch: Int32Array | undefined;

  /**
   * Wraps `buffer` (validated first; throws NFQLB_ERR_SHM_FORMAT naming `name`
   * when it is not a table). The buffer stays owned by the caller. Pass
   * `readOnly` for a PROT_READ mapping: a store into one would kill the
   * process with SIGSEGV, so the changing methods then throw instead (and
   * callers must not write to lookup/active/perm directly either).
   */
  constructor(
    readonly buffer: ArrayBuffer,
    readonly name = 'table',
    readonly readOnly = false,
  ) {
    const { M, N } = validateTable(buffer, name);
    this.M = M;
    this.N = N;
    this.head = new Int32Array(buffer, 0, 4);
    this.lookup = new Int32Array(buffer, TABLE_HEADER_BYTES, M);
    this.perm = new Uint32Array(buffer, TABLE_HEADER_BYTES + 4 * M, M * N);
    this.active = new Int32Array(buffer, TABLE_HEADER_BYTES + 4 * M + 4 * M * N, N);
  }

  /**
   * A fresh table in private memory (what `nfqlb init` would write), for
   * replays and tests. M must be a prime ≥ 3 (adjustM) and N ≤ M.
   */
  static create(M: number, N: number, ownFwmark = 0, name = 'table'): MaglevTable {
    checkShape(M, N);
    const buffer = new ArrayBuffer(tableBytes(M, N));
    writeFreshTable(buffer, M, N, ownFwmark);
    return new MaglevTable(buffer, name);
  }

  /** The own fwmark (LB tier), read live. */
  get ownFwmark(): number {
    return this.head[0];
  }

  /**
   * The fwmark for a packet hash (uint32, or the same 32 bits as an int32): active[lookup[hash % M]], or -1
   * when no target is active. Allocation-free; safe against a table being
   * rewritten or unmapped (a detached buffer gives -1).
   */
  fwmarkOf(hash: number): number {
    // >>> 0: the pipeline passes int32 bits (no heap number per packet); a uint32 stays as it is.
    const slot = this.lookup[(hash >>> 0) % this.M];
    if (!(slot >= 0 && slot < this.N)) return -1;
    return this.active[slot];
  }

  /** The slot (target index) for a packet hash, or -1 (see fwmarkOf). */
  slotOf(hash: number): number {
    const slot = this.lookup[(hash >>> 0) % this.M];
    return slot >= 0 && slot < this.N ? slot : -1;
  }

  /** The fwmark in `slot` now, or -1 (inactive, or no such slot). */
  fwmarkAt(slot: number): number {
    return slot >= 0 && slot < this.N ? this.active[slot] : -1;
  }

  /** Slot of a lookup index, or -1 (also for an index outside the table). */
  slotAt(index: number): number {
    const slot = this.lookup[index];
    return slot >= 0 && slot < this.N ? slot : -1;
  }

  /**
   * `activate --index=I FW`: puts FW in slot I and repopulates if it changed.
   * Returns whether anything changed. Throws NFQLB_ERR_RANGE for I outside 0..N-1.
   */
  activateIndex(index: number, fwmark: number): boolean {
    this.checkSlot(index);
    if (this.active[index] === (fwmark | 0)) return false;
    const next = this.active.slice();
    next[index] = fwmark | 0;
    this.applyActive(next);
    return true;
  }

  /**
   * `deactivate --index=I`: frees slot I when it is active, then repopulates.
   * Returns whether anything changed. Throws NFQLB_ERR_RANGE for I outside 0..N-1.
   */
  deactivateIndex(index: number): boolean {
    this.checkSlot(index);
    if (this.active[index] < 0) return false;
    const next = this.active.slice();
    next[index] = -1;
    this.applyActive(next);
    return true;
  }

  /**
   * `activate FW...`: each fwmark not yet in a slot goes to the first free slot
   * (nfqlb's exact rule, including its treatment of negative fwmarks); one
   * repopulation at the end. Fwmarks that find no free slot are skipped, as in
   * nfqlb. Returns whether anything changed.
   */
  activate(fwmarks: readonly number[]): boolean {
    const next = this.active.slice();
    let changed = false;
    for (const raw of fwmarks) {
      const fw = raw | 0;
      let firstFree = -1;
      let found = false;
      for (let i = 0; i < this.N; i++) {
        if (firstFree < 0 && next[i] < 0) firstFree = i;
        if (next[i] === fw) {
          found = true;
          break;
        }
      }
      if (!found && firstFree >= 0) {
        next[firstFree] = fw;
        changed = true;
      }
    }
    if (changed) this.applyActive(next);
    return changed;
  }

  /** `deactivate FW...`: frees the first slot holding each fwmark; one repopulation. Returns whether anything changed. */
  deactivate(fwmarks: readonly number[]): boolean {
    const next = this.active.slice();
    let changed = false;
    for (const raw of fwmarks) {
      const fw = raw | 0;
      const i = next.indexOf(fw);
      if (i >= 0) {
        next[i] = -1;
        changed = true;
      }
    }
    if (changed) this.applyActive(next);
    return changed;
  }

  /** Recomputes lookup[] from the current active[] (repairs a table left half-written). */
  populate(): void {
    this.applyActive(this.active.slice());
  }

  /**
   * Makes `next` (length N) the active array and lookup[] its Maglev table,
   * publishing so that a concurrent reader (the daemon, or any process mapping
   * the same shm) never sees a broken state. nfqlb instead sets every lookup
   * entry to -1 and refills in place, so packets can find no target (DROP)
   * in the middle of an activate.
   *
   *  1. The new lookup is computed aside in a private scratch array (from
   *     `next`, not from the live array).
   *  2. Slots that get a fwmark ≥ 0 are written: a lookup entry that will
   *     point to them is only published after they hold their fwmark.
   *  3. Only entries that differ are stored, each by one aligned 32-bit
   *     Atomics.store, so a reader sees each entry either old or new, never
   *     torn, never -1 in between; Atomics also keeps the stores in this order.
   *  4. Slots that become free (< 0) are cleared last: until then, old entries
   *     still pointing at them resolve to their old target.
   *
   * So while targets remain, every entry a reader can see names an active
   * slot; when the last target goes, entries turn -1 one by one.
   */
  applyActive(next: Int32Array): void {
    const { M, N, active } = this;
    if (this.readOnly) {
      throw new NfqlbError(`table '${this.name}' is open read-only; open it writable to change it`, 'NFQLB_ERR_READONLY');
    }
    if (next.length !== N) throw new NfqlbError(`active array must have ${N} entries, got ${next.length}`, 'NFQLB_ERR_RANGE');
    // Computed before any store, so a bad permutation row leaves the table untouched.
    if (this.scratch === undefined) this.scratch = new Int32Array(M);
    const scratch = this.scratch;
    computeLookup(this.perm, next, M, N, scratch, this.name);
    for (let i = 0; i < N; i++) {
      if (next[i] >= 0 && active[i] !== next[i]) Atomics.store(active, i, next[i]);
    }
    const lookup = this.lookup;
    for (let c = 0; c < M; c++) {
      const v = scratch[c];
      if (lookup[c] !== v) Atomics.store(lookup, c, v);
    }
    for (let i = 0; i < N; i++) {
      if (next[i] < 0 && active[i] !== next[i]) Atomics.store(active, i, next[i]);
    }
  }

  private checkSlot(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.N) {
      throw new NfqlbError(`slot ${index} is outside 0..${this.N - 1} of table '${this.name}'`, 'NFQLB_ERR_RANGE');
    }
  }
}
