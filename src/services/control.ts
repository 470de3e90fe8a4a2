/**
 * The daemon's control socket, byte-compatible with nfqlb: one request
 * per connection as `key:value\n` lines ended by a line starting with `eoc:`;
 * the reply is `OK`, `FAIL: ...` or an error text followed by one NUL byte,
 * or JSON (list actions, no NUL); then the server closes. As nfqlb's fgets()
 * loop, a final `eoc:` without its newline counts once the client half-closes
 * (EOF); a request cut off before `eoc:` gets no reply.
 *
 * Names and values travel as bytes: the server reads a request as latin1, so
 * each byte is one character of a "binary string" and every reply is written
 * back as latin1, the same bytes. The CLI sends its arguments as UTF-8 (what
 * the shell gave it), so `café` is the bytes 63 61 66 c3 a9 on the wire and
 * in the daemon. Code that shows such a name to a person (logs, metrics) or
 * hands it to the system (shm_open) converts it with bytesToText().
 *
 * Unlike nfqlb, which serves one connection at a time, every connection is
 * independent, bounded in size and time, and the number open is bounded by
 * closing the oldest unfinished one: idle, slow or hostile clients cost only
 * their own connection and cannot lock out a good client.
 */
// Not `import * as`: its helper reads every export, which on Node 24 loads node:util's streams and worker_threads (CLI start-up).
import net = require('node:net');
import { NfqlbError } from '../base/errors';
import { encodeRequest, KNOWN_KEYS, type ControlRequest } from './controlwire';
import { addressText, connectTo, listenAt, SocketError, type SocketAddress } from '../addon/sockets';

export type { SocketAddress } from '../addon/sockets';
export { DEFAULT_FLOW_ADDRESS, encodeRequest, flowAddress, type ControlRequest } from './controlwire';

export const DEFAULT_TRACE_ADDRESS = 'unix:nfqlb-trace';
/** nfqlb reads lines into 1024-byte buffers; a request is a handful of lines. */
export const MAX_LINE = 1024;
export const MAX_REQUEST = 16 * 1024;
/**
 * Time from accept to close for one connection, whatever it sends: a client
 * that trickles a byte at a time gains nothing. nfqlb's CLI sends its whole
 * request at once, so 2 s is ages for a good client.
 */
export const REQUEST_TIMEOUT_MS = 2000;
/**
 * Connections open at once. Past it the oldest connection that has not sent a
 * complete request is closed to make room, so a flood of idle clients delays
 * nobody: a good client's request is read as soon as it is accepted. Each
 * connection is a descriptor and a few KiB.
 */
export const MAX_CONNECTIONS = 4096;
/** Listen backlog asked for (the kernel caps it at net.core.somaxconn, 4096 by default). */
export const LISTEN_BACKLOG = 4096;


/**
 * Parses nfqlb's address syntax: `unix:NAME` (abstract socket "\0NAME", the
 * name as UTF-8 bytes), `tcp:IPv4:PORT`, `tcp:[IPv6]:PORT` (IP addresses
 * only, as nfqlb's getaddrinfo with AI_NUMERICHOST). Throws NfqlbError
 * NFQLB_ERR_ADDRESS.
 */
