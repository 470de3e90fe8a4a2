/**
 * Where table commands find their tables: /dev/shm for the CLI and the daemon,
 * private memory for `nfqlb replay --config`, so the same command code serves
 * both and a replay never touches a live system.
 */
import { NfqlbError } from '../base/errors';
import { MaglevTable } from './maglev';
import { closeTable, createTable, deleteTable, openTable } from './tablefile';

export interface TableStore {
  /** nfqlb init: a fresh table (M already adjusted), open read-write. */
  create(name: string, M: number, N: number, ownFwmark: number): MaglevTable;
  /** Opens an existing table; throws NfqlbError NFQLB_ERR_SHM_MISSING / _FORMAT / _OPEN. */
  open(name: string, writable: boolean): MaglevTable;
  /** Releases a table from create/open. */
  close(table: MaglevTable): void;
  /** nfqlb delete; false when it did not exist. Open tables stay usable. */
  delete(name: string): boolean;
}

export const shmTableStore: TableStore = {
  create: createTable,
  open: openTable,
  close: closeTable,
  delete: deleteTable,
};

/** Tables in process memory, shared by name like shm objects are. */
export class MemoryTableStore implements TableStore {
  private readonly tables = new Map<string, MaglevTable>();

  create(name: string, M: number, N: number, ownFwmark: number): MaglevTable {
    const table = MaglevTable.create(M, N, ownFwmark, name);
    this.tables.set(name, table);
    return table;
  }

  open(name: string): MaglevTable {
    const table = this.tables.get(name);
    if (table === undefined) {
      throw new NfqlbError(`table '${name}' does not exist; create it with an init line first`, 'NFQLB_ERR_SHM_MISSING');
    }
    return table;
  }

  close(): void {
    // Memory tables live as long as something references them.
  }

  delete(name: string): boolean {
    return this.tables.delete(name);
  }
}
