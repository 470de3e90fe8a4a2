/** docs/options.md, the options reference, made from the option table (table.ts). */
import { GENERATED, type ReferenceCommand, type ReferenceOption } from './table';

/** Text for a Markdown table cell. */
function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

function row(o: ReferenceOption): string {
  const option = `\`--${o.name}${o.takesValue ? '=' : ''}\``;
  const dflt = o.required ? 'required' : o.default !== undefined ? `\`${o.default}\`` : '';
  return `| ${option} | ${cell(dflt)} | ${cell(o.help)}${o.extension ? ' *(nfqlb-ts)*' : ''} |`;
}

function section(c: ReferenceCommand): string {
  const lines = [`## ${c.name}`, '', `${c.describe}${c.extension ? ' *(nfqlb-ts only)*' : ''}`, '', '```', ...c.synopsis.map((s) => `nfqlb ${s}`), '```'];
  if (c.options.length > 0) lines.push('', '| option | default | what it is |', '|---|---|---|', ...c.options.map(row));
  if (c.envOptions) lines.push('', 'The options marked *(nfqlb-ts)* may also be given in `NFQLB_OPTIONS` ([container.md](container.md#options-through-the-environment-nfqlb_options)).');
  return lines.join('\n');
}

/** The options reference for `commands` (referenceCommands()), of nfqlb-ts `version`. */
export function optionsReference(commands: readonly ReferenceCommand[], version: string): string {
  return `<!-- ${GENERATED} -->
# Command-line reference (nfqlb-ts ${version})

Every command of \`nfqlb\` and its options, with the defaults the code uses
(nfqlb's help texts leave most of them out, and say \`1024\` for
\`--qlength\`, whose default here is longer: [differences](differences.md)). Options are written \`--name=value\` or
\`--name value\`, one or two dashes, and may be shortened to any unambiguous
prefix, as with nfqlb. *(nfqlb-ts)* marks what nfqlb does not have. The same
table makes \`nfqlb <command> --help\`, the man page ([nfqlb.1](nfqlb.1):
\`man ./docs/nfqlb.1\`) and the bash completion
([contrib/bash-completion/nfqlb](../contrib/bash-completion/nfqlb)).

Commands: ${commands.map((c) => `[${c.name}](#${c.name})`).join(', ')}.

${commands.map(section).join('\n\n')}
`;
}
