import { EXTENSION, out, type NfqlbCommand } from '../command';
import { NFQLB_COMPAT_VERSION, PACKAGE_VERSION } from '../../base/version';

export const versionCommands: NfqlbCommand[] = [
  {
    name: 'version',
    describe: 'Print version',
    usage: 'version\n  Print version',
    options: {
      package: { type: 'boolean', group: EXTENSION, describe: 'Print the version of nfqlb-ts instead of the nfqlb release it is compatible with' },
    },
    run(args) {
      // Only the version on stdout, as nfqlb: scripts compare it.
      out(args.package === true ? `nfqlb-ts ${PACKAGE_VERSION}\n` : `${NFQLB_COMPAT_VERSION}\n`);
    },
  },
];
