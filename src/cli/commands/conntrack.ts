/**
 * `nfqlb conntrack [--proto=tcp|udp|sctp --src=addr:port --dst=addr:port]`:
 * the connection table of a daemon started with --conntrack (an extension:
 * nfqlb has none). Prints the daemon's JSON: entries, capacity and counters
 * summed over its tables, and, for a 5-tuple given as `nfqlb fwmark` takes
 * it, the remembered choice (fwmark, slot, idle time) or that there is none.
 */
import { flowAddress, sendRequest, type ControlRequest } from '../../services/control';
import { UsageError } from '../../base/errors';
import { inetNtop6 } from '../../base/inet';
import { EXTENSION, out, type NfqlbCommand, type Options } from '../command';
import { parseAddrPort } from './fwmark';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

export const conntrackCommands: NfqlbCommand[] = [
  {
    name: 'conntrack',
    describe: `Show the connection table of a daemon started with --conntrack (${EXTENSION} only)`,
    usage: 'conntrack [--proto=tcp|udp|sctp --src=addr:port --dst=addr:port]\n  Show the connection table (entries, counters) and the remembered target of one connection',
    options: {
      proto: str('Protocol of the connection to look up, tcp|udp|sctp', { values: { words: ['tcp', 'udp', 'sctp'] } }),
      src: str('Its source addr:port, e.g. "192.0.2.7:40000" or "[2001:db8::7]:40000"'),
      dst: str('Its destination addr:port'),
    },
    async run(args) {
      const req: ControlRequest = { action: 'conntrack' };
      const given = [args.proto, args.src, args.dst].filter((v) => v !== undefined).length;
      if (given !== 0 && given !== 3) throw new UsageError('Give all of --proto, --src and --dst to look up a connection, or none for the table alone');
      if (given === 3) {
        const proto = String(args.proto).toLowerCase();
        if (!['tcp', 'udp', 'sctp'].includes(proto)) throw new UsageError(`Invalid --proto=${String(args.proto)}: use tcp, udp or sctp`);
        const src = parseAddrPort(String(args.src));
        const dst = parseAddrPort(String(args.dst));
        Object.assign(req, { protocols: proto, srcs: inetNtop6(src.addr), sports: String(src.port), dsts: inetNtop6(dst.addr), dports: String(dst.port) });
      }
      const address = flowAddress();
      const reply = await sendRequest(address, req);
      if (reply.length === 0) throw new UsageError(`No reply from the load balancer at ${address}: it closed the connection; check that it runs and its log`, 255);
      const text = reply.toString('utf8').replace(/\0$/, '');
      out(`${text}\n`);
      return text.startsWith('FAIL') ? 255 : 0;
    },
  },
];
