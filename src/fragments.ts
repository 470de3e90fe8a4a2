/**
 * The fragment table: a later IP fragment has no ports, so it must follow the
 * choice made for the first fragment of the same datagram. Entries are keyed
 * by (source, destination, fragment id) and live `ttlMs` after the first
 * fragment was seen.
 *
 * Size-bounded and allocation-free after construction: open addressing over
 * typed arrays with linear probing; expired slots are reused. When no slot is
 * free the first fragment is refused (the caller drops it), as nfqlb does when
 * its table is full. Out-of-order later fragments are not stored (nfqlb stores
 * them only with --tun, which this implementation does not support).
 */
import { djb2, KEY_ADDR_END } from './hashkey';

const EMPTY = 0;
const USED = 1;

export class FragmentTable {
  readonly capacity: number;
  readonly ttlMs: number;
  private readonly state: Uint8Array;
  private readonly addrs: Uint8Array;
  private readonly ids: Uint32Array;
  private readonly fwmarks: Int32Array;
  private readonly expires: Float64Array;
  /** Statistics, read by metrics and `stats`. */
  stored = 0;
  hits = 0;
  misses = 0;
  full = 0;

  /** `capacity` entries (≥ 1), each valid for `ttlMs` milliseconds. */
  constructor(capacity: number, ttlMs: number) {
    this.capacity = Math.max(1, Math.floor(capacity));
    this.ttlMs = ttlMs;
    this.state = new Uint8Array(this.capacity);
    this.addrs = new Uint8Array(this.capacity * KEY_ADDR_END);
    this.ids = new Uint32Array(this.capacity);
    this.fwmarks = new Int32Array(this.capacity);
    this.expires = new Float64Array(this.capacity);
  }

  private home(key: Uint8Array, fragId: number): number {
    return ((djb2(key, 0, KEY_ADDR_END) ^ Math.imul(fragId, 0x9e3779b1)) >>> 0) % this.capacity;
  }

  private sameAddrs(slot: number, key: Uint8Array): boolean {
    const base = slot * KEY_ADDR_END;
    for (let i = 0; i < KEY_ADDR_END; i++) if (this.addrs[base + i] !== key[i]) return false;
    return true;
  }

  /**
   * Remembers `fwmark` for the datagram of a first fragment (addresses in
   * key[0..32), `fragId`). Returns false when the table is full.
   */
  store(key: Uint8Array, fragId: number, fwmark: number, nowMs: number): boolean {
    let slot = this.home(key, fragId);
    let free = -1;
    for (let n = 0; n < this.capacity; n++) {
      const live = this.state[slot] === USED && this.expires[slot] > nowMs;
      if (live) {
        if (this.ids[slot] === fragId >>> 0 && this.sameAddrs(slot, key)) {
          free = slot;
          break;
        }
      } else {
        if (free < 0) free = slot;
        if (this.state[slot] === EMPTY) break;
      }
      slot = slot + 1 === this.capacity ? 0 : slot + 1;
    }
    if (free < 0) {
      this.full++;
      return false;
    }
    this.state[free] = USED;
    const base = free * KEY_ADDR_END; // a copy loop: key.subarray() would allocate a view per packet
    for (let i = 0; i < KEY_ADDR_END; i++) this.addrs[base + i] = key[i];
    this.ids[free] = fragId >>> 0;
    this.fwmarks[free] = fwmark;
    this.expires[free] = nowMs + this.ttlMs;
    this.stored++;
    return true;
  }

  /** The fwmark stored for a later fragment's datagram, or FRAGMENT_MISS when none is stored or it expired. */
  lookup(key: Uint8Array, fragId: number, nowMs: number): number {
    let slot = this.home(key, fragId);
    for (let n = 0; n < this.capacity; n++) {
      const s = this.state[slot];
      if (s === EMPTY) break;
      if (this.expires[slot] > nowMs && this.ids[slot] === fragId >>> 0 && this.sameAddrs(slot, key)) {
        this.hits++;
        return this.fwmarks[slot];
      }
      slot = slot + 1 === this.capacity ? 0 : slot + 1;
    }
    this.misses++;
    return FRAGMENT_MISS;
  }
}

/** Returned by FragmentTable.lookup when no choice is stored. */
export const FRAGMENT_MISS = -2;
