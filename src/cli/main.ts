/**
 * `nfqlb <command> [--opt=value ...] [args]`: dispatch, option parsing and the
 * one place where errors become messages and exit codes. Messages for bad
 * command lines are nfqlb's (`Unknown command [X]`, `Missing option [--name]`).
 */
import { NfqlbError, UsageError } from '../errors';
import { defaultContext, EXTENSION, type NfqlbCommand, type ParsedArgs } from './command';
import { commandNames, loadCommand } from './commands';
import { getoptLongOnly, type LongOption } from './getopt';
import { writeErr, writeOut } from './output';

/** nfqlb's command list, in the order it registers (and lists) them; commands it lacks follow. */
const NFQLB_COMMAND_ORDER = [
  'activate', 'deactivate', 'version', 'flow-set', 'flow-delete', 'flow-list', 'flow-list-names', 'flowlb', 'fwmark', 'lb',
  'init', 'delete', 'show', 'stats', 'primebelow', 'trace', 'loglevel', 'trace-flow-set', 'trace-flow-delete', 'trace-flow-list',
];

/**
 * nfqlb prints its argv[0] here; a Node script cannot see how it was called
 * (process.argv[1] is always an absolute path), so this says `nfqlb`, which
 * is what nfqlb prints when run from PATH.
 */
function usage(names: string[]): string {
  const rank = (name: string): number => {
    const i = NFQLB_COMMAND_ORDER.indexOf(name);
    return i < 0 ? NFQLB_COMMAND_ORDER.length : i;
  };
  const sorted = names.slice().sort((a, b) => rank(a) - rank(b));
  return `Usage: nfqlb <command> [opt...]\nCommands:\n${sorted.map((name) => `  ${name}\n`).join('')}`;
}

/** getopt's table for a command: nfqlb puts its "help" flag first, then the command's options in order. */
function optionTable(cmd: NfqlbCommand): LongOption[] {
  const table: LongOption[] = [{ name: 'help', hasArg: false }];
  for (const [name, spec] of Object.entries(cmd.options)) {
    table.push({ name, hasArg: spec.type !== 'boolean', extension: spec.group === EXTENSION || spec.hidden === true });
  }
  return table;
}

/**
 * `nfqlb <command> -h`, as nfqlb's printUsage: the usage head, then
 * `  --NAME= HELP ` per option (flags too), `(required)` in place of the
 * last space for required ones. Options nfqlb lacks come last.
 */
export function commandHelp(cmd: NfqlbCommand): string {
  let text = `${cmd.usage ?? `${cmd.name} [options]\n  ${cmd.describe}`}\n`;
  const entries = Object.entries(cmd.options).filter(([, spec]) => spec.hidden !== true);
  const ordered = [...entries.filter(([, s]) => s.group !== EXTENSION), ...entries.filter(([, s]) => s.group === EXTENSION)];
  for (const [name, spec] of ordered) {
    text += `  --${name}= ${spec.describe ?? ''} ${spec.demandOption ? '(required)' : ''}\n`;
  }
  return text;
}

/** What a command line asks for: the options, nfqlb's help, or an error (nfqlb's words, exit 1). */
export type CommandLine = { kind: 'args'; args: ParsedArgs } | { kind: 'help'; text: string } | { kind: 'error'; message: string };

/**
 * nfqlb's parseOptions(): getopt_long_only over the command's options; the
 * help option prints the help when it is reached (errors before it win,
 * anything after it is not looked at); the last of a repeated option wins;
 * then every missing required option is named. Options not given get their
 * declared default; flags given are `true`.
 */
export function parseOptions(cmd: NfqlbCommand, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): CommandLine {
  const table = optionTable(cmd);
  const r = getoptLongOnly(cmd.name, argv, table, env.POSIXLY_CORRECT !== undefined);
  const args: ParsedArgs = { _: r.positional };
  for (const f of r.found) {
    if (f.index === 0) return { kind: 'help', text: commandHelp(cmd) };
    args[table[f.index].name] = f.value ?? true;
  }
  if (r.error !== undefined) return { kind: 'error', message: r.error };
  const missing: string[] = [];
  for (const [name, spec] of Object.entries(cmd.options)) {
    if (args[name] !== undefined) continue;
    if (spec.demandOption) missing.push(`Missing option [--${name}]`);
    else if (spec.default !== undefined) args[name] = spec.default;
  }
  if (missing.length > 0) return { kind: 'error', message: missing.join('\n') };
  return { kind: 'args', args };
}

/** The command called `name`, if there is one. */
export function findCommand(name: string): NfqlbCommand | undefined {
  return loadCommand(name);
}

/**
 * Parses the options of one command line (without the command name) as the
 * CLI does; throws UsageError with nfqlb's wording (also for a help request,
 * which has no place where this is used: replayed configuration lines).
 */
export function parseCommandLine(cmd: NfqlbCommand, argv: string[]): ParsedArgs {
  const line = parseOptions(cmd, argv);
  if (line.kind === 'error') throw new UsageError(line.message);
  if (line.kind === 'help') throw new UsageError(`${cmd.name}: -help is not a command to run`);
  return line.args;
}

/** Runs one command line (without the program name) and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '-h' || argv[0] === '--help') {
    writeOut(usage(commandNames()));
    return 0;
  }
  const cmd = loadCommand(argv[0]);
  if (cmd === undefined) {
    writeErr(`Unknown command [${argv[0]}]\n`);
    return 1;
  }
  const line = parseOptions(cmd, argv.slice(1));
  if (line.kind === 'help') {
    writeOut(line.text);
    return 0;
  }
  if (line.kind === 'error') {
    writeErr(`${line.message}\n`);
    return 1;
  }
  try {
    const rc = await cmd.run(line.args, defaultContext({ find: findCommand, parse: parseCommandLine }));
    return typeof rc === 'number' ? rc : 0;
  } catch (err) {
    if (err instanceof UsageError) {
      if (err.message !== '') writeErr(`${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof NfqlbError) {
      writeErr(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
