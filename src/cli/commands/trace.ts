/**
 * `nfqlb trace` and `nfqlb loglevel`: clients of a running daemon through the
 * `nfqlb-trace` shm ({level, tracemask}) and the trace socket (SPEC.md §8).
 * The trace-flow commands are in flow.ts (they use the control socket).
 */
import * as net from 'node:net';
import type { Options } from 'yargs';
import { atoi } from '../../catoi';
import { DEFAULT_TRACE_ADDRESS, parseAddress } from '../../control';
import { NfqlbError, UsageError } from '../../errors';
import { closeTraceShm, openTraceShm, TRACE_SHM } from '../../shm';
import { hex8, parseMask, parseSelection } from '../../trace';
import { out, type NfqlbCommand, type ParsedArgs } from '../command';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

/** Tests point the commands at a private shm; the daemon always uses nfqlb-trace. */
const traceShmOption = str('Name of the trace shm (for tests)', { default: TRACE_SHM, hidden: true });

function opt(args: ParsedArgs, name: string): string | undefined {
  const v = args[name];
  return v === undefined ? undefined : String(v);
}

/** strerror() texts, as nfqlb prints them after a failed connect(). */
function connectReason(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
    case 'ENOENT':
      return 'Connection refused';
    case 'ETIMEDOUT':
      return 'Connection timed out';
    case 'EHOSTUNREACH':
      return 'No route to host';
    case 'ENETUNREACH':
      return 'Network is unreachable';
    default:
      return err.message;
  }
}

/**
 * Connects to the trace server and copies what it sends to stdout until the
 * server closes (resolves 0) or SIGINT/SIGTERM (the socket is closed, which
 * makes the daemon reset the mask; resolves 0). Rejects with nfqlb's
 * `Trace client connect to ADDR: REASON` when nobody listens.
 */
function streamTrace(address: string): Promise<number> {
  const where = parseAddress(address);
  return new Promise<number>((resolve, reject) => {
    let connected = false;
    let settled = false;
    const sock = net.connect(where);
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
    sock.on('connect', () => {
      connected = true;
    });
    sock.on('data', (chunk: Buffer) => {
      // Keep memory bounded when stdout is slower than the trace.
      if (!process.stdout.write(chunk)) {
        sock.pause();
        process.stdout.once('drain', () => sock.resume());
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected) finish(1, new NfqlbError(`Trace client connect to ${address}: ${connectReason(err)}`, 'NFQLB_ERR_CONNECT', err.code));
      else finish(0); // The daemon went away: the trace is over.
    });
    sock.on('close', () => finish(0));
  });
}

export const traceCommands: NfqlbCommand[] = [
  {
    name: 'trace',
    describe: 'Initiate trace and direct output to stdout',
    usage: 'trace [options]\n  Initiate trace and direct output to stdout',
    options: {
      mask: str('Trace mask (32-bit). Most for debug'),
      selection: str('Trace selection. A comma separated list of;\n     log,packet,frag,flow-conf,sctp,target,flows'),
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
      // when its last trace client disconnects.
      const shm = openTraceShm(String(args.trace_shm));
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
      const shm = openTraceShm(String(args.trace_shm));
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
