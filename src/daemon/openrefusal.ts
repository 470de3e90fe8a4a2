/**
 * Opens the daemon refuses on purpose, told apart from plain failures: a name
 * in /dev/shm (or the flows file) that is not a regular file
 * (src/base/regularfile.ts), or a table that belongs to a user who is neither
 * the daemon's nor root. These are something planted under a name, counted
 * (nfqlb_open_refused_total, nfqlb_table_faults_total), not just an object
 * that is not there yet.
 */
import { NfqlbError } from '../base/errors';

export type OpenRefusal = 'not_file' | 'not_owner';

/** Why `err` (or an error it wraps) is a refused open; null for any other failure. */
export function openRefusal(err: unknown): OpenRefusal | null {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (!(e instanceof NfqlbError)) continue;
    if (e.code === 'NFQLB_ERR_NOT_FILE') return 'not_file';
    if (e.code === 'NFQLB_ERR_SHM_OWNER') return 'not_owner';
  }
  return null;
}
