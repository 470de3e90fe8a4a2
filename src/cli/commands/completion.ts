/**
 * `nfqlb completion bash`: prints the bash completion script, the same text
 * as contrib/bash-completion/nfqlb (made from the option table, so it
 * completes exactly what the CLI parses). For an installed package or the
 * image: `nfqlb completion bash > /usr/share/bash-completion/completions/nfqlb`.
 */
import { UsageError } from '../../base/errors';
import { PACKAGE_VERSION } from '../../base/version';
import { out, type NfqlbCommand } from '../command';
import { bashCompletion } from '../reference/bash';
import { referenceCommands } from '../reference/table';

export const completionCommands: NfqlbCommand[] = [
  {
    name: 'completion',
    describe: 'Print the shell completion script (bash) of nfqlb-ts',
    usage: 'completion bash\n  Print the bash completion script; install it as /usr/share/bash-completion/completions/nfqlb',
    options: {},
    run(args, { commands }) {
      const shell = args._[0] ?? 'bash';
      if (shell !== 'bash' || args._.length > 1) throw new UsageError(`Unknown shell [${args._.join(' ')}]: only bash is supported (nfqlb completion bash)`);
      out(bashCompletion(referenceCommands(commands()), PACKAGE_VERSION));
    },
  },
];
