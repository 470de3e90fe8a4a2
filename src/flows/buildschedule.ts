/**
 * When a FlowIndex builds, when not at once: after the current event-loop
 * turn (so that loading thousands of flows in one go builds once), and
 * REBUILD_AFTER_MS after a change noted in the overlay (so that a settled
 * set is looked up through the index alone). These are the flows layer's
 * only timers; both are control-path work, and the rebuild timer does not
 * keep the process alive.
 */

/** A changed set is re-indexed this long after its first change not yet in the base. */
export const REBUILD_AFTER_MS = 100;

export class BuildSchedule<L> {
  private pending: L | null = null;
  private rebuildTimer: NodeJS.Timeout | null = null;

  /**
   * build: builds the index over a list; current: the list the index
   * follows now (what a rebuild builds), null when none.
   */
  constructor(
    private readonly build: (list: L) => void,
    private readonly current: () => L | null,
  ) {}

  /** The list waiting for the end of the turn, or null. */
  get pendingList(): L | null {
    return this.pending;
  }

  /** Builds `list` after the current event-loop turn; later calls in the same turn replace the list. */
  afterTurn(list: L): void {
    const scheduled = this.pending !== null;
    this.pending = list;
    if (scheduled) return;
    setImmediate(() => {
      const pending = this.pending;
      this.pending = null;
      if (pending !== null) this.build(pending);
    });
  }

  /** The list waiting for the end of the turn, no longer waiting (the caller builds now), or null. */
  takePending(): L | null {
    const pending = this.pending;
    this.pending = null;
    return pending;
  }

  /** Rebuilds the current list REBUILD_AFTER_MS from now, unless a rebuild is already due or a build is pending then. */
  rebuildLater(): void {
    if (this.rebuildTimer !== null) return;
    this.rebuildTimer = setTimeout(() => {
      this.rebuildTimer = null;
      const list = this.current();
      if (list !== null && this.pending === null) this.build(list);
    }, REBUILD_AFTER_MS);
    this.rebuildTimer.unref();
  }

  /** No rebuild due any more (a build is happening now). */
  cancelRebuild(): void {
    if (this.rebuildTimer === null) return;
    clearTimeout(this.rebuildTimer);
    this.rebuildTimer = null;
  }
}
