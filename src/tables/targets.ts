import { FwmarkCounter } from '../base/counters';

/**
 * The target registry: flows name their table ("target") by shm name; the
 * registry opens a table on the first flow that names it, shares it between
 * flows, and releases it when the last flow goes (issue 9 of
 * nfqlb). Where tables come from is a TableSource: /dev/shm for the daemon,
 * private memory for `nfqlb replay --config`.
 */

/** What the pipeline needs from a table: the fwmark for a hash, or -1. */
export interface LookupTable {
  fwmarkOf(hash: number): number;
  /**
   * For --conntrack: the slot (target index) a hash maps to, or -1; and the
   * fwmark in a slot now, or -1. Tables without them are never tracked.
   */
  slotOf?(hash: number): number;
  fwmarkAt?(slot: number): number;
}

let nextSerial = 1;

export interface TableSource<T extends LookupTable = LookupTable> {
  /** Opens the named table; null when it does not exist or is not a valid table. */
  open(name: string): T | null;
  /** Releases a table returned by open(). */
  close(name: string, table: T): void;
}

/**
 * One table in use by one or more flows. The daemon's tables (ServedTable)
 * follow their shm file themselves (re-created, truncated, deleted), so
 * `table` stays the same object for the target's life.
 */
export class Target<T extends LookupTable = LookupTable> {
  refs = 0;
  /**
   * Tells this Target from any earlier one of the same name (a table released
   * with its last flow and opened again): --conntrack entries remember it, so
   * a connection is never sent on by a table it was not decided with.
   */
  readonly serial = nextSerial++ >>> 0;
  /** Packets sent to each fwmark of this table (nfqlb_target_packets_total). */
  readonly fwmarks = new FwmarkCounter();
  /** Packets with decision no_target through this table (nfqlb_table_no_target_total). */
  noTarget = 0;
  constructor(
    readonly name: string,
    readonly table: T,
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

  /** The targets currently open (for metrics and `show`). */
  list(): Target<T>[] {
    return [...this.targets.values()];
  }
}
