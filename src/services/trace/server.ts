/**
 * The trace server of the daemon.
 *
 * Protocol, as nfqlb's traceServerThread: a client connects to
 * `--trace_address` (default unix:nfqlb-trace), gets
 * `Trace active, mask=0x%08x\n` with the mask then in the `nfqlb-trace` shm,
 * and then every trace line until it disconnects. Anything the client sends
 * ends its connection. When the last client leaves, the shm mask is set to 0
 * again, as nfqlb does when its one client leaves; so a mask set by
 * `nfqlb trace` lasts only as long as somebody listens.
 *
 * Differences from nfqlb, on purpose:
 * - Several clients at once (nfqlb serves one, with a backlog of one); they
 *   all see the same lines, selected by the one mask in shm (the last
 *   `nfqlb trace` that set it wins). Past MAX_TRACE_CLIENTS a client gets
 *   one line saying so (refusedNotice) instead of a silent close.
 * - Names in trace lines are the bytes clients sent (latin1 binary strings,
 *   see ../control.ts); the socket is written as latin1.
 * - A client that reads slowly never blocks the daemon: lines are queued per
 *   client up to a limit (bufferLimit); what does not fit is dropped and
 *   counted, and once the client has caught up it gets one line
 *   `Trace: N lines dropped (this client reads too slowly)`.
 * - With no client, nothing is traced (nfqlb writes traces to stderr until
 *   its first client connects), so tracing costs nothing per packet then.
 * The per-packet texts are text.ts's; the server only carries lines.
 */
import * as net from 'node:net';
import { NfqlbError } from '../../base/errors';
import { countLines } from '../../base/lines';
import type { Logger } from '../../base/log';
import { listenAt } from '../../addon/sockets';
import type { TraceShm } from '../../addon/shm';
import { parseAddress } from '../control';
import { hex8, TRACE_LOG, TRACE_PER_PACKET } from './selection';

/** The first line a client gets (nfqlb's text, one newline). */
export function greeting(mask: number): string {
  return `Trace active, mask=${hex8(mask)}\n`;
}

/**
 * The one line a client gets instead of the greeting when MAX_TRACE_CLIENTS
 * are connected; the server then closes. `nfqlb trace` recognises it by
 * TRACE_REFUSED and exits non-zero.
 */
export function refusedNotice(max: number): string {
  return `${TRACE_REFUSED} ${max} trace clients are connected already; stop one of them and try again\n`;
}
export const TRACE_REFUSED = 'Trace refused:';

/** The line a slow client gets once it has caught up after `n` lines were dropped for it. */
export function droppedNotice(n: number): string {
  return `Trace: ${n} lines dropped (this client reads too slowly)\n`;
}

/** Default per-client queue limit: what a client may lag behind before lines are dropped for it. */
export const DEFAULT_CLIENT_BUFFER = 1024 * 1024;
/**
 * At most this many clients; each may hold up to bufferLimit bytes of the
 * daemon's memory. One more is told so in one line (refusedNotice) and closed.
 */
export const MAX_TRACE_CLIENTS = 64;
/** Listen backlog of the trace socket (nfqlb: 1). */
const TRACE_BACKLOG = 64;
/** How long close() lets clients take their last lines. */
const CLOSE_GRACE_MS = 200;
/** Queued text is written out at the end of the event-loop turn, or at once when it grows past this. */
const FLUSH_BYTES = 64 * 1024;

export interface TraceServerOptions {
  /** Bytes a client may have queued before lines are dropped for it (default DEFAULT_CLIENT_BUFFER). */
  bufferLimit?: number;
  /** Where connects and disconnects are logged (nfqlb logs them as warnings). */
  log?: Logger;
  /** Told the number of clients after each connect and disconnect (packet threads trace only while it is > 0). */
  onClients?: (count: number) => void;
}

interface Client {
  readonly sock: net.Socket;
  /** Lines dropped since the client last got everything. */
  dropped: number;
}

/**
 * The daemon's trace server. Start with TraceServer.start(); the mask is read
 * from (and, when the last client leaves, reset in) `shm`, which the daemon
 * owns: call close() before unmapping it.
 */
export class TraceServer {
  private readonly clients = new Set<Client>();
  private readonly limit: number;
  private readonly log: Logger | undefined;
  private readonly onClients: (count: number) => void;
  private pending = '';
  private flushTimer: NodeJS.Immediate | null = null;
  private closed = false;
  private dropped = 0;
  private closing: Promise<void> | null = null;
  /**
   * For pino.multistream (or any writer of whole lines): forwards log lines to
   * clients when the mask has TRACE_LOG. Log lines are text; trace lines are
   * latin1 binary strings (names as the bytes the client sent), so a log
   * line is turned into its UTF-8 bytes first.
   */
  readonly logStream = {
    write: (line: string): void => {
      if (this.clients.size === 0 || this.closed || (this.shm.mask & TRACE_LOG) === 0) return;
      // eslint-disable-next-line no-control-regex
      this.append(/^[\x00-\x7f]*$/.test(line) ? line : Buffer.from(line, 'utf8').toString('latin1'));
    },
  };

  private constructor(
    private readonly server: net.Server,
    readonly address: string,
    private readonly shm: TraceShm,
    options: TraceServerOptions,
  ) {
    this.limit = options.bufferLimit ?? DEFAULT_CLIENT_BUFFER;
    this.log = options.log;
    this.onClients = options.onClients ?? (() => {});
    server.on('connection', (sock) => this.accept(sock));
  }

