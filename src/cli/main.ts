/**
 * `nfqlb <command> [--opt=value ...] [args]`: dispatch, option parsing and the
 * one place where errors become messages and exit codes. Messages for bad
 * command lines are nfqlb's (`Unknown command [X]`, `Missing option [--name]`).
 */
import { NfqlbError, UsageError } from '../errors';
import { defaultContext, type NfqlbCommand } from './command';
import { allCommands } from './commands';
import { parseCommandLine } from './parse';

function usage(commands: NfqlbCommand[]): string {
  return `Usage: nfqlb <command> [opt...]\nCommands:\n${commands.map((c) => `  ${c.name}\n`).join('')}`;
}

function commandHelp(cmd: NfqlbCommand): string {
  const lines = [`${cmd.name} [options]`, `  ${cmd.describe}`];
  for (const [name, spec] of Object.entries(cmd.options)) {
    const required = spec.demandOption ? ' (required)' : '';
    const dflt = spec.default !== undefined && spec.type !== 'boolean' ? ` (default ${String(spec.default)})` : '';
    lines.push(`  --${name}${spec.type === 'boolean' ? '' : '='} ${spec.describe ?? ''}${dflt}${required}`);
  }
  return lines.join('\n') + '\n';
}

/** The command called `name`, if there is one. */
export function findCommand(name: string): NfqlbCommand | undefined {
  return allCommands().find((c) => c.name === name);
}

/** Runs one command line (without the program name) and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const commands = allCommands();
  if (argv.length === 0 || argv[0] === '-h' || argv[0] === '--help') {
    process.stdout.write(usage(commands));
    return 0;
  }
  const cmd = commands.find((c) => c.name === argv[0]);
  if (cmd === undefined) {
    process.stderr.write(`Unknown command [${argv[0]}]\n`);
    return 1;
  }
  const rest = argv.slice(1);
  if (rest.includes('--help') || rest.includes('-help')) {
    process.stdout.write(commandHelp(cmd));
    return 0;
  }
  try {
    const rc = await cmd.run(parseCommandLine(cmd, rest), defaultContext);
    return typeof rc === 'number' ? rc : 0;
  } catch (err) {
    if (err instanceof UsageError) {
      if (err.message !== '') process.stderr.write(`${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof NfqlbError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
