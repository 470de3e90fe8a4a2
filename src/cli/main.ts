/**
 * `nfqlb <command> [--opt=value ...] [args]`: dispatch, option parsing and the
 * one place where errors become messages and exit codes. Messages for bad
 * command lines are nfqlb's (`Unknown command [X]`, `Missing option [--name]`).
 */
import { NfqlbError, UsageError } from '../base/errors';
import { defaultContext, defaultText, EXTENSION, helpOptions, OPTIONS_ENV, setOwnProcess, type NfqlbCommand, type ParsedArgs } from './command';
import { inListOrder } from './commandorder';
import { allCommands, commandNames, loadCommand } from './commands';
import { getoptLongOnly, type LongOption } from './getopt';
import { writeErr, writeOut } from './output';

/**
 * nfqlb prints its argv[0] here; a Node script cannot see how it was called
 * (process.argv[1] is always an absolute path), so this says `nfqlb`, which
 * is what nfqlb prints when run from PATH.
 */
function usage(names: string[]): string {
  return `Usage: nfqlb <command> [opt...]\nCommands:\n${inListOrder(names).map((name) => `  ${name}\n`).join('')}`;
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
 * last space for required ones. Options nfqlb lacks come last. Then the
 * command's own tail (the daemons'), or one line with the defaults, which
 * nfqlb's texts mostly leave out.
 */
export function commandHelp(cmd: NfqlbCommand): string {
  let text = `${cmd.usage ?? `${cmd.name} [options]\n  ${cmd.describe}`}\n`;
  const ordered = helpOptions(cmd);
  for (const [name, spec] of ordered) {
    // nfqlb writes '=' after every option, its flags too; an option of this project's own shows
    // whether it takes a value (--fail_open=1 is refused).
    const eq = spec.group !== undefined && spec.type === 'boolean' ? '' : '=';
    text += `  --${name}${eq} ${spec.describe ?? ''} ${spec.demandOption ? '(required)' : ''}\n`;
  }
  if (cmd.helpTail !== undefined) return text + cmd.helpTail();
  const defaults = ordered.flatMap(([name, spec]) => {
    const d = defaultText(spec);
    return d === undefined ? [] : [`--${name}=${d}`];
  });
  return defaults.length === 0 ? text : `${text}Defaults: ${defaults.join(' ')}\n`;
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
  const text = env[OPTIONS_ENV];
  if (cmd.envOptions === true && text !== undefined && text.trim() !== '') {
    const fromEnv = parseEnvOptions(cmd, text);
    if (typeof fromEnv === 'string') return { kind: 'error', message: fromEnv };
    for (const [name, value] of fromEnv) {
      if (args[name] !== undefined) continue;
      args.fromEnv ??= {};
      args.fromEnv[name] = cmd.options[name].default;
      args[name] = value;
    }
  }
  const missing: string[] = [];
  for (const [name, spec] of Object.entries(cmd.options)) {
    if (args[name] !== undefined) continue;
    if (spec.demandOption) missing.push(`Missing option [--${name}]`);
    else if (spec.default !== undefined) args[name] = spec.default;
  }
  if (missing.length > 0) return { kind: 'error', message: missing.join('\n') };
  return { kind: 'args', args };
}

/**
 * The options in $NFQLB_OPTIONS: words separated by white space, each an
 * option this project adds (`--name=value`, `--name value`, `--flag`; no
 * quoting, so no value with a space), parsed as the command line is. Only
 * extension options: nfqlb's own belong on the command line, where whoever
 * wrote it can see them. Returns the options in order, or the error as one
 * line that names the variable.
 */
export function parseEnvOptions(cmd: NfqlbCommand, text: string): Array<[string, string | true]> | string {
  const words = text.trim().split(/\s+/);
  const extensions = Object.entries(cmd.options).filter(([, spec]) => spec.group === EXTENSION || spec.hidden === true);
  const allowed = extensions.filter(([, spec]) => spec.hidden !== true).map(([name]) => `--${name}`).join(', ');
  for (const word of words) {
    if (word[0] !== '-' || word === '-') continue;
    const name = word.replace(/^--?/, '').split('=')[0];
    const own = Object.entries(cmd.options).filter(([n, spec]) => spec.group !== EXTENSION && spec.hidden !== true && (n === name || n.startsWith(name)));
    if (name !== '' && own.length > 0 && !extensions.some(([n]) => n === name || n.startsWith(name))) {
      return `${OPTIONS_ENV}: ${word} is one of nfqlb's own options of ${cmd.name}; only the options nfqlb-ts adds may be given here (${allowed}): put it on the command line`;
    }
  }
  const table: LongOption[] = extensions.map(([name, spec]) => ({ name, hasArg: spec.type !== 'boolean' }));
  const r = getoptLongOnly(OPTIONS_ENV, words, table);
  if (r.error !== undefined) return `${r.error} (${OPTIONS_ENV} may hold only ${allowed})`;
  if (r.positional.length > 0) return `${OPTIONS_ENV}: '${r.positional[0]}' is not an option; use --name=value words separated by spaces (${allowed})`;
  return r.found.map((f) => [table[f.index].name, f.value ?? true]);
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

/**
 * Runs one command line (without the program name) and returns the exit
 * code. `ownProcess`: this process is the command line (bin/nfqlb), so a
 * command may block it (command.ts setOwnProcess).
 */
export async function main(argv: string[], opts: { ownProcess?: boolean } = {}): Promise<number> {
  if (opts.ownProcess === true) setOwnProcess();
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
    const rc = await cmd.run(line.args, defaultContext({ find: findCommand, parse: parseCommandLine }, allCommands));
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
