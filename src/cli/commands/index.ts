/**
 * Every `nfqlb` command, grouped by file as nfqlb groups them. A command line
 * loads only the file of the command it runs: Meridio starts one process per
 * change, so `activate` must not pay for the daemon's modules (pino,
 * prom-client, zlib, worker threads). The names are listed here, not read from
 * the files, for that reason; test/unit/cli/commands/index.test.ts checks both agree.
 */
import type { NfqlbCommand } from '../command';

/* eslint-disable @typescript-eslint/no-require-imports -- require() on first use is the point of this module */
const FILES: ReadonlyArray<{ names: readonly string[]; load: () => NfqlbCommand[] }> = [
  { names: ['init', 'delete', 'show', 'activate', 'deactivate'], load: () => (require('./shm') as typeof import('./shm')).shmCommands },
  { names: ['fwmark', 'primebelow'], load: () => (require('./fwmark') as typeof import('./fwmark')).fwmarkCommands },
  {
    names: ['flow-set', 'flow-delete', 'flow-list', 'flow-list-names', 'trace-flow-set', 'trace-flow-delete', 'trace-flow-list', 'trace-flow-list-names'],
    load: () => (require('./flow') as typeof import('./flow')).flowCommands,
  },
  { names: ['flowlb', 'lb'], load: () => (require('./lb') as typeof import('./lb')).lbCommands },
  { names: ['stats'], load: () => (require('./stats') as typeof import('./stats')).statsCommands },
  { names: ['trace', 'loglevel'], load: () => (require('./trace') as typeof import('./trace')).traceCommands },
  { names: ['replay'], load: () => (require('./replay') as typeof import('./replay')).replayCommands },
  { names: ['conntrack'], load: () => (require('./conntrack') as typeof import('./conntrack')).conntrackCommands },
  { names: ['version'], load: () => (require('./version') as typeof import('./version')).versionCommands },
  { names: ['completion'], load: () => (require('./completion') as typeof import('./completion')).completionCommands },
];
/* eslint-enable @typescript-eslint/no-require-imports */

/** The names of every command, in the files' order (without loading any). */
export function commandNames(): string[] {
  return FILES.flatMap((f) => f.names);
}

/** The command called `name`, loading only its file; undefined for an unknown name. */
export function loadCommand(name: string): NfqlbCommand | undefined {
  const file = FILES.find((f) => f.names.includes(name));
  return file?.load().find((c) => c.name === name);
}

/** Every command (loads every file: for help generators and tests, not for a command line). */
export function allCommands(): NfqlbCommand[] {
  return FILES.flatMap((f) => f.load());
}
