/**
 * Copies of later fragments that came before their first fragment (nfqlb's
 * fragment pool, `--ft_frag` copies of `--mtu` bytes, used only with `--tun`).
 *
 * The fragment table (fragments.ts) keeps, per datagram still waiting for its
 * first fragment, the head of a list of copies here. When the first fragment
 * is decided, its list moves to the re-injection list; the batch handler then
 * writes the whole list to the tun device with one native call
 * (src/addon/tun.ts `flushReinjections`) and the slots are freed. The copies come
 * back through the queue and find the stored choice.
 *
 * Everything is allocated here, once: a byte pool of `slots` × `slotBytes`,
 * per-slot lengths and links, and the re-injection list as offsets/lengths
 * the addon reads directly. keep/drop/queue allocate nothing.
 *
 * Counters are a Float64Array of FSTORE_FIELDS numbers, over a buffer the
 * caller may give (a SharedArrayBuffer, so a daemon can sum one per worker).
 */

/** Copies kept (the fragment table also counts them as nfqlb's fragsAllocated, FS_FRAGS_ALLOCATED). */
export const FSTORE_STORED = 0;
/** Copies written to the tun device. */
export const FSTORE_REINJECTED = 1;
/** Later fragments dropped because no slot was free: their datagram is given up. */
export const FSTORE_NO_SPACE = 2;
/** Later fragments dropped because the packet was not captured whole (larger than --mtu). */
export const FSTORE_TOO_BIG = 3;
/** Kept copies dropped because another fragment of their datagram could not be kept. */
export const FSTORE_DISCARDED = 4;
/** Kept copies dropped because their entry expired (--ft_ttl) before the first fragment came. */
export const FSTORE_EXPIRED = 5;
/** Copies the tun write failed for. */
export const FSTORE_WRITE_ERRORS = 6;
/** Slots holding a copy now (a gauge; summed over workers it is still right). */
export const FSTORE_IN_USE = 7;
export const FSTORE_FIELDS = 8;
/** Label of each counter 0..FSTORE_IN_USE-1 (nfqlb_fragment_store_total{event}). */
export const FSTORE_EVENT_NAMES = ['stored', 'reinjected', 'no_space', 'too_big', 'discarded', 'expired', 'write_error'] as const;

/** No slot / end of a list. */
export const NO_SLOT = -1;

export class FragmentStore {
  readonly slots: number;
  readonly slotBytes: number;
  /** The copies: slot s is bytes[s*slotBytes, s*slotBytes + length). */
  readonly bytes: Uint8Array;
  readonly counters: Float64Array;
  /** Re-injection list, as the addon reads it: packet i is bytes[pendingOffsets[i], +pendingLengths[i]), i < pendingCount. */
  readonly pendingOffsets: Uint32Array;
  readonly pendingLengths: Uint32Array;
  pendingCount = 0;
  private readonly pendingSlots: Int32Array;
  private readonly lengths: Uint32Array;
  /** Slot → next slot of its list (an entry's copies, or the free list). */
  private readonly next: Int32Array;
  private freeHead = NO_SLOT;

  /** `counters`: FSTORE_FIELDS numbers to count into (e.g. over a SharedArrayBuffer); default: its own. */
  constructor(slots: number, slotBytes: number, counters?: Float64Array) {
    this.slots = Math.max(0, Math.floor(slots));
    this.slotBytes = Math.max(1, Math.floor(slotBytes));
    if (counters !== undefined && counters.length < FSTORE_FIELDS) throw new RangeError(`fragment store counters need ${FSTORE_FIELDS} fields`);
    this.counters = counters ?? new Float64Array(FSTORE_FIELDS);
    this.bytes = new Uint8Array(this.slots * this.slotBytes);
    this.lengths = new Uint32Array(this.slots);
    this.next = new Int32Array(this.slots);
    this.pendingSlots = new Int32Array(this.slots);
    this.pendingOffsets = new Uint32Array(this.slots);
    this.pendingLengths = new Uint32Array(this.slots);
    for (let s = this.slots - 1; s >= 0; s--) {
      this.next[s] = this.freeHead;
      this.freeHead = s;
    }
  }

  /**
   * Keeps a copy of the IP packet at pkt[off, off+len) at the head of list
   * `head`; returns the new head, or NO_SLOT when it cannot be kept (no free
   * slot, or not captured whole; counted). The copy is the IP datagram's own
   * length (from its header), so nothing past it is re-injected.
   */
  keep(head: number, pkt: Uint8Array, off: number, len: number): number {
    let ipLen = -1;
    if (len >= 20 && pkt[off] >> 4 === 4) ipLen = (pkt[off + 2] << 8) | pkt[off + 3];
    else if (len >= 40 && pkt[off] >> 4 === 6) ipLen = 40 + ((pkt[off + 4] << 8) | pkt[off + 5]);
    if (ipLen < 0 || ipLen > len || ipLen > this.slotBytes) {
      this.counters[FSTORE_TOO_BIG]++;
      return NO_SLOT;
    }
    const s = this.freeHead;
    if (s === NO_SLOT) {
      this.counters[FSTORE_NO_SPACE]++;
      return NO_SLOT;
    }
    this.freeHead = this.next[s];
    // A loop, not set(subarray): a subarray is an object per packet.
    const bytes = this.bytes;
    const to = s * this.slotBytes;
    for (let i = 0; i < ipLen; i++) bytes[to + i] = pkt[off + i];
    this.lengths[s] = ipLen;
    this.next[s] = head;
    this.counters[FSTORE_STORED]++;
    this.counters[FSTORE_IN_USE]++;
    return s;
  }

  /** Frees list `head`, counting its copies under `why` (FSTORE_DISCARDED or FSTORE_EXPIRED); returns how many there were. */
  drop(head: number, why: number): number {
    let n = 0;
    let s = head;
    while (s !== NO_SLOT) {
      const after = this.next[s];
      this.free(s);
      n++;
      s = after;
    }
    this.counters[why] += n;
    return n;
  }

  /** Moves list `head` to the re-injection list (written and freed by the next flush). */
  queue(head: number): void {
    let s = head;
    while (s !== NO_SLOT) {
      const i = this.pendingCount++;
      this.pendingSlots[i] = s;
      this.pendingOffsets[i] = s * this.slotBytes;
      this.pendingLengths[i] = this.lengths[s];
      s = this.next[s];
    }
  }

  /** After the re-injection list was written (`written` of pendingCount copies): frees it and counts. */
  flushed(written: number): void {
    const n = this.pendingCount;
    for (let i = 0; i < n; i++) this.free(this.pendingSlots[i]);
    this.pendingCount = 0;
    this.counters[FSTORE_REINJECTED] += written;
    this.counters[FSTORE_WRITE_ERRORS] += n - written;
  }

  private free(s: number): void {
    this.next[s] = this.freeHead;
    this.freeHead = s;
    this.counters[FSTORE_IN_USE]--;
  }
}
