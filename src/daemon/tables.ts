/**
 * The tables a daemon serves, and their housekeeping: flow targets mapped by
 * name from /dev/shm (read-only), lb's one table, the --lbshm tier; every
 * TABLE_CHECK_INTERVAL_MS each file is checked (re-created, truncated,
 * deleted), and at once after the addon repaired a SIGBUS (a table file shrank
 * under a mapping). The main thread also counts and logs the faults and says
 * when a table loses its last active target and when it gets one back; a
 * packet thread keeps the same tables, silently (the main thread logs for the
 * same files).
 */
import type { Logger } from '../base/log';
import { RateLimitedLog } from '../base/ratelog';
import { KeyCounter, LabeledCounter } from '../base/counters';
import { shmFaultCounter } from '../addon/shm';
import { openTable } from '../tables/tablefile';
import { ServedTable, type TableFault, type TableFaultListener } from '../tables/servedtable';
import { Target, TargetRegistry, type TableSource } from '../tables/targets';
import { bytesToText } from '../services/control';
import { TRACE_TARGET } from '../services/trace';
import { openRefusal } from './openrefusal';

/** How often open tables are checked for having been re-created (ms). */
export const TABLE_CHECK_INTERVAL_MS = 1000;
/** How long the lines of one table losing or regaining its targets are held back after one was written (ms). */
export const TARGETS_LOG_INTERVAL_MS = 10_000;

/** What the main thread hears of its tables' opening; a packet thread gives none (failures are the main thread's to log). */
export interface TableEvents {
  log: Logger;
  trace: (bit: number, text: string) => void;
  onFault: TableFaultListener;
  /** A table that cannot be opened for any other reason than a refusal (openRefusal). */
  onOpenFailed: (name: string, why: string) => void;
}

/** Tables come from /dev/shm, read-only. A table that cannot be opened is reported (with `events`) as missing. */
export function shmTables(events: TableEvents | null): TableSource<ServedTable> {
  return {
    open(name) {
      try {
        const file = bytesToText(name);
        const table = new ServedTable(file, openTable(file), events?.onFault);
        if (events !== null) {
          events.trace(TRACE_TARGET, `Creating LB; ${name}\n`);
          events.log.debug({ target: file, activeTargets: activeCount(table) }, 'table opened');
        }
        return table;
      } catch (err) {
        if (events === null) return null;
        events.trace(TRACE_TARGET, `Map shm failed; ${name}\n`);
        // Something planted under the name is a fault to count, not just a table that is not there yet.
        const refusal = openRefusal(err);
        if (refusal !== null) events.onFault(bytesToText(name), refusal, (err as Error).message);
        else events.onOpenFailed(bytesToText(name), (err as Error).message);
        return null;
      }
    },
    close(name, table) {
      if (events !== null) {
        events.trace(TRACE_TARGET, `Delete load-balancer; ${name}\n`);
        events.log.debug({ target: bytesToText(name) }, 'table released');
      }
      table.close();
    },
  };
}

/** Active slots of a table now (a loop over N, at most 10000: per scrape or per second, never per packet). */
export function activeCount(table: ServedTable): number {
  let active = 0;
  const slots = table.active;
  for (let i = 0; i < slots.length; i++) if (slots[i] >= 0) active++;
  return active;
}

/** The --lbshm tier as the pipeline reads it. */
export interface LbTier {
  readonly table: ServedTable;
  readonly ownFwmark: number;
}

/** Every table one thread serves: the flows' targets (flowlb), or lb's one table; and the --lbshm tier. */
export class DaemonTables {
  readonly targets: TargetRegistry<ServedTable>;
  /** lb: the one table (--tshm), open from the start. */
  readonly fixed: Target<ServedTable> | null = null;
  readonly tier: LbTier | null = null;

  /** Opens lb's table and the tier (nfqlb's mapSharedDataOrDie: they must exist at start); throws with nothing left open. */
  constructor(options: { mode: 'flowlb' | 'lb'; tshm?: string; lbshm?: string }, events: TableEvents | null) {
    this.targets = new TargetRegistry(shmTables(events));
    if (options.mode === 'lb') {
      const name = options.tshm ?? 'nfqlb';
      this.fixed = new Target(name, new ServedTable(name, openTable(name), events?.onFault));
      this.fixed.refs = 1;
    }
    if (options.lbshm !== undefined) {
      try {
        const table = new ServedTable(options.lbshm, openTable(options.lbshm), events?.onFault);
        this.tier = {
          table,
          get ownFwmark() {
            return table.ownFwmark;
          },
        };
      } catch (err) {
        if (this.fixed !== null) this.fixed.table.close();
        throw err;
      }
    }
  }

  /** The targets packets are counted for: lb's one table, or every flow target. */
  served(): Target<ServedTable>[] {
    return this.fixed === null ? this.targets.list() : [this.fixed];
  }

  /** A served target's name as logs and metrics show it: flow targets are named by request bytes, lb's table by its (text) option. */
  nameOf(t: Target<ServedTable>): string {
    return this.fixed === null ? bytesToText(t.name) : t.name;
  }

