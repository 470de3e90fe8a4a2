/** Every `nfqlb` command, grouped by file as nfqlb groups them. */
import type { NfqlbCommand } from '../command';
import { shmCommands } from './shm';
import { fwmarkCommands } from './fwmark';
import { versionCommands } from './version';
import { flowCommands } from './flow';
import { replayCommands } from './replay';
import { lbCommands } from './lb';
import { traceCommands } from './trace';
import { statsCommands } from './stats';

export function allCommands(): NfqlbCommand[] {
  return [...shmCommands, ...fwmarkCommands, ...flowCommands, ...lbCommands, ...statsCommands, ...traceCommands, ...replayCommands, ...versionCommands];
}
