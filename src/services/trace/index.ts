/**
 * nfqlb's tracing, by concern: the mask and how the CLI selects it
 * (selection.ts), the trace text of a packet (text.ts), and the daemon's
 * trace server (server.ts). This module is what the rest of the tree imports.
 */
export * from './selection';
export * from './text';
export * from './server';
