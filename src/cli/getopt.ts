/**
 * glibc's getopt_long_only() as nfqlb calls it (optstring "", every option
 * long, `--name` and `-name`, unambiguous prefixes accepted, argv permuted so
 * that positional arguments may come anywhere, `--` ends the options,
 * POSIXLY_CORRECT stops at the first positional argument), with its messages
 * word for word. nfqlb runs without setlocale(), so glibc prints them in
 * English whatever LANG says; these texts do the same.
 *
 * Why not yargs' parser: yargs translates its messages by LANG/LC_ALL (a
 * German locale gets `Fehlende Argumente: name, target`), guesses
 * (`--no-x`, numbers, arrays), takes `--flag=1` for a flag, and knows neither
 * prefixes nor `-name`. The commands still declare their options as yargs
 * Options objects (command.ts); only the parsing is done here.
 */

/** One entry of the option table, in table order (the order of messages and of `Missing option`). */
export interface LongOption {
  name: string;
  /** required_argument (true) or no_argument (false). */
  hasArg: boolean;
  /**
   * An option nfqlb does not have. Abbreviations resolve among nfqlb's own
   * options first, so every command line nfqlb accepts means the same here;
   * an extension is matched by a prefix only when no nfqlb option matches.
   */
  extension?: boolean;
}

/** One option found, in command-line order. */
export interface FoundOption {
  /** Index in the table. */
  index: number;
  /** The argument of an option that takes one. */
  value?: string;
}

export interface GetoptResult {
  /** The options found before parsing ended, in command-line order. */
  found: FoundOption[];
  /** Positional arguments in their order (after the options, as the permuted argv has them). */
  positional: string[];
  /**
   * getopt's message (without newline) for the element where parsing stopped;
   * `found` holds what came before it. nfqlb stops at the first error.
   */
  error?: string;
}

/** True for argv elements that are positional arguments: everything but `-x...` (a lone `-` is positional). */
function isPositional(arg: string): boolean {
  return arg[0] !== '-' || arg.length === 1;
}

/**
 * Parses `argv` (the words after the command name) as nfqlb's
 * parseOptions() sees them through getopt_long_only. `prog` is argv[0] as
 * nfqlb passes it: the command name. `posixlyCorrect`: the environment has
 * POSIXLY_CORRECT (no permutation).
 */
export function getoptLongOnly(prog: string, argv: readonly string[], table: readonly LongOption[], posixlyCorrect = false): GetoptResult {
  const found: FoundOption[] = [];
  const positional: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i];
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (isPositional(arg)) {
      if (posixlyCorrect) {
        positional.push(...argv.slice(i));
        break;
      }
      positional.push(arg);
      i++;
      continue;
    }
    const prefix = arg[1] === '-' ? '--' : '-';
    const nextchar = arg.slice(prefix.length);
    const eq = nextchar.indexOf('=');
    const name = eq < 0 ? nextchar : nextchar.slice(0, eq);
    const m = lookup(name, table);
    if (m.ambiguous !== undefined) {
      const list = m.ambiguous.map((k) => ` '${prefix}${table[k].name}'`).join('');
      return { found, positional, error: `${prog}: option '${prefix}${nextchar}' is ambiguous; possibilities:${list}` };
    }
    if (m.index === undefined) {
      return { found, positional, error: `${prog}: unrecognized option '${prefix}${nextchar}'` };
    }
    const opt = table[m.index];
    i++;
    if (eq >= 0) {
      if (!opt.hasArg) return { found, positional, error: `${prog}: option '${prefix}${opt.name}' doesn't allow an argument` };
      found.push({ index: m.index, value: nextchar.slice(eq + 1) });
    } else if (opt.hasArg) {
      if (i >= argv.length) return { found, positional, error: `${prog}: option '${prefix}${opt.name}' requires an argument` };
      found.push({ index: m.index, value: argv[i++] });
    } else {
      found.push({ index: m.index });
    }
  }
  return { found, positional };
}

/**
 * process_long_option's search: an exact name wins; otherwise the options the
 * name is a prefix of (in getopt_long_only any two of them are ambiguous,
 * even ones that would do the same). nfqlb's options are searched before
 * extensions.
 */
function lookup(name: string, table: readonly LongOption[]): { index?: number; ambiguous?: number[] } {
  const exact = table.findIndex((o) => o.name === name);
  if (exact >= 0) return { index: exact };
  for (const extension of [false, true]) {
    const matches: number[] = [];
    table.forEach((o, k) => {
      if ((o.extension === true) === extension && o.name.startsWith(name)) matches.push(k);
    });
    if (matches.length === 1) return { index: matches[0] };
    if (matches.length > 1) return { ambiguous: matches };
  }
  return {};
}
