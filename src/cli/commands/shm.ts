/**
 * Table commands: init, delete, show, activate, deactivate (the tables in /dev/shm).
 * Texts, number parsing (C atoi, unsigned comparisons) and exit codes are
 * nfqlb 1.2.0's, so scripts written for nfqlb (Meridio) behave the same.
 */
import { atoi } from '../../base/catoi';
import { NfqlbError, UsageError } from '../../base/errors';
import { adjustM, type MaglevTable } from '../../tables/maglev';
import type { TableStore } from '../../tables/tablestore';
import type { Options, NfqlbCommand, ParsedArgs } from '../command';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

/** The table nfqlb uses when --shm is not given. */
export const DEFAULT_TARGET_SHM = 'nfqlb';


function optString(args: ParsedArgs, name: string, dflt: string): string {
  const v = args[name];
  return v === undefined ? dflt : String(v);
}

/**
 * Opens a table for a command the way nfqlb's mapSharedDataOrDie does: any
 * failure to open or map is `FAILED mapSharedData: NAME`, exit 1. A file that
 * maps but is not a table gets our own message (nfqlb would read garbage).
 */
function mapOrDie(store: TableStore, name: string, writable: boolean): MaglevTable {
  try {
    return store.open(name, writable);
  } catch (err) {
    if (err instanceof NfqlbError && err.code !== 'NFQLB_ERR_SHM_FORMAT') {
      throw new UsageError(`FAILED mapSharedData: ${name}`, 1, 'NFQLB_ERR_USAGE', { cause: err });
    }
    throw err;
  }
}

/** glibc's strerror() texts for what creating or removing a shm object can fail with. */
const STRERROR: Record<string, string> = {
  EINVAL: 'Invalid argument',
  ENAMETOOLONG: 'File name too long',
  EISDIR: 'Is a directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  EMFILE: 'Too many open files',
  ENFILE: 'Too many open files in system',
  ENOMEM: 'Cannot allocate memory',
  ENOTDIR: 'Not a directory',
  ENXIO: 'No such device or address',
  ELOOP: 'Too many levels of symbolic links',
};

/**
 * A failure of `init` to make the shm object, as nfqlb words it
 * (`createSharedData: Invalid argument`); glibc's shm_open reports a
 * directory as EINVAL. Other errors (e.g. no room in /dev/shm) keep our text.
 */
function createFailure(err: unknown): unknown {
  if (err instanceof NfqlbError && err.errnoName !== undefined && ['NFQLB_ERR_SHM_NAME', 'NFQLB_ERR_SHM_OPEN', 'NFQLB_ERR_SHM_UNLINK', 'NFQLB_ERR_NOT_FILE'].includes(err.code)) {
    const errno = err.errnoName === 'EISDIR' ? 'EINVAL' : err.errnoName;
    const text = STRERROR[errno];
    if (text !== undefined) return new UsageError(`createSharedData: ${text}`, 1, 'NFQLB_ERR_USAGE', { cause: err });
  }
  return err;
}

/** Runs `body` on an open table and always unmaps it. */
function withTable<T>(store: TableStore, name: string, writable: boolean, body: (t: MaglevTable) => T): T {
  const table = mapOrDie(store, name, writable);
  try {
    return body(table);
  } finally {
    store.close(table);
  }
}

/** Text of `nfqlb show` for one table, byte for byte as nfqlb prints it. */
export function formatShow(name: string, t: MaglevTable): string {
  const lookup: string[] = [];
  for (let i = 0; i < 25 && i < t.M; i++) lookup.push(` ${t.lookup[i]}`);
  const active: string[] = [];
  for (let i = 0; i < t.N; i++) if (t.active[i] >= 0) active.push(` ${t.active[i]}(${i})`);
  return (
    `Shm: ${name}\n` +
    `  Fw: own=${t.ownFwmark}\n` +
    `  Maglev: M=${t.M}, N=${t.N}\n` +
    `   Lookup:${lookup.join('')}...\n` +
    `   Active:${active.join('')}\n`
  );
}

/** nfqlb compares `int index >= unsigned N`, so a negative index is "too large" too. */
function slotIndex(index: string, table: MaglevTable): number {
  const i = atoi(index) >>> 0;
  if (i >= table.N) throw new UsageError('Lookup index too large');
  return i;
}

