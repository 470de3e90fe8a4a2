/**
 * The errors of nfqlb-ts: one class, NfqlbError, whose `code` is one of the
 * stable codes in ERROR_CODES below (the one list of them, each with its
 * meaning; test/unit/base/errors.test.ts checks that every code thrown in src/ and
 * native/ is listed). Callers branch on `code`; users read `message`, which
 * says what was wrong and what to do.
 *
 * Failures of a system call carry the errno the way Node's own errors do:
 * `errno` is the negative number (-2), `errnoName` its name (ENOENT), named
 * here with util.getSystemErrorName so the addon needs no table. A wrapped
 * error is kept as `cause`.
 * Library code throws these; only the CLI layer turns them into exit codes.
 */
// Not `import * as`: its helper reads every export, which on Node 24 loads node:util's streams and worker_threads (CLI start-up).
import os = require('node:os');
import util = require('node:util');

/** Every code an NfqlbError can have, with what it means. Codes are API: add, do not rename. */
export const ERROR_CODES = {
  NFQLB_ERR_USAGE: 'a command line was wrong (option, value or argument); the message is nfqlb\'s',
  NFQLB_ERR_RANGE: 'a number is outside what a table allows (M, N, slot index, prime below)',
  NFQLB_ERR_READONLY: 'a change was asked of a table that was opened read-only',
  NFQLB_ERR_ADDRESS: 'a control or trace address is not unix:NAME, tcp:HOST:PORT or tcp:[IPv6]:PORT',
  NFQLB_ERR_CONFIG: 'a replay config file cannot be read, or a line of it is not a command a replay can run',
  NFQLB_ERR_PCAP: 'a capture file cannot be read or is not a pcap file of a supported link type',
  NFQLB_ERR_CONNECT: 'connecting to a daemon (control or trace socket) failed; errno says why',
  NFQLB_ERR_SOCKET: 'a unix socket call (socket, bind, listen, connect) failed; errno and syscall say which',
  NFQLB_ERR_TRACE_REFUSED: 'the trace server refused another client (it serves a bounded number at once)',
  NFQLB_ERR_TIMEOUT: 'a daemon did not answer a control request in time',
  NFQLB_ERR_CONTROL_LISTEN: 'the control server cannot listen (address in use: another daemon in this namespace)',
  NFQLB_ERR_TRACE_LISTEN: 'the trace server cannot listen',
  NFQLB_ERR_TRACE_SELECTION: 'an unknown trace selection name',
  NFQLB_ERR_METRICS_ADDRESS: 'a metrics address is not HOST:PORT, [IPv6]:PORT or off',
  NFQLB_ERR_METRICS_LISTEN: 'the metrics endpoint cannot listen; errno says why',
  NFQLB_ERR_SHM_NAME: 'a shared-memory name is one glibc refuses (empty, an inner /, NUL, too long)',
  NFQLB_ERR_SHM_MISSING: 'a shared-memory object (table, trace settings) does not exist',
  NFQLB_ERR_SHM_OPEN: 'a shared-memory object cannot be opened, created or sized; errno says why',
  NFQLB_ERR_SHM_MAP: 'a shared-memory object cannot be mapped; errno says why',
  NFQLB_ERR_SHM_UNLINK: 'a shared-memory object cannot be removed; errno says why',
  NFQLB_ERR_SHM_FORMAT: 'a shared-memory object is not what it should be (not a table, too small)',
  NFQLB_ERR_MEMORY: 'memory asked for at start (--conntrack) cannot be allocated',
  NFQLB_ERR_SHM_OWNER: 'a table belongs to neither the daemon\'s user nor root; the daemon does not take it (anyone can create files in /dev/shm)',
  NFQLB_ERR_NOT_FILE: 'a name that must be a regular file (a table or other object in /dev/shm, the flows file) is a FIFO, socket, directory, device node or symbolic link; it was not opened',
  NFQLB_ERR_SHM_SPACE: '/dev/shm has no room for the table to be created',
  NFQLB_ERR_QUEUE: 'an NFQUEUE queue cannot be opened, bound or served; errno says why',
  NFQLB_ERR_QUEUE_BUSY: 'the queue is bound by another process',
  NFQLB_ERR_QUEUE_PERM: 'binding a queue needs root or CAP_NET_ADMIN',
  NFQLB_ERR_QUEUE_OPTION: 'a queue option is missing or out of range',
  NFQLB_ERR_QUEUE_STATE: 'a queue was started twice, or used after close',
  NFQLB_ERR_QUEUE_PROC: '/proc/net/netfilter/nfnetlink_queue cannot be read',
  NFQLB_ERR_TUN: 'the --tun device cannot be used (missing, not a tun device, down, MTU below --mtu, held by another process); errno says why',
  NFQLB_ERR_INSPECTOR: 'the daemon was started with the Node inspector open (NODE_OPTIONS=--inspect...): refused, it would let anyone in the network namespace run code',
  NFQLB_ERR_THREAD: 'a packet thread (--workers) could not start, died, or did not answer in time',
  NFQLB_ERR_FLOWS_FILE: 'the --flows_file cannot be read or is corrupt; it is left untouched',
  NFQLB_ERR_FLOWS_FILE_WRITE: 'the --flows_file cannot be written; the change was not made',
  NFQLB_ERR_ADDON: 'the native addon cannot be loaded for a reason not listed below',
  NFQLB_ERR_ADDON_MISSING: 'the native addon is not built (no build/Release/nfqlb_native.node)',
  NFQLB_ERR_ADDON_LIBRARY: 'a shared library the addon needs at run time is not installed',
  NFQLB_ERR_ADDON_ABI: 'the addon was built for another Node.js version',
  NFQLB_ERR_ADDON_INIT: 'the addon loaded but failed to initialise',
} as const;