export function parseAddress(address: string): SocketAddress {
  if (address.startsWith('unix:')) {
    const name = Buffer.from(address.slice(5), 'utf8');
    if (name.length === 0 || name.length > 107 || name.includes(0)) {
      throw new NfqlbError(`Failed to parse address [${address}]: the unix name must be 1-107 bytes, no NUL`, 'NFQLB_ERR_ADDRESS');
    }
    return { unix: name };
  }
  if (address.startsWith('tcp:')) {
    const rest = address.slice(4);
    const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(rest) ?? /^([^:[\]]+):(\d+)$/.exec(rest);
    const port = m ? Number(m[2]) : NaN;
    // nfqlb resolves with AI_NUMERICHOST: an IP address, never a host name.
    if (m === null || net.isIP(m[1]) === 0 || !(port >= 1 && port <= 65535)) {
      throw new NfqlbError(`Failed to parse address [${address}]: use tcp:IPv4:PORT or tcp:[IPv6]:PORT`, 'NFQLB_ERR_ADDRESS');
    }
    return { host: m[1], port };
  }
  throw new NfqlbError(`Failed to parse address [${address}]: use unix:NAME, tcp:IPv4:PORT or tcp:[IPv6]:PORT`, 'NFQLB_ERR_ADDRESS');
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

  /**
   * The client half-closed (EOF). As in nfqlb's fgets() loop, a last line
   * without its newline still counts, so a final `eoc:` completes the
   * request. Returns true when the request is complete or refused (answer
   * it), false when it was cut off before `eoc:` (close without a reply, as
   * nfqlb does).
   */
  finish(): boolean {
    if (this.done) return true;
    if (this.buffered === '') return false;
    return this.push('\n');
  }

  private fail(why: string): boolean {
    this.error = why;
    this.done = true;
    return true;
  }
}

export interface ControlServerEvents {
  /**
   * Called once per complete request; must not throw (a throw or a rejection
   * becomes `FAIL: internal error`). May answer later (a promise): the daemon
   * with packet threads answers a change once every thread uses it, within a
   * bound it keeps itself.
   */
  handle(req: ControlRequest): ControlReply | Promise<ControlReply>;
  /** Called for refused or broken requests (logging). */
  refused?(why: string): void;
}

export interface ControlServer {
  /** Where it listens, as given (`unix:nfqlb`, `tcp:...`). */
  readonly address: string;
  /** Connections open now. */
  readonly connections: number;
  /** Connections closed to make room for newer ones since start. */
  readonly evicted: number;
  /** Stops listening and drops every open connection at once. */
  close(): Promise<void>;
}

export interface ControlServerOptions {
  /** Time from accept to close for one connection (default REQUEST_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Connections open at once before the oldest unfinished one is closed (default MAX_CONNECTIONS). */
  maxConnections?: number;
}

/**
 * Listens on `address` and serves requests. Resolves once listening; rejects
 * with NfqlbError NFQLB_ERR_CONTROL_LISTEN (one line saying what to do) or
 * NFQLB_ERR_ADDRESS.
 *
 * Every connection has `timeoutMs` from accept to close, whatever it sends
 * (a slow trickle does not extend it), and at most MAX_REQUEST bytes; a
 * request is answered as soon as it is complete, synchronously. When
 * `maxConnections` are open, accepting one more closes the oldest connection
 * still waiting for its request, without a reply: under a flood of idle
 * clients a good client is read at once, and only the flood's oldest
 * connections are cut.
 */
