/**
 * The flow index's storage: a hash table from 5-word int32 keys to dense ids
 * (0, 1, 2...), and a growable list of int32 pairs that the build sorts into
 * one run of flow positions per id. Keys, hashes and slots live in typed
 * arrays; find() allocates nothing, the rest runs at build time only.
 */

/**
 * A hash of the 5 key words k[at..at+5), and-ed with `mask` (-1: all of it).
 * Masked inside so that on the packet path the result is a small integer:
 * V8 would box a full 32-bit value returned from a call it did not inline.
 */
export function hashKey5(k: Int32Array, at: number, mask: number): number {
  let h = 0x2545f491;
  for (let i = 0; i < 5; i++) {
    h = Math.imul(h ^ k[at + i], 0xcc9e2d51);
    h = (h << 15) | (h >>> 17);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  return (h ^ (h >>> 13)) & mask;
}

/** Open-addressing hash from 5-int32 keys to dense ids 0, 1, 2... */
export class KeyTable {
  keys = new Int32Array(5 * 64);
  size = 0;
  /**
   * The key to find(): the packet path writes the words here rather than
   * passing them (addresses are int32 values beyond V8's small integers, and
   * would be boxed as arguments of a call that is not inlined).
   */
  readonly probe = new Int32Array(5);
  private hashes = new Int32Array(64);
  private slots = new Int32Array(128); // id + 1; 0: empty
  private mask = 127;

  /** The id of the key in `probe`, or -1. Per packet: allocates nothing. */
  find(): number {
    return this.findAt(this.probe, 0, hashKey5(this.probe, 0, this.mask));
  }

  /** The id of key k[at..at+5) that hashes to slot `h`, or -1. */
  private findAt(k: Int32Array, at: number, h: number): number {
    const slots = this.slots;
    const keys = this.keys;
    for (;;) {
      const id = slots[h] - 1;
      if (id < 0) return -1;
      const j = 5 * id;
      if (keys[j] === k[at] && keys[j + 1] === k[at + 1] && keys[j + 2] === k[at + 2] && keys[j + 3] === k[at + 3] && keys[j + 4] === k[at + 4]) return id;
      h = (h + 1) & this.mask;
    }
  }

  /** The id of key src[at..at+5) whose hashKey5() is src[at+5], added if new. Build time only. */
  add(src: Int32Array, at: number): number {
    const hash = src[at + 5];
    const found = this.findAt(src, at, hash & this.mask);
    if (found >= 0) return found;
    if (2 * (this.size + 1) > this.slots.length) this.grow();
    const id = this.size++;
    if (this.size > this.hashes.length) {
      const k = new Int32Array(this.keys.length * 2);
      k.set(this.keys);
      this.keys = k;
      const h = new Int32Array(this.hashes.length * 2);
      h.set(this.hashes);
      this.hashes = h;
    }
    this.keys.set(src.subarray(at, at + 5), 5 * id);
    this.hashes[id] = hash;
    this.place(id);
    return id;
  }

  private place(id: number): void {
    let h = this.hashes[id] & this.mask;
    while (this.slots[h] !== 0) h = (h + 1) & this.mask;
    this.slots[h] = id + 1;
  }

  private grow(): void {
    this.slots = new Int32Array(this.slots.length * 2);
    this.mask = this.slots.length - 1;
    for (let id = 0; id < this.size; id++) this.place(id);
  }
}

/** A growable list of int32 pairs (entry id, flow position). Build time only. */
export class PairList {
  data = new Int32Array(256);
  length = 0;
  push(a: number, b: number): void {
    if (this.length + 2 > this.data.length) {
      const d = new Int32Array(this.data.length * 2);
      d.set(this.data);
      this.data = d;
    }
    this.data[this.length++] = a;
    this.data[this.length++] = b;
  }
}
