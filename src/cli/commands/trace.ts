/**
 * `nfqlb trace` and `nfqlb loglevel`: clients of a running daemon through the
 * `nfqlb-trace` shm ({level, tracemask}) and the trace socket.
 * The trace-flow commands are in flow.ts (they use the control socket).
 */
import type * as net from 'node:net';
import { atoi } from '../../base/catoi';
import { DEFAULT_TRACE_ADDRESS, parseAddress } from '../../services/control';
import { NfqlbError, UsageError } from '../../base/errors';
import { closeTraceShm, openOrCreateTraceShm, TRACE_SHM } from '../../addon/shm';
import { connectTo, SocketError } from '../../addon/sockets';
import { hex8, parseMask, parseSelection, TRACE_REFUSED } from '../../services/trace';
import { out, type NfqlbCommand, type ParsedArgs, type Options } from '../command';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

/** Tests point the commands at a private shm; the daemon always uses nfqlb-trace. */
const traceShmOption = str('Name of the trace shm (for tests)', { default: TRACE_SHM, hidden: true });

function opt(args: ParsedArgs, name: string): string | undefined {
  const v = args[name];
  return v === undefined ? undefined : String(v);
}

/** How long a connect may wait while the trace server's listen backlog is full. */
const CONNECT_TIMEOUT_MS = 10000;

/**
 * Connects to the trace server and copies what it sends to stdout until the
 * server closes (resolves 0) or SIGINT/SIGTERM (the socket is closed, which
 * makes the daemon reset the mask; resolves 0). Rejects with nfqlb's
 * `Trace client connect to ADDR: REASON` when nobody listens, and with the
 * server's line when it refuses the client (too many clients).
 */
async function streamTrace(address: string): Promise<number> {
  let sock: net.Socket;
  try {
    sock = await connectTo(parseAddress(address), CONNECT_TIMEOUT_MS);
  } catch (err) {
    const reason = err instanceof SocketError ? err.reason : (err as Error).message;
    throw new NfqlbError(`Trace client connect to ${address}: ${reason}`, 'NFQLB_ERR_CONNECT', { cause: err });
  }
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    /** Bytes before the first newline are held back until we know they are not a refusal. */
    let head: Buffer | null = Buffer.alloc(0);
    const finish = (rc: number, err?: NfqlbError): void => {
      if (settled) return;
      settled = true;
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      sock.destroy();
      if (err !== undefined) reject(err);
      else resolve(rc);
    };
    const onSignal = (): void => finish(0);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const copy = (chunk: Buffer): void => {
      // Keep memory bounded when stdout is slower than the trace.
      if (!process.stdout.write(chunk)) {
        sock.pause();
        process.stdout.once('drain', () => sock.resume());
      }
    };
    const refused = (first: Buffer): boolean => {
      const line = first.toString('utf8').replace(/\n$/, '');
      if (!line.startsWith(TRACE_REFUSED)) return false;
      finish(1, new NfqlbError(line, 'NFQLB_ERR_TRACE_REFUSED'));
      return true;
    };
    sock.on('data', (chunk: Buffer) => {
      if (head === null) {
        copy(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(0x0a);
      if (nl < 0 && head.length < 256) return;
      const all = head;
      head = null;
      if (!refused(all.subarray(0, nl < 0 ? all.length : nl + 1))) copy(all);
    });
    // The daemon went away: the trace is over.
    sock.on('error', () => finish(0));
    sock.on('close', () => {
      if (head !== null && head.length > 0) {
        const all = head;
        head = null;
        if (refused(all)) return;
        process.stdout.write(all);
      }
      finish(0);
    });
  });
}

export const traceCommands: NfqlbCommand[] = [
  {
    name: 'trace',
    describe: 'Initiate trace and direct output to stdout',
    usage: 'trace [options]\n  Initiate trace and direct output to stdout',
    options: {
      mask: str('Trace mask (32-bit). Most for debug'),
      selection: str('Trace selection. A comma separated list of;\n     log,packet,frag,flow-conf,sctp,target,flows', {
        values: { words: ['log', 'packet', 'frag', 'flow-conf', 'sctp', 'target', 'flows'], list: true },
      }),
      trace_address: str('Trace server address', { default: DEFAULT_TRACE_ADDRESS }),
      trace_shm: traceShmOption,
    },
    async run(args) {
      const maskOpt = opt(args, 'mask');
      const selection = opt(args, 'selection');
      if (maskOpt === undefined && selection === undefined) throw new UsageError('Specify any of --mask or --selection');
      if (maskOpt !== undefined && selection !== undefined) throw new UsageError('Specify any ONE of --mask or --selection');
      const mask = selection !== undefined ? parseSelection(selection) : parseMask(maskOpt ?? '');
      out(`Mask=${hex8(mask)}\n`);
      const address = String(args.trace_address);
      parseAddress(address); // A bad address fails before the shm is touched.
      // The mask stays set when we leave, as in nfqlb: the daemon clears it
      // when its last trace client disconnects. As nfqlb's logConfigShm, the
      // shm is created (level 5, mask 0) when no daemon has made it yet.
      const shm = openOrCreateTraceShm(String(args.trace_shm));
      try {
        shm.mask = mask;
      } finally {
        closeTraceShm(shm);
      }
      return streamTrace(address);
    },
  },
  {
    name: 'loglevel',
    describe: 'Set log level in shared mem',
    usage: 'loglevel [level]\n  Set log level in shared mem',
    options: { trace_shm: traceShmOption },
    run(args) {
      // nfqlb's logConfigShm: works without a daemon, creating the shm (level 5, mask 0, 0600).
      const shm = openOrCreateTraceShm(String(args.trace_shm));
      try {
        // nfqlb: LOG_SET_LEVEL(atoi(argv[0])), then print the level now in effect.
        if (args._.length > 0) shm.level = atoi(args._[0]);
        out(`loglevel=${shm.level}\n`);
      } finally {
        closeTraceShm(shm);
      }
    },
  },
];