export async function startControlServer(address: string, events: ControlServerEvents, options: ControlServerOptions = {}): Promise<ControlServer> {
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const maxConnections = options.maxConnections ?? MAX_CONNECTIONS;
  const where = parseAddress(address);
  /** Every open connection, oldest first (a Set keeps insertion order). */
  const open = new Set<net.Socket>();
  /** Open connections whose request is not complete yet, oldest first. */
  const waiting = new Set<net.Socket>();
  let evicted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    if (open.size >= maxConnections) {
      // Answered connections are left alone (their reply may still be on its
      // way); they close at their deadline at the latest.
      const oldest = waiting.values().next().value;
      if (oldest !== undefined) {
        evicted++;
        oldest.destroy();
        open.delete(oldest);
        waiting.delete(oldest);
      }
    }
    open.add(sock);
    waiting.add(sock);
    const parser = new RequestParser();
    sock.setEncoding('latin1');
    const deadline = setTimeout(() => {
      if (!parser.done) events.refused?.('timeout: no complete request');
      sock.destroy();
    }, timeoutMs);
    sock.on('close', () => {
      clearTimeout(deadline);
      open.delete(sock);
      waiting.delete(sock);
    });
    sock.on('error', () => sock.destroy());
    const answer = (): void => {
      waiting.delete(sock);
      if (parser.error !== null) {
        events.refused?.(parser.error);
        sock.end(`${parser.error}\0`, 'latin1');
        return;
      }
      const send = (reply: ControlReply): void => {
        sock.end('json' in reply ? reply.json : `${reply.text}\0`, 'latin1');
      };
      const internal = (err: unknown): ControlReply => {
        events.refused?.(`internal error: ${(err as Error).message}`);
        return { text: 'FAIL: internal error' };
      };
      let reply: ControlReply | Promise<ControlReply>;
      try {
        reply = events.handle(parser.request);
      } catch (err) {
        reply = internal(err);
      }
      if (reply instanceof Promise) reply.then(send, (err: unknown) => send(internal(err)));
      else send(reply);
    };
    sock.on('data', (chunk: string) => {
      if (parser.done) return;
      if (parser.push(chunk)) answer();
    });
    sock.on('end', () => {
      if (parser.done) return;
      // EOF: a final `eoc:` without newline completes the request (nfqlb's
      // fgets returns the last partial line); anything else gets no reply.
      if (parser.finish()) answer();
      else sock.end();
    });
  });
  // Node's default would refuse connections past a cap; eviction above is the bound instead.
  server.maxConnections = Infinity;
  try {
    await listenAt(server, where, LISTEN_BACKLOG);
  } catch (err) {
    const what = addressText(where);
    const code = err instanceof NfqlbError ? err.errnoName : undefined;
    throw new NfqlbError(
      code === 'EADDRINUSE'
        ? `control socket ${what} is in use: another nfqlb daemon runs in this network namespace; stop it or set NFQLB_FLOW_ADDRESS`
        : `cannot listen on control socket ${what}: ${(err as Error).message}`,
      'NFQLB_ERR_CONTROL_LISTEN', { cause: err });
  }
  let closing: Promise<void> | null = null;
  return {
    address,
    get connections() {
      return open.size;
    },
    get evicted() {
      return evicted;
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
 * Sends one request (as UTF-8, the bytes the shell gave) and returns the raw
 * reply bytes, everything the server sent until it closed; an empty Buffer
 * when it closed without a reply. Throws NfqlbError NFQLB_ERR_CONNECT with
 * nfqlb's wording (`Connect failed. Connection refused`) when nobody
 * listens, NFQLB_ERR_TIMEOUT when the server does not close within
 * `timeoutMs` of the last byte.
 */
export async function sendRequest(address: string, req: ControlRequest, timeoutMs = 10000): Promise<Buffer> {
  const where = parseAddress(address);
  let sock: net.Socket;
  try {
    sock = await connectTo(where, timeoutMs);
  } catch (err) {
    const reason = err instanceof SocketError ? err.reason : (err as Error).message;
    throw new NfqlbError(`Connect failed. ${reason}`, 'NFQLB_ERR_CONNECT', { cause: err });
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let failed = false;
    sock.setTimeout(timeoutMs, () => {
      failed = true;
      sock.destroy();
      reject(new NfqlbError(`No reply from ${address} within ${timeoutMs} ms`, 'NFQLB_ERR_TIMEOUT'));
    });
    sock.on('data', (c: Buffer) => chunks.push(c));
    // A reset before the reply shows as an empty reply at close; after it, it changes nothing.
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    sock.write(encodeRequest(req), 'utf8');
  });
}

/**
 * A name or value as the daemon holds it (a latin1 "binary string", one
 * character per byte of the request) turned into text for a person or the
 * system: the bytes read as UTF-8. Identity for ASCII.
 */
export function bytesToText(binary: string): string {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(binary) ? binary : Buffer.from(binary, 'latin1').toString('utf8');
}

/** The reverse of bytesToText: text (an option from argv) as the binary string of its UTF-8 bytes. */
export function textToBytes(text: string): string {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(text) ? text : Buffer.from(text, 'utf8').toString('latin1');
}
