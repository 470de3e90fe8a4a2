import type { NfqlbCommand } from '../command';

export const shmCommands: NfqlbCommand[] = [];
