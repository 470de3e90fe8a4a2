/**
 * One control request from a command line, for `unix:` addresses without
 * Node's event loop or node:net: the addon connects (non-blocking, as the
 * daemon's clients in sockets.ts), the request is written and the reply read
 * with plain read/write calls, waiting briefly when the socket has nothing
 * (only in a process of its own: bin/nfqlb). Loading node:net is a good part of a flow command's start-up, and
 * Meridio runs one on every metrics scrape. Same bytes, errors and timeouts
 * as control.ts sendRequest, which `tcp:` addresses still use.
 */
import { closeSync, readSync, writeSync } from 'node:fs';
import { getSystemErrorMap } from 'node:util';
import { NfqlbError } from '../base/errors';
import { unixConnect, type UnixConnectResult } from '../addon/blockingsocket';
import { encodeRequest, type ControlRequest } from '../services/controlwire';
import { isOwnProcess } from './command';

const CONNECT_RETRY_MS = 20;
const pause = new Int32Array(new SharedArrayBuffer(4));
const sleep = (ms: number): void => void Atomics.wait(pause, 0, 0, ms);

/** strerror() as sockets.ts words it (`Connection refused`). */
function strerror(errno: number): string {
  const entry = getSystemErrorMap().get(-Math.abs(errno));
  if (entry === undefined) return `Unknown error ${errno}`;
  return entry[1].charAt(0).toUpperCase() + entry[1].slice(1);
}

function connectUnix(name: Buffer, deadline: number): number {
  for (;;) {
    const r: UnixConnectResult = unixConnect(name);
    if ('fd' in r) return r.fd;
    // A full listen backlog: try again until the deadline, as sockets.ts connectTo.
    if (getSystemErrorMap().get(-Math.abs(r.errno))?.[0] !== 'EAGAIN' || Date.now() >= deadline) {
      throw new NfqlbError(`Connect failed. ${strerror(r.errno)}`, 'NFQLB_ERR_CONNECT');
    }
    sleep(CONNECT_RETRY_MS);
  }
}

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** Sends `req` over the connected socket `fd` and reads until the server closes. */
function exchange(fd: number, address: string, req: ControlRequest, timeoutMs: number): Buffer {
  let idleSince = Date.now();
  // Short waits first: a reply (a long flow-list too) usually follows within
  // microseconds of the last bytes; waiting a whole millisecond each time
  // made a 1,000-flow listing twice as slow as a short one.
  let wait = 0.02;
  const waited = (): void => {
    if (Date.now() - idleSince >= timeoutMs) throw new NfqlbError(`No reply from ${address} within ${timeoutMs} ms`, 'NFQLB_ERR_TIMEOUT');
    sleep(wait);
    wait = Math.min(1, wait * 2);
  };
  let out = Buffer.from(encodeRequest(req), 'utf8');
  while (out.length > 0) {
    try {
      out = out.subarray(writeSync(fd, out));
      idleSince = Date.now();
      wait = 0.02;
    } catch (err) {
      if (code(err) === 'EAGAIN') {
        waited();
        continue;
      }
      // The server closed first (EPIPE, ECONNRESET): whatever it sent is the reply.
      break;
    }
  }
  const chunks: Buffer[] = [];
  const buf = Buffer.allocUnsafe(256 * 1024);
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (err) {
      if (code(err) === 'EAGAIN') {
        waited();
        continue;
      }
      // A reset before the reply is an empty reply, as in control.ts.
      break;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
    idleSince = Date.now();
    wait = 0.02;
  }
  return Buffer.concat(chunks);
}

/**
 * Sends one request and returns the raw reply, everything the server sent
 * until it closed (empty when it closed without one). Throws NfqlbError
 * NFQLB_ERR_CONNECT (`Connect failed. Connection refused`) or
 * NFQLB_ERR_TIMEOUT, as control.ts sendRequest.
 */
export async function request(address: string, req: ControlRequest, timeoutMs = 10000): Promise<Buffer> {
  // Blocking is for a process of its own: main() called inside a program (a test with its server in
  // the same event loop) would wait for itself.
  if (!address.startsWith('unix:') || !isOwnProcess()) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- node:net only where it is needed
    return (require('../services/control') as typeof import('../services/control')).sendRequest(address, req, timeoutMs);
  }
  const name = Buffer.from(address.slice(5), 'utf8');
  if (name.length === 0 || name.length > 107 || name.includes(0)) {
    // The same check and words as control.ts parseAddress.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- only for the error
    (require('../services/control') as typeof import('../services/control')).parseAddress(address);
  }
  const fd = connectUnix(name, Date.now() + timeoutMs);
  try {
    return exchange(fd, address, req, timeoutMs);
  } finally {
    closeSync(fd);
  }
}
