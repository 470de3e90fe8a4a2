/**
 * Reassembly bookkeeping (`--reassembler=N`): which byte ranges of a
 * fragmented datagram have been seen, so that the fragment table can free a
 * datagram's entry as soon as its last missing fragment has passed instead of
 * keeping it for the whole --ft_ttl. Nothing is reassembled: only the holes
 * are tracked, with the hole-descriptor algorithm of RFC 815 (as nfqlb's
 * reassembler.c does).
 *
 * Bounded: N hole descriptors in preallocated typed arrays, shared by all
 * datagrams (as nfqlb's pool of N holes). A datagram starts with one hole
 * (0 to infinity); a fragment in the middle of a hole splits it in two. When
 * no descriptor is free, the datagram's bookkeeping is given up (its holes
 * are returned and it counts as `abandoned`); its entry then lives until it
 * expires, as without a reassembler. Per fragment: no allocation, and work
 * proportional to the datagram's holes.
 */

const NONE = -1;
/** A hole's last byte when the datagram's end is not known yet (no fragment without MF seen). */
const INFINITY = 0xffffffff;

/** What add() found. */
export const REASSEMBLY_INCOMPLETE = 1;
export const REASSEMBLY_COMPLETE = 0;
/** The bookkeeping was given up (no free descriptor); the handle is released. */
export const REASSEMBLY_ABANDONED = -1;

export class Reassembler {
  /** Hole descriptors in all. */
  readonly size: number;
  private readonly first: Float64Array;
  private readonly last: Float64Array;
  /** Descriptor → next hole of the same datagram, or next free descriptor. */
  private readonly next: Int32Array;
  private freeHead = NONE;
  private freeCount = 0;
  /** Datagrams whose bookkeeping could not start or was given up for lack of descriptors. */
  abandoned = 0;

  constructor(size: number) {
    this.size = Math.max(0, Math.floor(size));
    this.first = new Float64Array(this.size);
    this.last = new Float64Array(this.size);
    this.next = new Int32Array(this.size).fill(NONE);
    for (let h = this.size - 1; h >= 0; h--) this.release1(h);
  }

  /** Bytes held; constant for its life. */
  get byteLength(): number {
    return this.first.byteLength + this.last.byteLength + this.next.byteLength;
  }

  /** Free descriptors now. */
  get free(): number {
    return this.freeCount;
  }

  /**
   * Starts the bookkeeping of a datagram: returns its handle (the head of its
   * hole list: one hole, 0 to infinity), or -1 when no descriptor is free.
   */
  begin(): number {
    const h = this.take();
    if (h === NONE) {
      this.abandoned++;
      return NONE;
    }
    this.first[h] = 0;
    this.last[h] = INFINITY;
    this.next[h] = NONE;
    return h;
  }

  /**
   * Records a fragment carrying bytes [offset, offset+length) of datagram
   * `handle`; `more` is the MF flag. Returns REASSEMBLY_COMPLETE when no hole
   * is left (the handle is then released: do not use it again),
   * REASSEMBLY_INCOMPLETE, or REASSEMBLY_ABANDONED (handle released).
   * The handle is passed in and out through `handleSlot[index]`, because a
   * hole list's head can change.
   */
  add(handleSlot: Int32Array, index: number, offset: number, length: number, more: number): number {
    let head = handleSlot[index];
    if (head === NONE) return REASSEMBLY_ABANDONED;
    if (length <= 0) return REASSEMBLY_INCOMPLETE;
    const fragFirst = offset;
    const fragLast = offset + length - 1;
    let prev = NONE;
    let h = head;
    // RFC 815 steps 1-7: every hole the fragment touches is replaced by what
    // is left of it on either side.
    while (h !== NONE) {
      const holeFirst = this.first[h];
      const holeLast = this.last[h];
      if (fragFirst > holeLast || fragLast < holeFirst) {
        prev = h;
        h = this.next[h];
        continue;
      }
      const left = fragFirst > holeFirst;
      const right = fragLast < holeLast && more !== 0;
      if (left) {
        // Step 5: the hole's start stays a hole; reuse the descriptor.
        this.last[h] = fragFirst - 1;
      }
      if (right) {
        // Step 6: the hole's end stays a hole.
        let r = h;
        if (left) {
          r = this.take();
          if (r === NONE) {
            this.releaseList(head);
            handleSlot[index] = NONE;
            this.abandoned++;
            return REASSEMBLY_ABANDONED;
          }
          this.next[r] = this.next[h];
          this.next[h] = r;
        }
        this.first[r] = fragLast + 1;
        this.last[r] = holeLast;
        prev = r;
        h = this.next[r];
        continue;
      }
      if (left) {
        prev = h;
        h = this.next[h];
        continue;
      }
      // Step 4: the hole is filled.
      const after = this.next[h];
      if (prev === NONE) head = after;
      else this.next[prev] = after;
      this.release1(h);
      h = after;
    }
    handleSlot[index] = head;
    return head === NONE ? REASSEMBLY_COMPLETE : REASSEMBLY_INCOMPLETE;
  }

  /** Gives back every descriptor of a datagram (its entry was freed). -1 is ignored. */
  release(handle: number): void {
    if (handle !== NONE) this.releaseList(handle);
  }

  /** Holes of a datagram as [first, last] pairs (last = Infinity when open): for tests. */
  holes(handle: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let h = handle; h !== NONE; h = this.next[h]) out.push([this.first[h], this.last[h] === INFINITY ? Infinity : this.last[h]]);
    return out;
  }

  private take(): number {
    const h = this.freeHead;
    if (h !== NONE) {
      this.freeHead = this.next[h];
      this.next[h] = NONE;
      this.freeCount--;
    }
    return h;
  }

  private release1(h: number): void {
    this.next[h] = this.freeHead;
    this.freeHead = h;
    this.freeCount++;
  }

  private releaseList(h: number): void {
    while (h !== NONE) {
      const after = this.next[h];
      this.release1(h);
      h = after;
    }
  }
}
