/**
 * The storage of the fragment table's entries: one slot per entry in typed
 * arrays allocated once (the datagram's key — addresses, fragment id and
 * their fingerprint —, the stored value, when it was last seen, its
 * reassembly holes, its state and its kept copies), the links between
 * entries (chains.ts), and the seeded hash the table is addressed by.
 * FragmentTable (table.ts) builds its policy — store, lookup, hold, expiry,
 * the clock sweep — on these; nothing here allocates after construction.
 */
import { KEY_ADDR_END } from '../packet/hashkey';
import { EntryChains, NONE } from './chains';
import { NO_SLOT } from './store';

/** Entry states: the first fragment's value is stored; later fragments came first; one of them was lost. */
export const HAS_VALUE = 0;
export const WAITING = 1;
export const POISONED = 2;

export class FragmentEntries {
  readonly hashSize: number;
  readonly extraBuckets: number;
  /** hashSize + extraBuckets: the most datagrams the table can hold. */
  readonly capacity: number;
  readonly maxChain: number;
  protected readonly seed: number;

  protected readonly used: Uint8Array;
  protected readonly fingerprints: Int32Array;
  protected readonly addrs: Uint8Array;
  protected readonly ids: Uint32Array;
  protected readonly values: Float64Array;
  /** When a fragment of the entry's datagram was last seen (ms): expiry counts from here. */
  protected readonly lastSeen: Float64Array;
  /** The chains, the free list and the age list of the overflow entries. */
  protected readonly chains: EntryChains;
  /** chains.next, read directly on the walk of a chain. */
  protected readonly next: Int32Array;
  /** Entry → the head of its datagram's hole list in the reassembler, or NONE. */
  protected readonly holes: Int32Array;
  /** Per entry: HAS_VALUE, WAITING or POISONED. */
  protected readonly states: Uint8Array;
  /** Per entry: the first of its kept copies in the store, or NO_SLOT. */
  protected readonly kept: Int32Array;

  /**
   * hashSize home slots (≥ 1) and extraBuckets overflow entries (≥ 0), at
   * most maxChain of them per home slot; seed: the hash seed, random when
   * undefined.
   */
  constructor(hashSize: number, extraBuckets: number, maxChain: number, seed: number | undefined) {
    this.hashSize = Math.max(1, Math.floor(hashSize));
    this.extraBuckets = Math.max(0, Math.floor(extraBuckets));
    this.capacity = this.hashSize + this.extraBuckets;
    this.maxChain = Math.max(0, Math.floor(maxChain));
    this.seed = (seed ?? Math.floor(Math.random() * 0x100000000)) | 0;
    const n = this.capacity;
    this.used = new Uint8Array(n);
    this.fingerprints = new Int32Array(n);
    this.addrs = new Uint8Array(n * KEY_ADDR_END);
    this.ids = new Uint32Array(n);
    this.values = new Float64Array(n);
    this.lastSeen = new Float64Array(n);
    this.chains = new EntryChains(this.hashSize, n, this.maxChain);
    this.next = this.chains.next;
    this.holes = new Int32Array(n).fill(NONE);
    this.states = new Uint8Array(n);
    this.kept = new Int32Array(n).fill(NO_SLOT);
  }

  /** Bytes held by the entries; constant for their life. */
  get byteLength(): number {
    return (
      this.used.byteLength + this.fingerprints.byteLength + this.addrs.byteLength + this.ids.byteLength + this.values.byteLength +
      this.lastSeen.byteLength + this.chains.byteLength + this.holes.byteLength + this.states.byteLength + this.kept.byteLength
    );
  }

  /** Entry e's key becomes the datagram's: addresses key[0..KEY_ADDR_END), fragment id, fingerprint. */
  protected setKey(e: number, key: Uint8Array, id: number, fp: number): void {
    this.fingerprints[e] = fp;
    const base = e * KEY_ADDR_END;
    for (let i = 0; i < KEY_ADDR_END; i++) this.addrs[base + i] = key[i];
    this.ids[e] = id;
  }

  protected matches(e: number, key: Uint8Array, id: number, fp: number): boolean {
    if (this.fingerprints[e] !== fp || this.ids[e] !== id) return false;
    const base = e * KEY_ADDR_END;
    for (let i = 0; i < KEY_ADDR_END; i++) if (this.addrs[base + i] !== key[i]) return false;
    return true;
  }

  /**
   * Moves overflow entry e's datagram into free home slot `home` (in use
   * afterwards); e keeps no holes and no copies, and stays linked: the caller
   * unlinks and releases it.
   */
  protected moveToHome(e: number, home: number): void {
    this.used[home] = 1;
    this.fingerprints[home] = this.fingerprints[e];
    const from = e * KEY_ADDR_END;
    const to = home * KEY_ADDR_END;
    for (let i = 0; i < KEY_ADDR_END; i++) this.addrs[to + i] = this.addrs[from + i];
    this.ids[home] = this.ids[e];
    this.values[home] = this.values[e];
    this.lastSeen[home] = this.lastSeen[e];
    this.holes[home] = this.holes[e];
    this.holes[e] = NONE;
    this.states[home] = this.states[e];
    this.kept[home] = this.kept[e];
    this.kept[e] = NO_SLOT;
  }

  /** Seeded 32-bit mix (murmur3 rounds) of the addresses and the id; also the home slot's hash. */
  protected fingerprint(key: Uint8Array, id: number): number {
    let h = this.seed;
    for (let i = 0; i <= KEY_ADDR_END; i += 4) {
      let w = i < KEY_ADDR_END ? (key[i] << 24) | (key[i + 1] << 16) | (key[i + 2] << 8) | key[i + 3] : id | 0;
      w = Math.imul(w, 0xcc9e2d51);
      w = (w << 15) | (w >>> 17);
      w = Math.imul(w, 0x1b873593);
      h ^= w;
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h;
  }
}
