/**
 * Replays a file of nfqlb command lines (the `reference/decisions/*.cmds`
 * format: one command per line, split on spaces, no shell quoting) into
 * private tables and flows, for `nfqlb replay --config`. The table commands
 * run through the same code as the CLI, against memory instead of /dev/shm;
 * flow-set/flow-delete do what the daemon's control server does.
 *
 * One rule for errors: the first line that fails stops the reading with
 * `FILE:LINE: message` (one line), whatever the kind of failure — a command
 * a replay does not know, bad options, a flow the daemon would refuse, a
 * second daemon line. A config is never half applied and then used.
 */
import * as fs from 'node:fs';
import { NfqlbError, UsageError } from '../base/errors';
import { checkFlowSetArgs, flowCmdFromArgs, flowSetArgsFrom, type FlowSetArgs } from '../flows/fields';
import { applyFlowChange } from '../flows/change';
import { FlowSet } from '../flows/flowset';
import { MemoryTableStore, type TableStore } from '../tables/tablestore';
import type { MaglevTable } from '../tables/maglev';
import { Target, TargetRegistry } from '../tables/targets';

/** Options of one command line as the CLI parser returns them (cli/command.ts's ParsedArgs has this shape). */
export interface ParsedArgs {
  _: string[];
  [option: string]: unknown;
}

/** A command a config line names; cli/command.ts's NfqlbCommand is one. */
export interface ConfigCommand {
  name: string;
  run(args: ParsedArgs, ctx: { store: TableStore; out(text: string): void }): unknown;
}

/**
 * The command parser, handed in by the CLI (cli/commands/replay.ts) so that
 * this reader does not import the CLI: `find` names a command, `parse` reads
 * its options with nfqlb's wording for mistakes (throws UsageError).
 */
export interface CommandParser {
  find(name: string): ConfigCommand | undefined;
  parse(cmd: ConfigCommand, argv: string[]): ParsedArgs;
}

/** The daemon line of a config (`flowlb ...` or `lb ...`): its options, as parsed. */
export interface DaemonLine {
  command: 'flowlb' | 'lb';
  args: ParsedArgs;
}

export interface ReplayConfig {
  store: MemoryTableStore;
  targets: TargetRegistry<MaglevTable>;
  flows: FlowSet<Target<MaglevTable>>;
  daemon: DaemonLine | null;
}

const TABLE_COMMANDS = new Set(['init', 'activate', 'deactivate', 'delete', 'show']);

function flowArgs(args: ParsedArgs): FlowSetArgs {
  return flowSetArgsFrom((option) => args[option]);
}

/** Targets of a replay come from the private store; a missing table cannot be opened, as in the daemon. */
function registryOver(store: TableStore): TargetRegistry<MaglevTable> {
  return new TargetRegistry<MaglevTable>({
    open(name) {
      try {
        return store.open(name, false);
      } catch {
        return null;
      }
    },
    close(_name, table) {
      store.close(table);
    },
  });
}

/** A config error: `where: message` on one line. */
function configError(where: string, message: string, cause?: unknown): NfqlbError {
  return new NfqlbError(`${where}: ${message.trim().replace(/\s*\n\s*/g, '; ')}`, 'NFQLB_ERR_CONFIG', { cause });
}

/**
 * Applies the lines of `text` in order. Throws NfqlbError NFQLB_ERR_CONFIG
 * `FILE:LINE: message` for the first line that fails (nothing is returned
 * then); errors that are not NfqlbError (bugs) pass through unchanged.
 */
export function applyConfig(text: string, file: string, commands: CommandParser): ReplayConfig {
  const store = new MemoryTableStore();
  const targets = registryOver(store);
  // Replay takes no trace-flow lines; the rule wants a set for them.
  const noTraceFlows = new FlowSet<string>();
  const config: ReplayConfig = {
    store,
    targets,
    flows: new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name }),
    daemon: null,
  };
  let daemonLine = 0;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (line === '' || line.startsWith('#')) continue;
    const words = line.split(/\s+/);
    if (words[0] === 'nfqlb') words.shift();
    const where = `${file}:${n + 1}`;
    const cmd = commands.find(words[0]);
    if (cmd === undefined) throw configError(where, `Unknown command [${words[0]}]`);
    const name = cmd.name;
    if (!TABLE_COMMANDS.has(name) && !['flow-set', 'flow-delete', 'flowlb', 'lb'].includes(name)) {
      throw configError(where, `${name} cannot be replayed (use init, activate, deactivate, delete, flow-set, flow-delete, flowlb, lb)`);
    }
    try {
      const args: ParsedArgs = commands.parse(cmd, words.slice(1));
      if (TABLE_COMMANDS.has(name)) {
        const rc = name === 'show' ? 0 : cmd.run(args, { store, out: () => undefined });
        if (typeof rc === 'number' && rc !== 0) throw configError(where, `${name} failed (exit code ${rc})`);
      } else if (name === 'flow-set') {
        const fa = flowArgs(args);
        const clientError = checkFlowSetArgs(fa);
        if (clientError !== null) throw new UsageError(clientError);
        // The daemon's rule (flowchange.ts), so a replay refuses what the daemon refuses.
        const reply = applyFlowChange<Target<MaglevTable>>(config.flows, noTraceFlows, targets, 'set', flowCmdFromArgs(fa));
        if (reply !== 'OK') throw configError(where, reply);
      } else if (name === 'flow-delete') {
        const reply = applyFlowChange<Target<MaglevTable>>(config.flows, noTraceFlows, targets, 'delete', { name: String(args.name) });
        if (reply !== 'OK') throw configError(where, reply);
      } else {
        if (daemonLine !== 0) throw configError(where, `a second daemon line (the first is line ${daemonLine}); keep one ${name} line`);
        daemonLine = n + 1;
        config.daemon = { command: name as 'flowlb' | 'lb', args };
      }
    } catch (err) {
      if (!(err instanceof NfqlbError) || err.code === 'NFQLB_ERR_CONFIG') throw err;
      throw configError(where, err.message, err);
    }
  }
  return config;
}

/** Reads and applies a config file; an unreadable file is NfqlbError NFQLB_ERR_CONFIG. */
export function loadConfig(file: string, commands: CommandParser): ReplayConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new NfqlbError(`cannot read ${file}: ${(err as Error).message}`, 'NFQLB_ERR_CONFIG', { cause: err });
  }
  return applyConfig(text, file, commands);
}
