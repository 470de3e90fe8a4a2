import type { NfqlbCommand } from '../command';

export const flowCommands: NfqlbCommand[] = [];
