/**
 * nfqlb(1), the man page, made from the option table (table.ts): every
 * command with its synopsis and options, their defaults as the code takes
 * them, the environment, files and exit codes.
 */
import { GENERATED, type ReferenceCommand, type ReferenceOption } from './table';

/** Text for roff: backslashes escaped, minus signs as \-, a line never starting with a control character. */
function roff(text: string): string {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

function optionEntry(o: ReferenceOption): string {
  const head = o.takesValue ? `.BI \\-\\-${roff(o.name)}= VALUE` : `.B \\-\\-${roff(o.name)}`;
  const notes = [o.required ? 'Required.' : '', o.default !== undefined ? `Default: ${o.default}.` : '', o.extension ? 'Not in nfqlb.' : ''].filter((n) => n !== '');
  // nfqlb's help texts end without a full stop.
  const help = o.help === '' || /[.!)]$/.test(o.help) ? o.help : `${o.help}.`;
  return `.TP\n${head}\n${roff([help, ...notes].filter((t) => t !== '').join(' '))}`;
}

function commandSection(c: ReferenceCommand): string {
  const lines = [`.SS ${roff(c.name)}`, roff(c.describe + (c.extension ? ' (not in nfqlb)' : '')), '.PP', '.nf', ...c.synopsis.map((s) => `nfqlb ${roff(s)}`), '.fi'];
  if (c.envOptions) lines.push('.PP', `The options not in nfqlb may also be given in \\fBNFQLB_OPTIONS\\fR (see ENVIRONMENT).`);
  return [...lines, ...c.options.map(optionEntry)].join('\n');
}

/** The man page for `commands` (referenceCommands()), of nfqlb-ts `version`. */
export function manPage(commands: readonly ReferenceCommand[], version: string): string {
  return `.\\" ${GENERATED}
.TH NFQLB 1 "" "nfqlb\\-ts ${roff(version)}" "User Commands"
.SH NAME
nfqlb \\- Maglev load balancer over Linux NFQUEUE, compatible with nfqlb 1.2.0 (nfqlb\\-ts)
.SH SYNOPSIS
.B nfqlb
.I command
.RI [ options ]
.RI [ arguments ]
.br
.B nfqlb
.I command
.B \\-\\-help
.SH DESCRIPTION
nftables or iptables send the packets for the virtual addresses to NFQUEUE queues; the daemon
(\\fBflowlb\\fR or \\fBlb\\fR) picks a target per packet with Maglev hashing over a table in
/dev/shm and accepts the packet with the target's fwmark, which policy routing forwards.
The other commands make and change the tables (\\fBinit\\fR, \\fBactivate\\fR, ...), set the
flows of a running \\fBflowlb\\fR over its control socket (\\fBflow\\-set\\fR, ...), and trace it.
Command lines, tables, the control socket and the texts printed are those of nfqlb 1.2.0.
.PP
Options are long options, \\fB\\-\\-name=value\\fR or \\fB\\-\\-name value\\fR, also with one dash
(\\fB\\-name\\fR), and may be shortened to any unambiguous prefix; arguments may come between
them, and \\fB\\-\\-\\fR ends them (glibc's getopt_long_only, as nfqlb).
A flag takes no value. An error is one line on standard error, in nfqlb's words.
.SH COMMANDS
${commands.map(commandSection).join('\n')}
.SH ENVIRONMENT
.TP
.B NFQLB_FLOW_ADDRESS
The daemon's control socket, for \\fBflowlb\\fR and the flow commands: \\fBunix:NAME\\fR (the abstract
unix socket \\e0NAME) or \\fBtcp:HOST:PORT\\fR. Default: unix:nfqlb.
.TP
.B NFQLB_OPTIONS
For \\fBflowlb\\fR and \\fBlb\\fR: the options nfqlb does not have, as words separated by spaces
(\\fB\\-\\-metrics_address=192.0.2.10:9657 \\-\\-flows_file=/var/lib/nfqlb/flows\\fR), for a command line
that cannot be changed (Meridio's). The command line wins; nfqlb's own options are refused here.
.TP
.B POSIXLY_CORRECT
Options end at the first argument that is not one, as with getopt.
.TP
.B NFQLB_ALLOW_INSPECTOR
Set to 1 to let a daemon start whose Node.js inspector is open (debugging); otherwise it refuses to.
.SH FILES
.TP
.I /dev/shm/NAME
The Maglev tables (\\fBinit \\-\\-shm=NAME\\fR; mode 0600), in nfqlb's layout.
.TP
.I /dev/shm/nfqlb\\-trace
The log level and trace mask a daemon reads (\\fBloglevel\\fR, \\fBtrace\\fR).
.TP
.I /dev/shm/ftshm
The fragment table statistics (\\fB\\-\\-ft_shm\\fR; \\fBstats\\fR).
.TP
.I /usr/share/bash\\-completion/completions/nfqlb
The bash completion (\\fBnfqlb completion bash\\fR prints it).
.SH EXIT STATUS
0 on success; 1 for a bad command line or a failure in nfqlb's words; 255 when the daemon
answers a flow command with FAIL or closes the connection without a reply; 70 when a daemon
ends on an internal error or a packet thread dies; 71 when a daemon's stop does not finish in time.
.SH SEE ALSO
.BR nft (8),
.BR iptables\\-extensions (8),
.BR ip\\-rule (8);
docs/ in the nfqlb\\-ts repository (options, metrics, operations, differences from nfqlb).
`;
}
