import type { NfqlbCommand } from '../command';

export const fwmarkCommands: NfqlbCommand[] = [];
