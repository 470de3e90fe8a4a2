import type { NfqlbCommand } from '../command';

export const replayCommands: NfqlbCommand[] = [];