  /**
   * Checks every open table's file (ServedTable.check: one fstat and one
   * stat each): a re-created table is swapped in (`nfqlb init` with another
   * shape unlinks the file and makes a new one), a truncated one is served
   * from its last good copy, a deleted one from its mapping. Returns the
   * names of the tables reopened.
   */
  refresh(): string[] {
    const swapped: string[] = [];
    const all: ServedTable[] = this.targets.list().map((t) => t.table);
    if (this.fixed !== null) all.push(this.fixed.table);
    if (this.tier !== null) all.push(this.tier.table);
    for (const table of all) {
      const fault = table.check();
      if (fault === 'recreated' || fault === 'restored') swapped.push(table.name);
    }
    return swapped;
  }

  /** Closes lb's table and the tier (the flow targets' tables are closed as their flows go). */
  closeFixed(): void {
    if (this.fixed !== null) this.fixed.table.close();
    if (this.tier !== null) this.tier.table.close();
  }
}

/** The addon's count of repaired SIGBUS faults (a table file shrank under its mapping), and the value last handled. */
export class BusFaultWatch {
  private readonly count = shmFaultCounter();
  private seen = this.count[0];

  /** Whether a fault was repaired since the last take() (read per batch: one array load). */
  get pending(): boolean {
    return this.count[0] !== this.seen;
  }

  /** The faults since the last take(), now handled. */
  take(): number {
    const n = this.count[0];
    const faults = (n - this.seen) >>> 0;
    this.seen = n;
    return faults;
  }
}

/**
 * The main thread's watch over its tables: faults counted by (target, fault)
 * and logged, repaired SIGBUS faults counted and answered by a check, and a
 * line when a table loses its last active target and when it gets one back.
 */
export class TableChecks {
  /** Table faults by (target, fault) (nfqlb_table_faults_total). */
  readonly faults = new LabeledCounter();
  readonly busFaults = new BusFaultWatch();
  /** Whether each table had an active target at the last check ('lost': had some, has none now). */
  private readonly targetState = new Map<string, 'active' | 'lost' | 'never'>();
  /** Lines of tables losing their last target and getting one back, at most one per table and kind per TARGETS_LOG_INTERVAL_MS. */
  private readonly targetLines: RateLimitedLog;

  constructor(
    private readonly log: Logger,
    /** Opens refused because the name was not a regular file, by object (nfqlb_open_refused_total). */
    private readonly openRefused: KeyCounter,
  ) {
    this.targetLines = new RateLimitedLog((key, count, detail) => {
      const target = key.slice(key.indexOf(':') + 1);
      // A held-back line (a flapping table) can come after the opposite one: `now` says which state holds at writing.
      const fields = { target, times: count, activeTargets: Number(detail), now: this.targetState.get(target) === 'active' ? 'active' : 'no_target' };
      if (key.startsWith('lost:')) this.log.warn(fields, 'table has no active target: packets of its flows are dropped (no_target)');
      else this.log.notice(fields, 'table has active targets again');
    }, TARGETS_LOG_INTERVAL_MS);
  }

  /** One line per table fault (each is reported once by ServedTable), and a count. */
  readonly noteFault: TableFaultListener = (name: string, fault: TableFault, detail: string): void => {
    this.faults.inc(name, fault);
    if (fault === 'not_file') this.openRefused.inc('table');
    const fields = { target: name, fault, detail };
    if (fault === 'recreated' || fault === 'restored') this.log.notice(fields, 'table re-created; reopened');
    else this.log.warn(fields, 'table fault');
  };

  /** After the addon repaired a SIGBUS: a table file shrank under us; find which at once. */
  onBusFault(tables: DaemonTables): void {
    this.faults.inc('', 'mapping_fault', this.busFaults.take());
    tables.refresh();
  }

  /**
   * Every table check: a line when a table loses its last active target and
   * when it gets one back (a new table that has none yet is not a loss).
   * Rate-limited per table, so a flapping target is a count, not a flood.
   */
  checkActiveTargets(tables: DaemonTables): void {
    const seen = new Set<string>();
    for (const t of tables.served()) {
      const name = tables.nameOf(t);
      seen.add(name);
      const active = activeCount(t.table);
      const was = this.targetState.get(name) ?? 'never';
      // The state first: note() may write the line at once, and the line tells the state.
      if (active > 0 && was !== 'active') {
        this.targetState.set(name, 'active');
        if (was === 'lost') this.targetLines.note(`back:${name}`, String(active));
        else this.log.debug({ target: name, activeTargets: active }, 'table has active targets');
      } else if (active === 0 && was === 'active') {
        this.targetState.set(name, 'lost');
        this.targetLines.note(`lost:${name}`, '0');
      } else if (!this.targetState.has(name)) {
        this.targetState.set(name, 'never');
      }
    }
    for (const name of this.targetState.keys()) if (!seen.has(name)) this.targetState.delete(name);
    this.targetLines.flush();
  }
}
