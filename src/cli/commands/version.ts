import { out, type NfqlbCommand } from '../command';
import { NFQLB_COMPAT_VERSION, PACKAGE_VERSION } from '../../version';

export const versionCommands: NfqlbCommand[] = [
  {
    name: 'version',
    describe: 'Print the version',
    options: {},
    run() {
      out(`${NFQLB_COMPAT_VERSION}\n`);
      process.stderr.write(`nfqlb-ts ${PACKAGE_VERSION}\n`);
    },
  },
];
