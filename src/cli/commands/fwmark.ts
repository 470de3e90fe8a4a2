/**
 * Debug commands: `fwmark` (which target would a 5-tuple get) and
 * `primebelow` (the M that init would use). Output is nfqlb 1.2.0's, see
 * reference/cli/fwmark-primebelow.txt.
 */
import { NfqlbError, UsageError } from '../../base/errors';
import { hashKey, hashKeyAddresses, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, tupleKey } from '../../packet/hashkey';
import { primeBelow } from '../../tables/maglev';
import { closeTable, openTable } from '../../tables/tablefile';
import { out, type NfqlbCommand, type Options } from '../command';
import { atoi } from '../../base/catoi';
import { inetPton6 } from '../../base/inet';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

const PROTOCOLS: Record<string, number> = { tcp: IPPROTO_TCP, udp: IPPROTO_UDP, sctp: IPPROTO_SCTP };

/**
 * nfqlb's adrParse for --src/--dst: `[v6]:port`, or `v4:port` which becomes
 * `[::ffff:v4]:port`. Returns the 16 address bytes and the port; throws
 * UsageError with nfqlb's texts.
 */
export function parseAddrPort(text: string): { addr: Uint8Array; port: number } {
  if (text.length > 60) throw new UsageError(`Address too long [${text}]`);
  let host: string;
  let port: string;
  if (text.includes('[')) {
    const m = /^\[([^\]]*)\]:([0-9]*)$/.exec(text);
    if (m === null) throw new UsageError(`Parse address failed [${text}]`);
    [, host, port] = m;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) throw new UsageError(`No port in [${text}]`);
    host = `::ffff:${text.slice(0, colon)}`;
    port = text.slice(colon + 1);
  }
  const addr = new Uint8Array(16);
  const valid = inetPton6(host, addr);
  // nfqlb reads an empty port (`192.0.2.1:`) as 0.
  const portNum = /^[0-9]{0,5}$/.test(port) ? Number(port) : NaN;
  if (!valid || !(portNum <= 65535)) throw new UsageError(`Parse address failed [${text}]`);
  return { addr, port: portNum };
}

export const fwmarkCommands: NfqlbCommand[] = [
  {
    name: 'fwmark',
    describe: 'Print hash and fwmark for the specified addresses for debug',
    usage: 'fwmark [--shm=] [--proto=tcp|udp|sctp] --src=addr:port --dst=addr:port\n  Print hash and fwmark for the specified addresses for debug',
    options: {
      shm: str('Shared memory. Required for fwmark printout', { values: 'shm' }),
      proto: str('Protocol, tcp|udp|sctp. NOT specified -> address-only hash', { values: { words: ['tcp', 'udp', 'sctp'] } }),
      src: str('Source addr:port, e.g "[1000::80]:80"', { demandOption: true }),
      dst: str('Destination addr:port', { demandOption: true }),
      hash_mode: str('Load balance with a different hash mode. 0: Tuple-5, 1: SCTP Ports only. default=1', { default: '1', values: { words: ['0', '1'] } }),
    },
    run(args) {
      const src = parseAddrPort(String(args.src));
      const dst = parseAddrPort(String(args.dst));
      const hashMode = atoi(args.hash_mode === undefined ? '1' : String(args.hash_mode)) >>> 0;

      let hash: number;
      if (args.proto !== undefined) {
        const proto = PROTOCOLS[String(args.proto).toLowerCase()];
        if (proto === undefined) throw new UsageError(`Failed to parse protocol [${String(args.proto)}]`);
        hash = hashKey(tupleKey(src.addr, src.port, dst.addr, dst.port, proto), hashMode);
      } else {
        hash = hashKeyAddresses(tupleKey(src.addr, src.port, dst.addr, dst.port, 0));
      }

      if (args.shm === undefined) {
        out(`{ "hash": ${hash} }\n`);
        return;
      }
      const name = String(args.shm);
      let table;
      try {
        table = openTable(name, false);
      } catch (err) {
        if (err instanceof NfqlbError && err.code !== 'NFQLB_ERR_SHM_FORMAT') {
          throw new UsageError(`FAILED mapSharedData: ${name}`, 1, 'NFQLB_ERR_USAGE', { cause: err });
        }
        throw err;
      }
      try {
        const index = hash % table.M;
        const activeIndex = table.lookup[index];
        const fwmark = activeIndex >= 0 ? table.active[activeIndex] : -1;
        out(`{ "hash": ${hash}, "lookupindex": ${index}, "activeindex": ${activeIndex}, "fwmark": ${fwmark} }\n`);
      } finally {
        closeTable(table);
      }
    },
  },
  {
    name: 'primebelow',
    describe: 'Give a prime below the passed number',
    usage: 'primebelow <n>\n  Give a prime below the passed number',
    options: {},
    run(args) {
      if (args._.length === 0) return;
      try {
        out(`${primeBelow(atoi(args._[0]))}\n`);
      } catch (err) {
        if (err instanceof NfqlbError && err.code === 'NFQLB_ERR_RANGE') throw new UsageError(err.message, 1, 'NFQLB_ERR_USAGE', { cause: err });
        throw err;
      }
    },
  },
];
