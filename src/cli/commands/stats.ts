/** `nfqlb stats`: the fragment-table statistics a running daemon keeps in shared memory. */
import { NfqlbError, UsageError } from '../../base/errors';
import { FRAG_STATS_SHM, formatFragStats, readFragStats } from '../../fragments/stats';
import { out, type NfqlbCommand } from '../command';

export const statsCommands: NfqlbCommand[] = [
  {
    name: 'stats',
    describe: 'Show frag table stats',
    usage: 'stats [options]\n  Show frag table stats',
    options: {
      ft_shm: { type: 'string', describe: 'Frag table; shared memory stats', default: FRAG_STATS_SHM, values: 'shm' },
    },
    run(args) {
      const name = String(args.ft_shm);
      try {
        out(formatFragStats(readFragStats(name)));
      } catch (err) {
        // nfqlb's words for any object it cannot map; a file too short to be the stats gets ours.
        if (err instanceof NfqlbError && err.code !== 'NFQLB_ERR_SHM_FORMAT') throw new UsageError(`FAILED mapSharedData: ${name}`, 1, 'NFQLB_ERR_USAGE', { cause: err });
        throw err;
      }
    },
  },
];
