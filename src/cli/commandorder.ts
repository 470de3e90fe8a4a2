/**
 * Which commands are nfqlb's, and the order `nfqlb -h` lists them in: for the
 * usage text and for what is generated from the option table (cli/reference/).
 */

/** nfqlb's command list, in the order it registers (and lists) them; commands it lacks follow. */
const NFQLB_COMMAND_ORDER: readonly string[] = [
  'activate', 'deactivate', 'version', 'flow-set', 'flow-delete', 'flow-list', 'flow-list-names', 'flowlb', 'fwmark', 'lb',
  'init', 'delete', 'show', 'stats', 'primebelow', 'trace', 'loglevel', 'trace-flow-set', 'trace-flow-delete', 'trace-flow-list',
];

/** True for a command nfqlb has; the others are this project's. */
export function isNfqlbCommand(name: string): boolean {
  return NFQLB_COMMAND_ORDER.includes(name);
}

/** `names` in the order `nfqlb -h` lists them: nfqlb's order, then the commands nfqlb lacks. */
export function inListOrder(names: readonly string[]): string[] {
  const rank = (name: string): number => {
    const i = NFQLB_COMMAND_ORDER.indexOf(name);
    return i < 0 ? NFQLB_COMMAND_ORDER.length : i;
  };
  return names.slice().sort((a, b) => rank(a) - rank(b));
}

