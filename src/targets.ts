import { FwmarkCounter } from './counters';

/**
 * The target registry: flows name their table ("target") by shm name; the
 * registry opens a table on the first flow that names it, shares it between
 * flows, and releases it when the last flow goes (SPEC.md §5, issue 9 of
 * nfqlb). Where tables come from is a TableSource: /dev/shm for the daemon,
 * private memory for `nfqlb replay --config`.
 */

/** What the pipeline needs from a table: the fwmark for a hash, or -1. */
export interface LookupTable {
  fwmarkOf(hash: number): number;
}

export interface TableSource<T extends LookupTable = LookupTable> {
  /** Opens the named table; null when it does not exist or is not a valid table. */
  open(name: string): T | null;
  /** Releases a table returned by open(). */
  close(name: string, table: T): void;
}

/**
 * One table in use by one or more flows. `table` is replaced (never mutated)
 * when the shm object behind it is re-created with another shape; the
 * pipeline reads it on every packet, so the swap takes effect at once.
 */
export class Target<T extends LookupTable = LookupTable> {
  refs = 0;
  /** Packets sent to each fwmark of this table (nfqlb_target_packets_total). */
  readonly fwmarks = new FwmarkCounter();
  constructor(
    readonly name: string,
    public table: T,
  ) {}
}

export class TargetRegistry<T extends LookupTable = LookupTable> {
  private readonly targets = new Map<string, Target<T>>();

  constructor(private readonly source: TableSource<T>) {}

  /** Returns the target for `name` with one more reference, or null when the table cannot be opened. */
  acquire(name: string): Target<T> | null {
    let target = this.targets.get(name);
    if (target === undefined) {
      const table = this.source.open(name);
      if (table === null) return null;
      target = new Target(name, table);
      this.targets.set(name, target);
    }
    target.refs++;
    return target;
  }

  /** Drops one reference; the table is closed when none is left. Accepts null for convenience. */
  release(target: Target<T> | null): void {
    if (target === null) return;
    target.refs--;
    if (target.refs <= 0 && this.targets.get(target.name) === target) {
      this.targets.delete(target.name);
      this.source.close(target.name, target.table);
    }
  }

  /**
   * Re-opens every target whose table `isStale` reports (its shm object was
   * replaced, e.g. by `nfqlb init` with another M or N) and swaps the new
   * table in, closing the old one. A target whose table cannot be opened
   * again keeps the one it has. Returns the names of the targets swapped.
   */
  refresh(isStale: (name: string, table: T) => boolean): string[] {
    const swapped: string[] = [];
    for (const target of this.targets.values()) {
      if (!isStale(target.name, target.table)) continue;
      const table = this.source.open(target.name);
      if (table === null) continue;
      const old = target.table;
      target.table = table;
      this.source.close(target.name, old);
      swapped.push(target.name);
    }
    return swapped;
  }

  /** The targets currently open (for metrics and `show`). */
  list(): Target<T>[] {
    return [...this.targets.values()];
  }
}
