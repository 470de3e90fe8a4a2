/**
 * A Maglev table as the daemon serves it from /dev/shm, surviving whatever
 * happens to the file underneath: truncated or shrunk, deleted, re-created
 * (with the same or another shape), or replaced by something that is not a
 * table. nfqlb maps the file once and dies with SIGBUS when it shrinks.
 *
 * How:
 * - openTable() checks the file's size before mapping and maps only what the
 *   header and the size agree on; the file stays open (fd) for cheap checks.
 * - check() runs on a timer and whenever the addon reports a repaired SIGBUS
 *   (shmFaultCounter, read per batch without a system call): one fstat of the
 *   fd and one stat of the name. A file shorter than the mapping is never
 *   read again: decisions switch to a private copy of lookup[] and active[]
 *   taken at the previous check ("the last good table"). A deleted file keeps
 *   being served from its mapping (its inode lives while mapped, as in nfqlb).
 *   A re-created file, once it validates, replaces the old mapping.
 * - Between a truncation and the next check, pages of the mapping past the new
 *   end read as -1 (the addon's SIGBUS guard), so those packets get "no
 *   target" and are counted, instead of killing the process.
 *
 * Per packet the cost is what MaglevTable.fwmarkOf costs: the arrays served
 * are swapped here, never checked per packet.
 */
import { NfqlbError } from '../base/errors';
import type { MaglevTable } from './maglev';
import { shmFaultCounter } from '../addon/shm';
import { closeTable, openTable, shmInode, tableFile, tableFileSize } from './tablefile';
import type { LookupTable } from './targets';

/** What happened to a table's file (label `fault` of nfqlb_table_faults_total). */
export type TableFault = 'truncated' | 'deleted' | 'recreated' | 'invalid' | 'not_file' | 'not_owner' | 'restored';

/** Told once per fault, with a one-line detail. */
export type TableFaultListener = (name: string, fault: TableFault, detail: string) => void;

export class ServedTable implements LookupTable {
  M: number;
  N: number;
  /** What fwmarkOf reads: the live mapping's views, or the private copies. */
  lookup: Int32Array;
  active: Int32Array;
  private live: MaglevTable | null = null;
  private copyLookup: Int32Array;
  private copyActive: Int32Array;
  private spareLookup: Int32Array;
  private spareActive: Int32Array;
  private copyOwnFwmark = 0;
  private deletedNoted = false;
  /** An invalid replacement is reported when seen at two checks in a row (nfqlb init writes the header last). */
  private invalidSeen: string | null = null;
  private invalidReported: string | null = null;

  /** Takes ownership of `table` (from openTable). */
  constructor(
    readonly name: string,
    table: MaglevTable,
    private readonly onFault: TableFaultListener = () => {},
  ) {
    this.M = table.M;
    this.N = table.N;
    this.lookup = table.lookup;
    this.active = table.active;
    this.copyLookup = new Int32Array(table.M);
    this.copyActive = new Int32Array(table.N);
    this.spareLookup = new Int32Array(table.M);
    this.spareActive = new Int32Array(table.N);
    this.serveLive(table);
  }

  /** Same as MaglevTable.fwmarkOf, over whatever is served now. */
  fwmarkOf(hash: number): number {
    // >>> 0: the pipeline passes the hash as int32 bits (see MaglevTable.fwmarkOf).
    const slot = this.lookup[(hash >>> 0) % this.M];
    if (!(slot >= 0 && slot < this.N)) return -1;
    return this.active[slot];
  }

  /** As MaglevTable.slotOf, over whatever is served now. */
  slotOf(hash: number): number {
    const slot = this.lookup[(hash >>> 0) % this.M];
    return slot >= 0 && slot < this.N ? slot : -1;
  }

  /** As MaglevTable.fwmarkAt, over whatever is served now. */
  fwmarkAt(slot: number): number {
    return slot >= 0 && slot < this.N ? this.active[slot] : -1;
  }

  /** The LB-tier own fwmark, live or from the copy. */
  get ownFwmark(): number {
    return this.live !== null ? this.live.ownFwmark : this.copyOwnFwmark;
  }

  /** 'live' while the mapping is read, 'copy' after the file shrank. */
  get serving(): 'live' | 'copy' {
    return this.live !== null ? 'live' : 'copy';
  }

