/**
 * The control socket of SPEC.md §7, byte-compatible with nfqlb: one request
 * per connection as `key:value\n` lines ended by `eoc:\n`; the reply is `OK`,
 * `FAIL: ...` or an error text followed by one NUL byte, or JSON (list
 * actions, no NUL); then the server closes.
 *
 * Unlike nfqlb, which serves one connection at a time, every connection is
 * independent, bounded in size and time: a client that stalls or leaves early
 * costs only its own connection.
 */
import * as net from 'node:net';
import { NfqlbError } from './errors';

export const DEFAULT_FLOW_ADDRESS = 'unix:nfqlb';
export const DEFAULT_TRACE_ADDRESS = 'unix:nfqlb-trace';
/** nfqlb reads lines into 1024-byte buffers; a request is a handful of lines. */
export const MAX_LINE = 1024;
export const MAX_REQUEST = 16 * 1024;
export const REQUEST_TIMEOUT_MS = 5000;

/** The keys nfqlb's readFlowCmd knows; anything else in a request is ignored. */
export interface ControlRequest {
  action?: string;
  name?: string;
  target?: string;
  priority?: string;
  protocols?: string;
  dsts?: string;
  srcs?: string;
  dports?: string;
  sports?: string;
  match?: string;
  udpencap?: string;
}
const KNOWN_KEYS = new Set(['action', 'name', 'target', 'priority', 'protocols', 'dsts', 'srcs', 'dports', 'sports', 'match', 'udpencap']);

export type SocketAddress = { path: string } | { host: string; port: number };

/**
 * Parses nfqlb's address syntax: `unix:NAME` (abstract socket "\0NAME"),
 * `tcp:HOST:PORT`, `tcp:[V6]:PORT`. Throws NfqlbError NFQLB_ERR_ADDRESS.
 */
export function parseAddress(address: string): SocketAddress {
  if (address.startsWith('unix:')) {
    const name = address.slice(5);
    if (name === '' || name.length > 107) throw new NfqlbError(`Failed to parse address [${address}]: the unix name must be 1-107 characters`, 'NFQLB_ERR_ADDRESS');
    return { path: `\0${name}` };
  }
  if (address.startsWith('tcp:')) {
    const rest = address.slice(4);
    const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(rest) ?? /^([^:[\]]+):(\d+)$/.exec(rest);
    const port = m ? Number(m[2]) : NaN;
    if (m === null || !(port >= 1 && port <= 65535)) {
      throw new NfqlbError(`Failed to parse address [${address}]: use tcp:HOST:PORT or tcp:[IPv6]:PORT`, 'NFQLB_ERR_ADDRESS');
    }
    return { host: m[1], port };
  }
  throw new NfqlbError(`Failed to parse address [${address}]: use unix:NAME, tcp:HOST:PORT or tcp:[IPv6]:PORT`, 'NFQLB_ERR_ADDRESS');
}

/** The flow server address from NFQLB_FLOW_ADDRESS, as nfqlb reads it. */
export function flowAddress(): string {
  return process.env.NFQLB_FLOW_ADDRESS ?? DEFAULT_FLOW_ADDRESS;
}

/** Serialises a request in the order nfqlb's CLI writes it. */
export function encodeRequest(req: ControlRequest): string {
  let text = '';
  for (const key of KNOWN_KEYS) {
    const value = req[key as keyof ControlRequest];
    if (value !== undefined) text += `${key}:${value}\n`;
  }
  return `${text}eoc:\n`;
}

/** What a request handler answers: a NUL-terminated text reply, or JSON as is. */
export type ControlReply = { text: string } | { json: string };

/** Keys where nfqlb keeps the last value (atoi); for every other key the first one wins. */
const LAST_WINS = new Set(['priority', 'udpencap']);

/**
 * Reads one request as nfqlb's readFlowCmd does: `key:value` lines up to a
 * line starting with `eoc:`; the first value of a key wins, except for
 * `priority` and `udpencap` where the last does; unknown keys are ignored.
 * A line without `:` makes nfqlb drop the request without a reply; here it
 * is refused with `FAIL: invalid param [line]` so the client learns why.
 */
export class RequestParser {
  private buffered = '';
  private size = 0;
  readonly request: ControlRequest = {};
  /** Set when the request is complete (`eoc:` seen) or broken. */
  done = false;
  error: string | null = null;

  /** Feeds bytes (latin1); returns true once the request is complete or refused. */
  push(chunk: string): boolean {
    if (this.done) return true;
    this.size += chunk.length;
    if (this.size > MAX_REQUEST) return this.fail(`FAIL: request larger than ${MAX_REQUEST} bytes`);
    this.buffered += chunk;
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      if (line.length >= MAX_LINE) return this.fail(`FAIL: line longer than ${MAX_LINE - 1} bytes`);
      if (line.startsWith('eoc:')) {
        this.done = true;
        return true;
      }
      const colon = line.indexOf(':');
      if (colon < 0) return this.fail(`FAIL: invalid param [${line.slice(0, 64)}]`);
      const key = line.slice(0, colon);
      if (!KNOWN_KEYS.has(key)) continue;
      const k = key as keyof ControlRequest;
      if (this.request[k] === undefined || LAST_WINS.has(key)) this.request[k] = line.slice(colon + 1);
    }
    if (this.buffered.length >= MAX_LINE) return this.fail(`FAIL: line longer than ${MAX_LINE - 1} bytes`);
    return false;
  }

  private fail(why: string): boolean {
    this.error = why;
    this.done = true;
    return true;
  }
}