export type NfqlbErrorCode = keyof typeof ERROR_CODES;

export interface NfqlbErrorOptions {
  /** The error this one wraps (kept as `cause`); its errno is taken when `errno` is not given. */
  cause?: unknown;
  /** errno of a failed system call: a number (C's 2 or Node's -2) or its name ("ENOENT"). */
  errno?: number | string;
}

/**
 * Node's errno for a number or a name: negative, as in Node's own errors.
 * Undefined for what is not an errno (a name Node does not know, a non-system code).
 */
export function toErrno(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value !== 0) return -Math.abs(value);
  if (typeof value !== 'string') return undefined;
  const known = (os.constants.errno as Record<string, number | undefined>)[value];
  return known !== undefined ? -known : undefined;
}

/** The name of a Node errno (-2 → "ENOENT"); "Unknown system error -N" for one the system does not name. */
export function errnoName(errno: number): string {
  return util.getSystemErrorName(errno);
}

export class NfqlbError extends Error {
  readonly code: string;
  /** errno of the failed system call, negative as in Node (-2), or undefined. */
  readonly errno: number | undefined;

  /**
   * `code` is one of ERROR_CODES. The third argument is the options, or
   * an errno number (the addon passes C's positive errno) or name.
   */
  constructor(message: string, code: NfqlbErrorCode | (string & {}), options?: NfqlbErrorOptions | string | number) {
    const opts: NfqlbErrorOptions = typeof options === 'object' && options !== null ? options : { errno: options };
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NfqlbError';
    this.code = code;
    const cause = opts.cause as { errno?: unknown; code?: unknown } | undefined;
    let errno = toErrno(opts.errno ?? cause?.errno);
    if (errno === undefined && opts.errno === undefined) errno = toErrno(cause?.code);
    this.errno = errno;
  }

  /** The errno's name ("ENOENT"), or undefined when there is no errno. */
  get errnoName(): string | undefined {
    return this.errno === undefined ? undefined : errnoName(this.errno);
  }
}

/**
 * A mistake in what the user asked for (bad option, missing table). The CLI
 * prints only `message`, exactly as nfqlb words it, and exits with `exitCode`.
 */
export class UsageError extends NfqlbError {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1, code: NfqlbErrorCode | (string & {}) = 'NFQLB_ERR_USAGE', options?: NfqlbErrorOptions) {
    super(message, code, options);
    this.name = 'UsageError';
    this.exitCode = exitCode;
  }
}