export const shmCommands: NfqlbCommand[] = [
  {
    name: 'init',
    describe: 'Initiate shared mem structures',
    usage: 'init [options]\n  Initiate shared mem structures',
    options: {
      ownfw: str('Own FW mark. Only used in the LB-tier!', { default: '0' }),
      shm: str('Target shared memory', { default: DEFAULT_TARGET_SHM, values: 'shm' }),
      N: str('Maglev max targets', { default: '32' }),
      M: str('Maglev lookup table size', { default: '997' }),
    },
    run(args, { store, out }) {
      const shm = optString(args, 'shm', DEFAULT_TARGET_SHM);
      // nfqlb holds M and N in `unsigned`: "-1" becomes 4294967295.
      let m = atoi(optString(args, 'M', '997')) >>> 0;
      const p = adjustM(m);
      if (p !== m) {
        out(`M adjusted; ${m} -> ${p}\n`);
        m = p;
      }
      const n = atoi(optString(args, 'N', '32')) >>> 0;
      if (n > m) throw new UsageError("N can't be larger than M");
      let table: MaglevTable;
      try {
        table = store.create(shm, m, n, atoi(optString(args, 'ownfw', '0')));
      } catch (err) {
        throw createFailure(err);
      }
      store.close(table);
    },
  },
  {
    name: 'delete',
    describe: 'Delete shared mem structures',
    usage: 'delete [options]\n  Delete shared mem structures',
    options: {
      shm: str('Target shared memory', { demandOption: true, values: 'shm' }),
    },
    run(args, { store }) {
      try {
        store.delete(String(args.shm));
      } catch (err) {
        // nfqlb prints strerror() alone. glibc's shm_unlink reports a name it
        // refuses as ENOENT, which nfqlb (like a missing object) ignores.
        if (!(err instanceof NfqlbError) || err.errnoName === undefined) throw err;
        if (err.code === 'NFQLB_ERR_SHM_NAME' && err.errnoName === 'EINVAL') return;
        const text = STRERROR[err.errnoName];
        if (text !== undefined) throw new UsageError(text, 1, 'NFQLB_ERR_USAGE', { cause: err });
        throw err;
      }
    },
  },
  {
    name: 'show',
    describe: 'Show shared mem structures',
    usage: 'show [options]\n  Show shared mem structures',
    options: {
      shm: str('Shared memory', { default: DEFAULT_TARGET_SHM, values: 'shm' }),
    },
    run(args, { store, out }) {
      const shm = optString(args, 'shm', DEFAULT_TARGET_SHM);
      out(withTable(store, shm, false, (t) => formatShow(shm, t)));
    },
  },
  {
    name: 'activate',
    describe: 'Activate targets',
    usage: 'activate [--shm=] <fwmarks...>\nactivate [--shm=] --index=# <fwmark>\n  Activate targets.',
    options: {
      shm: str('Shared memory', { default: DEFAULT_TARGET_SHM, values: 'shm' }),
      index: str('Index in the active table (<= N)'),
    },
    run(args, { store, out }) {
      const shm = optString(args, 'shm', DEFAULT_TARGET_SHM);
      withTable(store, shm, true, (t) => {
        if (args.index !== undefined) {
          // nfqlb checks nothing, not even the index, when no fwmark is given.
          if (args._.length === 0) return;
          t.activateIndex(slotIndex(String(args.index), t), atoi(args._[0]));
          return;
        }
        t.activate(args._.map(atoi));
      });
    },
  },
  {
    name: 'deactivate',
    describe: 'Deactivate targets',
    usage: 'deactivate [--shm=] <fwmarks...>\ndeactivate [--shm=] --index=#\n  Deactivate targets',
    options: {
      shm: str('Shared memory', { default: DEFAULT_TARGET_SHM, values: 'shm' }),
      index: str('Index in the active table (<= N)'),
    },
    run(args, { store, out }) {
      const shm = optString(args, 'shm', DEFAULT_TARGET_SHM);
      withTable(store, shm, true, (t) => {
        if (args.index !== undefined) {
          t.deactivateIndex(slotIndex(String(args.index), t));
          return;
        }
        t.deactivate(args._.map(atoi));
      });
    },
  },
];
