/**
 * Port-block arithmetic for the flow index: port ranges as aligned
 * power-of-two blocks (level k: 2^k ports starting at a multiple of 2^k, the
 * nodes of a segment tree over 0..65535), so that a port finds the ranges
 * containing it with one probe per block level in use. Build time only.
 */

/** A flow whose dports need more blocks than this is in its classes' "any" lists instead. */
export const MAX_PORT_BLOCKS = 32;

/**
 * The aligned blocks that exactly cover the port ranges r (sorted [lo, hi]
 * pairs), merged first so no port is in two blocks; pushed to out as
 * (level, port >> level). False when there would be more than MAX_PORT_BLOCKS.
 */
export function portBlocks(r: Int32Array, out: number[]): boolean {
  out.length = 0;
  let i = 0;
  while (i < r.length) {
    let x = r[i];
    let hi = r[i + 1];
    i += 2;
    // Merge overlapping or adjacent ranges (FlowSet's are already; a hand-made Flow may not be).
    while (i < r.length && r[i] <= hi + 1) {
      if (r[i + 1] > hi) hi = r[i + 1];
      i += 2;
    }
    while (x <= hi) {
      let k = 0;
      while (k < 16 && (x & ((1 << (k + 1)) - 1)) === 0 && x + (1 << (k + 1)) - 1 <= hi) k++;
      if (out.length >= 2 * MAX_PORT_BLOCKS) return false;
      out.push(k, x >> k);
      x += 1 << k;
    }
  }
  return true;
}

/** Whether the port ranges are sorted by their start (what portBlocks' merge needs). */
export function sortedRanges(r: Int32Array): boolean {
  for (let i = 2; i < r.length; i += 2) if (r[i] < r[i - 2]) return false;
  return true;
}
