/**
 * The flow index's incremental overlay: what changed in a set since its
 * index was built, so that one change costs O(log n + √n) rather than a
 * rebuild. Removed base flows are marked (by base position); added flows are
 * kept in rank order, a base flow's rank being its base position and an
 * added flow's lying between its neighbours' ranks (a double between two).
 * FlowIndex.lookup() checks the marks while walking the base and walks the
 * added flows after it.
 */
import type { Flow } from './match';

export class FlowOverlay<T> {
  /** Per base position: 1 when that flow is no longer in the set. */
  removed = new Uint8Array(0);
  removedCount = 0;
  /** Flows added since the build, in rank order, and their ranks. */
  readonly flows: Flow<T>[] = [];
  readonly ranks: number[] = [];
  /** Scratch for lookup(): overlay positions of containing hidden flows (one per overlay flow). */
  hidden = new Int32Array(16);
  /** Every flow of the current list → its rank. */
  private rankOf = new Map<Flow<T>, number>();
  private base: readonly Flow<T>[] = [];

  /** Flows added plus base flows removed: how far the set has moved from its base. */
  get changes(): number {
    return this.flows.length + this.removedCount;
  }

  /** Starts again over a newly built base (ranks = positions). */
  reset(base: readonly Flow<T>[]): void {
    this.base = base;
    this.removed = new Uint8Array(base.length);
    this.removedCount = 0;
    this.flows.length = 0;
    this.ranks.length = 0;
    const rankOf = new Map<Flow<T>, number>();
    for (let pos = 0; pos < base.length; pos++) rankOf.set(base[pos], pos);
    this.rankOf = rankOf;
  }

  /** Notes that f left the set; false when f is not in it (the caller rebuilds). */
  remove(f: Flow<T>): boolean {
    const rank = this.rankOf.get(f);
    if (rank === undefined) return false;
    this.rankOf.delete(f);
    if (this.base[rank] === f) {
      this.removed[rank] = 1;
      this.removedCount++;
    } else {
      const i = this.flows.indexOf(f);
      this.flows.splice(i, 1);
      this.ranks.splice(i, 1);
    }
    return true;
  }

  /**
   * Notes that f is now at list[at], ranked between its neighbours; false
   * when no rank is left between them (a double runs out after ~40 inserts
   * at one place) or a neighbour is unknown: the caller rebuilds.
   */
  add(list: readonly Flow<T>[], at: number, f: Flow<T>): boolean {
    const lo = at > 0 ? this.rankOf.get(list[at - 1]) : undefined;
    const hi = at + 1 < list.length ? this.rankOf.get(list[at + 1]) : undefined;
    const rank = lo === undefined ? (hi === undefined ? 0 : hi - 1) : hi === undefined ? lo + 1 : (lo + hi) / 2;
    if ((lo !== undefined && rank <= lo) || (hi !== undefined && rank >= hi) || (at > 0 && lo === undefined) || (at + 1 < list.length && hi === undefined)) {
      return false;
    }
    let i = this.ranks.length;
    while (i > 0 && this.ranks[i - 1] > rank) i--; // the overlay is short: linear is fine
    this.flows.splice(i, 0, f);
    this.ranks.splice(i, 0, rank);
    this.rankOf.set(f, rank);
    if (this.hidden.length < this.flows.length) this.hidden = new Int32Array(2 * this.flows.length);
    return true;
  }
}
