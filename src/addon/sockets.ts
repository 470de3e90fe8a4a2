/**
 * Stream sockets at nfqlb's addresses (abstract unix names of nfqlb's exact length, or tcp:), bound and connected the
 * way nfqlb does it, so that nfqlb, socat (`ABSTRACT-CONNECT:nfqlb`) and
 * Python (`connect('\0nfqlb')`) reach this daemon and this CLI reaches theirs.
 *
 * `unix:NAME` is the abstract socket whose address is a NUL and the bytes of
 * NAME, with the address length offsetof(sun_path) + 1 + strlen(NAME). Node's
 * net module pads an abstract name with NULs to the whole 108 bytes, which is
 * another address (`ss -xl` shows `@nfqlb@@@@...`), so the addon makes these
 * sockets and Node is handed the descriptor; from then on the net.Server or
 * net.Socket owns it and closes it, once. `tcp:` addresses use Node as is.
 */
// Not `import * as`: its helper reads every export, which on Node 24 loads node:util's streams and worker_threads (CLI start-up).
import fs = require('node:fs');
import net = require('node:net');
import os = require('node:os');
import util = require('node:util');
import { NfqlbError } from '../base/errors';
import { native } from './native';

/** A parsed address: the abstract unix name's bytes, or a TCP host and port. */
export type SocketAddress = { unix: Buffer } | { host: string; port: number };

/** What the addon's unixListen/unixConnect return. */
type NativeResult = { fd: number } | { errno: number; syscall: string };

interface UnixSocketAddon {
  unixListen(name: Buffer, backlog: number): NativeResult;
  unixConnect(name: Buffer): NativeResult;
}

function addon(): UnixSocketAddon {
  return native() as unknown as UnixSocketAddon;
}

/** How long between connect attempts while a unix listen backlog is full (EAGAIN). */
const CONNECT_RETRY_MS = 20;

/**
 * strerror() of a positive errno as glibc words it ("Connection refused"):
 * libuv's text with a capital first letter, which is glibc's for the errors
 * sockets give.
 */
export function strerror(errno: number): string {
  const entry = util.getSystemErrorMap().get(-Math.abs(errno));
  if (entry === undefined) return `Unknown error ${errno}`;
  return entry[1].charAt(0).toUpperCase() + entry[1].slice(1);
}

/**
 * A failed socket call: NfqlbError code NFQLB_ERR_SOCKET, `errno` the errno
 * name (ECONNREFUSED), `reason` strerror's text, `syscall` the call.
 */
export class SocketError extends NfqlbError {
  constructor(
    readonly syscall: string,
    readonly errnoNumber: number,
  ) {
    super(`${syscall}: ${strerror(errnoNumber)}`, 'NFQLB_ERR_SOCKET', util.getSystemErrorName(-Math.abs(errnoNumber)));
    this.name = 'SocketError';
  }

  /** strerror() text of the failure. */
  get reason(): string {
    return strerror(this.errnoNumber);
  }

  /** From an error Node emitted (its errno is negative, its code the name). */
  static fromNode(err: NodeJS.ErrnoException, syscall: string): SocketError | NfqlbError {
    if (typeof err.errno === 'number' && err.errno !== 0) return new SocketError(err.syscall ?? syscall, Math.abs(err.errno));
    return new NfqlbError(`${syscall}: ${err.message}`, 'NFQLB_ERR_SOCKET', { cause: err });
  }
}

/** The text an address is written as (`unix:NAME`, `HOST:PORT`, `[V6]:PORT`). */
export function addressText(where: SocketAddress): string {
  if ('unix' in where) return `unix:${where.unix.toString('utf8')}`;
  return net.isIPv6(where.host) ? `[${where.host}]:${where.port}` : `${where.host}:${where.port}`;
}

/**
 * Makes `server` listen at `where` with the given backlog (the kernel caps it
 * at net.core.somaxconn). Resolves once listening; rejects with a SocketError
 * (errno EADDRINUSE when another process has the address).
 */
export async function listenAt(server: net.Server, where: SocketAddress, backlog: number): Promise<void> {
  let fd = -1;
  if ('unix' in where) {
    const r = addon().unixListen(where.unix, backlog);
    if (!('fd' in r)) throw new SocketError(r.syscall, r.errno);
    fd = r.fd;
  }
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => reject(SocketError.fromNode(err, 'listen'));
    server.once('error', onError);
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    // Node listens again on the descriptor with the backlog argument (it ignores
    // options.backlog with fd). From here the server owns the descriptor.
    if ('unix' in where) server.listen({ fd }, backlog, onListening);
    else server.listen({ host: where.host, port: where.port, backlog }, onListening);
  });
}

/**
 * Connects to `where`. Resolves with the connected socket; rejects with a
 * SocketError (ECONNREFUSED when nobody listens) or, when a unix listen
 * backlog stays full (EAGAIN) or a TCP connect hangs for `timeoutMs`, with
 * the last error (ETIMEDOUT for TCP).
 */
export async function connectTo(where: SocketAddress, timeoutMs: number): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  if ('unix' in where) {
    for (;;) {
      const r = addon().unixConnect(where.unix);
      if ('fd' in r) {
        try {
          return new net.Socket({ fd: r.fd, readable: true, writable: true });
        } catch (err) {
          // Node did not take the descriptor (it throws before its handle owns it).
          fs.closeSync(r.fd);
          throw err;
        }
      }
      const err = new SocketError(r.syscall, r.errno);
      if (err.errnoName !== 'EAGAIN' || Date.now() >= deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, CONNECT_RETRY_MS));
    }
  }
  return new Promise<net.Socket>((resolve, reject) => {
    const sock = net.connect({ host: where.host, port: where.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new SocketError('connect', os.constants.errno.ETIMEDOUT));
    }, Math.max(0, deadline - Date.now()));
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(SocketError.fromNode(err, 'connect'));
    };
    sock.once('error', onError);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
  });
}
