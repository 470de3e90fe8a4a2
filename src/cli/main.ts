/**
 * `nfqlb <command> [--opt=value ...] [args]`: dispatch, option parsing and the
 * one place where errors become messages and exit codes. Messages for bad
 * command lines are nfqlb's (`Unknown command [X]`, `Missing option [--name]`).
 */
import yargs from 'yargs';
import { NfqlbError, UsageError } from '../errors';
import { defaultContext, type NfqlbCommand, type ParsedArgs } from './command';
import { allCommands } from './commands';

// Close to getopt_long_only: last value wins, `-opt=value` works, nothing is
// guessed (numbers stay strings until a command validates them).
const parserConfiguration = {
  'camel-case-expansion': false,
  'dot-notation': false,
  'parse-numbers': false,
  'parse-positional-numbers': false,
  'boolean-negation': false,
  'short-option-groups': false,
  'duplicate-arguments-array': false,
  'greedy-arrays': false,
  'strip-aliased': true,
  'unknown-options-as-args': false,
} as const;

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

/**
 * Maps yargs' complaints onto nfqlb's wording. getopt prefixes its own
 * messages with argv[0], which in nfqlb is the command name.
 */
function translateParseError(cmd: string, msg: string): string {
  let m = /^Missing required argument[s]?: (.*)$/.exec(msg);
  if (m) return m[1].split(', ').map((o) => `Missing option [--${o}]`).join('\n');
  m = /^Unknown arguments?: (.*)$/.exec(msg);
  if (m) return m[1].split(', ').map((o) => `${cmd}: unrecognized option '--${o}'`).join('\n');
  m = /^Not enough arguments following: (.*)$/.exec(msg);
  if (m) return `${cmd}: option '--${m[1]}' requires an argument`;
  return msg;
}

/**
 * getopt refuses `--opt` without a value for an option that takes one (yargs
 * would quietly give it ""); `--opt=` is an empty value and is fine.
 */
function missingValue(cmd: NfqlbCommand, argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const m = /^--?([^=]+)$/.exec(argv[i]);
    if (m === null || argv[i] === '--') continue;
    const spec = cmd.options[m[1]];
    if (spec === undefined || spec.type === 'boolean') continue;
    const next = argv[i + 1];
    if (next === undefined) return m[1];
    i++; // `--opt value`: the next word is the value, whatever it looks like.
  }
  return undefined;
}

/** The command called `name`, if there is one. */
export function findCommand(name: string): NfqlbCommand | undefined {
  return allCommands().find((c) => c.name === name);
}

/**
 * Parses the options of one command line (without the command name) as the
 * CLI does; throws UsageError with nfqlb's wording.
 */
export function parseCommandLine(cmd: NfqlbCommand, argv: string[]): ParsedArgs {
  let failure: string | undefined;
  const parser = yargs(argv)
    .parserConfiguration(parserConfiguration)
    .options(cmd.options)
    .strictOptions(true)
    .help(false)
    .version(false)
    .exitProcess(false)
    .fail((msg, err) => {
      failure = msg ?? err?.message ?? 'invalid command line';
    });
  const parsed = parser.parseSync() as unknown as ParsedArgs;
  if (failure !== undefined) throw new UsageError(translateParseError(cmd.name, failure));
  const bare = missingValue(cmd, argv);
  if (bare !== undefined) throw new UsageError(`${cmd.name}: option '--${bare}' requires an argument`);
  const args: ParsedArgs = { _: parsed._.map(String) };
  for (const name of Object.keys(cmd.options)) {
    const value = parsed[name];
    if (Array.isArray(value)) args[name] = value[value.length - 1];
    else if (value !== undefined) args[name] = value;
  }
  return args;
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
    const rc = await cmd.run(parseCommandLine(cmd, rest), { ...defaultContext, parser: { find: findCommand, parse: parseCommandLine } });
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