  /**
   * Listens on `address` (unix:NAME or tcp:HOST:PORT), bound as nfqlb binds
   * it (see sockets.ts). Resolves once listening; rejects with NfqlbError
   * NFQLB_ERR_ADDRESS (bad address) or NFQLB_ERR_TRACE_LISTEN (address in
   * use, ...).
   */
  static async start(address: string, shm: TraceShm, options: TraceServerOptions = {}): Promise<TraceServer> {
    const where = parseAddress(address);
    const server = net.createServer();
    try {
      await listenAt(server, where, TRACE_BACKLOG);
    } catch (err) {
      const code = err instanceof NfqlbError ? err.errnoName : undefined;
      throw new NfqlbError(
        code === 'EADDRINUSE'
          ? `trace socket ${address} is in use: another nfqlb daemon runs in this network namespace; stop it or use --trace_address`
          : `cannot listen on trace socket ${address}: ${(err as Error).message}`,
        'NFQLB_ERR_TRACE_LISTEN', { cause: err });
    }
    return new TraceServer(server, address, shm, options);
  }

  /** Clients connected now. */
  get clientCount(): number {
    return this.clients.size;
  }

  /** Lines dropped for slow clients since start, summed over clients (a line dropped for two counts twice). */
  get droppedLines(): number {
    return this.dropped;
  }

  /** The mask in effect: the shm mask while a client listens, else 0. */
  get mask(): number {
    if (this.clients.size === 0 || this.closed) return 0;
    return this.shm.mask;
  }

  /**
   * The per-packet bits in effect (TRACE_PER_PACKET & mask); 0 when no
   * client listens. Read it once per batch: 0 → the untraced handler,
   * else the traced one with this value as the mask of packetTraceText().
   */
  get perPacketMask(): number {
    if (this.clients.size === 0 || this.closed) return 0;
    return (this.shm.mask & TRACE_PER_PACKET) >>> 0;
  }

  /** Whether a line for `bit` would go anywhere now. */
  enabled(bit: number): boolean {
    return (this.mask & bit) !== 0;
  }

  /** Sends `text` (whole lines, '\n'-terminated) to every client when the mask has `bit`. */
  trace(bit: number, text: string): void {
    if (this.clients.size === 0 || this.closed || (this.shm.mask & bit) === 0) return;
    this.append(text);
  }

  /** Sends whole lines already selected by the mask (a packet thread's per-packet lines) to every client. */
  traceLines(text: string): void {
    if (this.clients.size === 0 || this.closed) return;
    this.append(text);
  }

  /** Writes out queued lines now (they also go out by themselves at the end of the event-loop turn). */
  flush(): void {
    if (this.flushTimer !== null) {
      clearImmediate(this.flushTimer);
      this.flushTimer = null;
    }
    const chunk = this.pending;
    if (chunk === '') return;
    this.pending = '';
    let lines = -1;
    for (const c of this.clients) {
      const sock = c.sock;
      if (sock.destroyed) continue;
      if (sock.writableLength + chunk.length > this.limit) {
        if (lines < 0) lines = countLines(chunk);
        c.dropped += lines;
        this.dropped += lines;
        continue;
      }
      if (c.dropped > 0) this.sendNotice(c);
      sock.write(chunk, 'latin1');
    }
  }

  /**
   * Stops listening, sends what is queued, then closes every client (those
   * that do not take their last lines within CLOSE_GRACE_MS are cut off), and
   * sets the shm mask back to 0 if any client was connected. The shm is not
   * touched after this returns, so the caller may unmap it then. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.flush();
    if (this.clients.size > 0) this.resetMask();
    this.closed = true;
    const socks = [...this.clients].map((c) => c.sock);
    this.clients.clear();
    this.onClients(0);
    this.closing = new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const sock of socks) sock.end();
      setTimeout(() => {
        for (const sock of socks) sock.destroy();
      }, CLOSE_GRACE_MS).unref();
    });
    return this.closing;
  }

  private append(text: string): void {
    this.pending += text;
    if (this.pending.length >= FLUSH_BYTES) this.flush();
    else if (this.flushTimer === null) this.flushTimer = setImmediate(() => this.flush());
  }

  private sendNotice(c: Client): void {
    c.sock.write(droppedNotice(c.dropped));
    c.dropped = 0;
  }

  private accept(sock: net.Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    if (this.clients.size >= MAX_TRACE_CLIENTS) {
      // Said in a line rather than a silent close, so the client knows why.
      sock.on('error', () => sock.destroy());
      sock.end(refusedNotice(MAX_TRACE_CLIENTS));
      setTimeout(() => sock.destroy(), CLOSE_GRACE_MS).unref();
      this.log?.warn({ clients: this.clients.size }, 'trace client refused: too many clients');
      return;
    }
    // Lines queued before this client came are not for it.
    this.flush();
    const client: Client = { sock, dropped: 0 };
    this.clients.add(client);
    const mask = this.shm.mask;
    sock.write(greeting(mask));
    this.log?.warn({ mask: hex8(mask), clients: this.clients.size }, 'trace client connected');
    this.onClients(this.clients.size);
    sock.on('drain', () => {
      if (client.dropped > 0 && !sock.destroyed) this.sendNotice(client);
    });
    // nfqlb: "Any input should be a shutdown".
    sock.on('data', () => sock.destroy());
    sock.on('end', () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      if (!this.clients.delete(client)) return;
      if (this.clients.size === 0 && !this.closed) this.resetMask();
      this.onClients(this.clients.size);
      this.log?.warn({ clients: this.clients.size }, 'trace client closed');
    });
  }

  /** nfqlb sets the mask to 0 when its client leaves, so nothing stays traced for nobody. */
  private resetMask(): void {
    if (this.shm.buffer.byteLength >= 8) this.shm.mask = 0;
  }
}