export interface ControlServerEvents {
  /** Called once per complete request; must not throw (a throw becomes `FAIL: internal error`). */
  handle(req: ControlRequest): ControlReply;
  /** Called for refused or broken requests (logging). */
  refused?(why: string): void;
}

/** Connections served at the same time; more wait in the listen backlog. */
export const MAX_CONNECTIONS = 64;

export interface ControlServer {
  /** Where it listens, as given (`unix:nfqlb`, `tcp:...`). */
  readonly address: string;
  /** Connections open now. */
  readonly connections: number;
  /** Stops listening and drops every open connection at once. */
  close(): Promise<void>;
}

/**
 * Listens on `address` and serves requests. Resolves once listening; rejects
 * with NfqlbError NFQLB_ERR_CONTROL_LISTEN (one line saying what to do).
 *
 * Every connection has REQUEST_TIMEOUT_MS from accept to close, whatever it
 * sends (a slow trickle does not extend it), and at most MAX_REQUEST bytes;
 * requests are answered synchronously, so a stalled client holds nothing but
 * its own socket.
 */
export async function startControlServer(address: string, events: ControlServerEvents, timeoutMs = REQUEST_TIMEOUT_MS): Promise<ControlServer> {
  const where = parseAddress(address);
  const open = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    open.add(sock);
    const parser = new RequestParser();
    sock.setEncoding('latin1');
    const deadline = setTimeout(() => {
      if (!parser.done) events.refused?.('timeout: no complete request');
      sock.destroy();
    }, timeoutMs);
    sock.on('close', () => {
      clearTimeout(deadline);
      open.delete(sock);
    });
    sock.on('error', () => sock.destroy());
    const answer = (): void => {
      if (parser.error !== null) {
        events.refused?.(parser.error);
        sock.end(`${parser.error}\0`, 'latin1');
        return;
      }
      let reply: ControlReply;
      try {
        reply = events.handle(parser.request);
      } catch (err) {
        events.refused?.(`internal error: ${(err as Error).message}`);
        reply = { text: 'FAIL: internal error' };
      }
      sock.end('json' in reply ? reply.json : `${reply.text}\0`, 'latin1');
    };
    sock.on('data', (chunk: string) => {
      if (parser.done) return;
      if (parser.push(chunk)) answer();
    });
    sock.on('end', () => {
      // The peer closed before `eoc:`: nfqlb answers nothing; neither do we.
      if (!parser.done) sock.end();
    });
  });
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const what = 'path' in where ? `unix:${where.path.slice(1)}` : `${where.host}:${where.port}`;
      reject(new NfqlbError(
        err.code === 'EADDRINUSE'
          ? `control socket ${what} is in use: another nfqlb daemon runs in this network namespace; stop it or set NFQLB_FLOW_ADDRESS`
          : `cannot listen on control socket ${what}: ${err.message}`,
        'NFQLB_ERR_CONTROL_LISTEN', err.code));
    });
    server.listen(where, () => resolve());
  });
  let closing: Promise<void> | null = null;
  return {
    address,
    get connections() {
      return open.size;
    },
    close() {
      if (closing === null) {
        closing = new Promise<void>((resolve) => {
          server.close(() => resolve());
          for (const sock of open) sock.destroy();
        });
      }
      return closing;
    },
  };
}

/**
 * Sends one request and returns the raw reply bytes (until the server closes).
 * Throws NfqlbError NFQLB_ERR_CONNECT with nfqlb's wording (`Connect failed.
 * Connection refused`) when nobody listens, NFQLB_ERR_TIMEOUT when the server
 * does not close within `timeoutMs`.
 */
export async function sendRequest(address: string, req: ControlRequest, timeoutMs = 10000): Promise<Buffer> {
  const where = parseAddress(address);
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let connected = false;
    let failed = false;
    const sock = net.connect(where);
    const fail = (err: NfqlbError): void => {
      failed = true;
      sock.destroy();
      reject(err);
    };
    sock.setTimeout(timeoutMs, () => fail(new NfqlbError(`No reply from ${address} within ${timeoutMs} ms`, 'NFQLB_ERR_TIMEOUT')));
    sock.on('connect', () => {
      connected = true;
      sock.write(encodeRequest(req), 'latin1');
    });
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (failed) return;
      if (!connected) {
        // strerror() texts, as nfqlb prints them.
        const reason =
          err.code === 'ECONNREFUSED' || err.code === 'ENOENT' ? 'Connection refused'
          : err.code === 'ETIMEDOUT' ? 'Connection timed out'
          : err.code === 'EHOSTUNREACH' ? 'No route to host'
          : err.code === 'ENETUNREACH' ? 'Network is unreachable'
          : err.message;
        fail(new NfqlbError(`Connect failed. ${reason}`, 'NFQLB_ERR_CONNECT', err.code));
        return;
      }
      // A reset after the reply arrived changes nothing; before, the close below reports an empty reply.
    });
    sock.on('close', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
  });
}