  /**
   * Re-validates the file (one fstat, one stat; more only when something
   * changed) and refreshes the private copy. Returns the fault handled, or
   * null when nothing changed. Never throws.
   */
  check(): TableFault | null {
    const live = this.live;
    if (live === null) return shmInode(this.name) === undefined ? null : this.reopen('restored');
    const file = tableFile(live);
    if (file === undefined) return null;
    const size = tableFileSize(live);
    if (size < file.bytes) {
      // Never read this mapping again: serve the copy of the last check.
      this.lookup = this.copyLookup;
      this.active = this.copyActive;
      this.live = null;
      closeTable(live);
      this.onFault(this.name, 'truncated', `the file is ${size < 0 ? 'unreadable' : `${size} bytes`}, the table needs ${file.bytes}; deciding with the copy taken at the last check until a valid table is there`);
      return 'truncated';
    }
    const ino = shmInode(this.name);
    if (ino === file.ino) {
      this.refreshCopy(live, file.bytes);
      return null;
    }
    if (ino === undefined) {
      this.refreshCopy(live, file.bytes);
      if (this.deletedNoted) return null;
      this.deletedNoted = true;
      this.onFault(this.name, 'deleted', 'still deciding with the deleted table until one is created again');
      return 'deleted';
    }
    return this.reopen('recreated');
  }

  /** Unmaps; afterwards every lookup is -1. Idempotent. */
  close(): void {
    const live = this.live;
    this.live = null;
    this.lookup = new Int32Array(0);
    this.active = new Int32Array(0);
    this.M = 1;
    this.N = 0;
    if (live !== null) closeTable(live);
  }

  private reopen(kind: 'recreated' | 'restored'): TableFault | null {
    let table: MaglevTable;
    try {
      table = openTable(this.name);
    } catch (err) {
      const msg = (err as Error).message;
      if (msg !== this.invalidSeen) {
        this.invalidSeen = msg;
        return null;
      }
      if (msg === this.invalidReported) return null;
      this.invalidReported = msg;
      // A FIFO, socket or device under the name (openTable never opens one) is told apart from a bad table.
      const code = err instanceof NfqlbError ? err.code : undefined;
      const fault: TableFault = code === 'NFQLB_ERR_NOT_FILE' ? 'not_file' : code === 'NFQLB_ERR_SHM_OWNER' ? 'not_owner' : 'invalid';
      this.onFault(this.name, fault, `${msg} (still deciding with the ${this.live !== null ? 'old table' : 'copy'})`);
      return fault;
    }
    const old = this.live;
    this.serveLive(table);
    if (old !== null) closeTable(old);
    this.onFault(this.name, kind, `now serving M=${table.M}, N=${table.N}`);
    return kind;
  }

  private serveLive(table: MaglevTable): void {
    this.live = table;
    this.deletedNoted = false;
    this.invalidSeen = null;
    this.invalidReported = null;
    if (this.copyLookup.length !== table.M || this.copyActive.length !== table.N) {
      this.copyLookup = new Int32Array(table.M);
      this.copyActive = new Int32Array(table.N);
      this.spareLookup = new Int32Array(table.M);
      this.spareActive = new Int32Array(table.N);
    }
    this.M = table.M;
    this.N = table.N;
    this.lookup = table.lookup;
    this.active = table.active;
    const file = tableFile(table);
    this.refreshCopy(table, file === undefined ? 0 : file.bytes);
  }

  /**
   * Copies lookup[] and active[] aside. The copy only replaces the previous
   * one when no page fault happened meanwhile and the file still has every
   * byte: a truncation during the copy must not make it the "last good" one.
   */
  private refreshCopy(live: MaglevTable, bytes: number): void {
    const faults = shmFaultCounter();
    const before = faults[0];
    this.spareLookup.set(live.lookup);
    this.spareActive.set(live.active);
    const own = live.ownFwmark;
    if (faults[0] !== before || tableFileSize(live) < bytes) return;
    const l = this.copyLookup;
    const a = this.copyActive;
    this.copyLookup = this.spareLookup;
    this.copyActive = this.spareActive;
    this.spareLookup = l;
    this.spareActive = a;
    this.copyOwnFwmark = own;
  }
}
