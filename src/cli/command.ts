/**
 * The shape of one `nfqlb` command. Each file in cli/commands/ exports a list of
 * these; options are declared with their help text next to them, as nfqlb
 * keeps them. Declaration order is nfqlb's table order: it decides the
 * order of `-h` lines, of `Missing option` lines and of the possibilities
 * getopt lists for an ambiguous prefix (getopt.ts parses). The same table
 * makes the help, the shell completion, the man page and docs/options.md
 * (cli/reference/), so none of them can say another default.
 */
import type { CommandParser } from '../replay/config';
import type { TableStore } from '../tables/tablestore';
import { writeOut } from './output';

/** One option of a command (the field names are yargs', which declared them first). */
export interface Options {
  /** 'boolean': a flag, no argument; 'string': takes one. */
  type: 'string' | 'boolean';
  /** Its help text (nfqlb's words for nfqlb's options). */
  describe?: string;
  /** Its value when absent. */
  default?: string;
  /**
   * The default in words, where the code computes it instead of taking
   * `default` (e.g. `qlength*mtu/2`); help and reference show this.
   */
  defaultDescription?: string;
  /** Required. */
  demandOption?: boolean;
  /** EXTENSION: an option nfqlb does not have. */
  group?: string;
  /** Kept out of the help, the completion and the reference (options for tests); also an extension. */
  hidden?: boolean;
  /**
   * What its value is, for the shell completion: `shm` a name in /dev/shm,
   * `file` a path, `flow`/`trace-flow` a name the daemon lists, or the words it may be.
   */
  values?: 'shm' | 'file' | 'flow' | 'trace-flow' | { words: readonly string[]; list?: boolean };
}

/** The default an option's help states: its description in words, else its value; undefined for none. */
export function defaultText(spec: Options): string | undefined {
  return spec.defaultDescription ?? spec.default;
}

/** The options `-h` lists, in its order: nfqlb's, then those nfqlb lacks; hidden ones left out. */
export function helpOptions(cmd: Pick<NfqlbCommand, 'options'>): Array<[string, Options]> {
  const entries = Object.entries(cmd.options).filter(([, spec]) => spec.hidden !== true);
  return [...entries.filter(([, s]) => s.group !== EXTENSION), ...entries.filter(([, s]) => s.group === EXTENSION)];
}

export interface ParsedArgs {
  /** Positional arguments after the command name. */
  _: string[];
  /**
   * The options taken from $NFQLB_OPTIONS (not on the command line), each
   * with the value it would have had without it (its default, or undefined).
   */
  fromEnv?: Record<string, unknown>;
  [option: string]: unknown;
}

/**
 * The environment variable that carries options this project adds to a
 * daemon's command line (`--metrics_address=... --flows_file=...`), for
 * those who cannot change the command line: Meridio's is fixed in its code,
 * and a pod spec can only set the environment. Not NODE_*: the image's
 * launcher drops those. Options on the command line win.
 */
export const OPTIONS_ENV = 'NFQLB_OPTIONS';

/** `group` of the options this project adds to nfqlb's: listed after nfqlb's in the help, matched by prefix last. */
export const EXTENSION = 'nfqlb-ts';

export interface NfqlbCommand {
  name: string;
  /** One line saying what the command does. */
  describe: string;
  /**
   * The head of `nfqlb <command> -h` before the option lines, as nfqlb
   * prints it (its "help" option text). Default: `<name> [options]\n  <describe>`.
   */
  usage?: string;
  options: Record<string, Options>;
  /** Lines the help prints after the option lines (the daemons: their real defaults, $NFQLB_OPTIONS). */
  helpTail?: () => string;
  /** True: the EXTENSION options may also come from $NFQLB_OPTIONS (OPTIONS_ENV). */
  envOptions?: boolean;
  /** Returns the exit code (0 when it returns nothing). Throw UsageError for user mistakes. */
  run(args: ParsedArgs, ctx: CommandContext): number | void | Promise<number | void>;
}

/** What a command works on: /dev/shm and stdout normally; memory and nothing for a replayed config. */
export interface CommandContext {
  store: TableStore;
  out(text: string): void;
  /**
   * The command-line parser, for commands that read command lines themselves
   * (replay --config). main.ts hands it in: a command importing main.ts would
   * make an import circle (main.ts imports every command).
   */
  parser: CommandParser;
  /** Every command (loads every command's file: for `nfqlb completion`, not for a command line's start). */
  commands(): NfqlbCommand[];
}

let ownProcess = false;

/**
 * Says that this process is the command line (bin/nfqlb), not a program
 * that calls main() (tests): only then may a command block the event loop,
 * as src/cli/client.ts does for a control request.
 */
export function setOwnProcess(): void {
  ownProcess = true;
}

/** True after setOwnProcess(). */
export function isOwnProcess(): boolean {
  return ownProcess;
}

/** Writes text to stdout; kept in one place so commands never call console.log. */
export function out(text: string): void {
  writeOut(text);
}

/**
 * /dev/shm and stdout. The table store (and with it the shm wrapper) is loaded
 * when a command first uses it: flow and version commands never do.
 */
export function defaultContext(parser: CommandParser, commands: () => NfqlbCommand[]): CommandContext {
  return {
    get store(): TableStore {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use (start-up cost)
      return (require('../tables/tablestore') as typeof import('../tables/tablestore')).shmTableStore;
    },
    out,
    parser,
    commands,
  };
}
