/**
 * Fragmented UDP for the end-to-end tests: datagrams cut into IPv4/IPv6
 * fragments by hand (so the order, and which fragments are sent at all, is
 * the test's choice), sent as they are from a namespace with raw sockets
 * (python3's standard library: IPPROTO_RAW, the kernel adds no header), and a
 * UDP sink in each target namespace that checks every byte and reports one
 * line per datagram.
 *
 * A datagram's payload starts with its 32-bit tag; byte i is (tag + i) & 0xff
 * after that, so a datagram put together from the wrong pieces cannot pass.
 * Also `nfqlb stats` of either implementation, for the fragment statistics.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { NFQLB_BIN } from './cli';
import { nsExec, spawnInNs } from './netns';
import { ORIGINAL } from './skip';

function addr4(a: string): number[] {
  return a.split('.').map(Number);
}

function addr6(a: string): number[] {
  const [head, tail] = a.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t].map((g) => parseInt(g, 16));
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

/** Internet checksum (RFC 1071) of `bytes`, starting from `sum`. */
function checksum(bytes: number[], sum = 0): number {
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i] << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface Datagram {
  family: 4 | 6;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Identifies the datagram at the receiver (first 4 payload bytes). */
  tag: number;
  /** Fragment id (IPv4: 16 bits, IPv6: 32 bits). */
  fragId: number;
  /** Number of fragments, ≥ 2. */
  parts: number;
  /** Bytes of IP payload per fragment (a multiple of 8), default 1000. */
  fragBytes?: number;
}

/** UDP payload bytes of `d` (what its sink reports as the length): the last fragment is 4 bytes short, not a multiple of 8. */
export function payloadLength(d: Datagram): number {
  return d.parts * (d.fragBytes ?? 1000) - 8 - 4;
}

/** The UDP payload of `d`: tag, then (tag + i) & 0xff. */
export function payloadOf(d: Datagram): number[] {
  const size = payloadLength(d);
  const p = [d.tag >>> 24, (d.tag >>> 16) & 0xff, (d.tag >>> 8) & 0xff, d.tag & 0xff];
  for (let i = 4; i < size; i++) p.push((d.tag + i) & 0xff);
  return p;
}

/** The fragments of `d`, first to last (send them in any order, or only some of them). */
export function fragmentsOf(d: Datagram): Uint8Array[] {
  const fragBytes = d.fragBytes ?? 1000;
  if (fragBytes % 8 !== 0 || d.parts < 2) throw new Error('fragBytes must be a multiple of 8 and parts ≥ 2');
  const payload = payloadOf(d);
  const udpLen = 8 + payload.length;
  const v6 = d.family === 6;
  const src = v6 ? addr6(d.src) : addr4(d.src);
  const dst = v6 ? addr6(d.dst) : addr4(d.dst);
  const pseudo = v6
    ? [...src, ...dst, 0, 0, udpLen >> 8, udpLen & 0xff, 0, 0, 0, 17]
    : [...src, ...dst, 0, 17, udpLen >> 8, udpLen & 0xff];
  const udp = [d.sport >> 8, d.sport & 0xff, d.dport >> 8, d.dport & 0xff, udpLen >> 8, udpLen & 0xff, 0, 0, ...payload];
  let sum = checksum([...pseudo, ...udp]);
  if (sum === 0) sum = 0xffff;
  udp[6] = sum >> 8;
  udp[7] = sum & 0xff;
  const out: Uint8Array[] = [];
  for (let off = 0; off < udp.length; off += fragBytes) {
    const chunk = udp.slice(off, off + fragBytes);
    const more = off + fragBytes < udp.length;
    const fo = off / 8;
    if (v6) {
      const frag = [17, 0, (fo >> 5) & 0xff, ((fo << 3) & 0xf8) | (more ? 1 : 0), d.fragId >>> 24, (d.fragId >>> 16) & 0xff, (d.fragId >>> 8) & 0xff, d.fragId & 0xff];
      const plen = frag.length + chunk.length;
      out.push(Uint8Array.from([0x60, 0, 0, 0, plen >> 8, plen & 0xff, 44, 64, ...src, ...dst, ...frag, ...chunk]));
    } else {
      const len = 20 + chunk.length;
      const flags = (more ? 0x2000 : 0) | fo;
      const hdr = [0x45, 0, len >> 8, len & 0xff, (d.fragId >> 8) & 0xff, d.fragId & 0xff, flags >> 8, flags & 0xff, 64, 17, 0, 0, ...src, ...dst];
      const c = checksum(hdr);
      hdr[10] = c >> 8;
      hdr[11] = c & 0xff;
      out.push(Uint8Array.from([...hdr, ...chunk]));
    }
  }
  return out;
}

/**
 * Reads "<4|6> <dst> <hex>" lines and sends each packet as it is. A full
 * socket buffer (a flood) is waited out, not counted as sent.
 */
const SEND_PY = `
import errno, socket, sys, time
s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
for s in (s4, s6):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
n = 0
for line in sys.stdin:
    fam, dst, hexpkt = line.split()
    pkt = bytes.fromhex(hexpkt)
    while True:
        try:
            if fam == '4':
                s4.sendto(pkt, (dst, 0))
            else:
                s6.sendto(pkt, (dst, 0, 0, 0))
            break
        except OSError as e:
            if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                raise
            time.sleep(0.001)
    n += 1
print(n)
`;

/** Sends `packets` (IP packets, in this order) from namespace `ns` (raw sockets: root); returns how many were sent. */
export function sendPackets(ns: string, packets: Uint8Array[]): number {
  const lines = packets.map((p) => {
    const v6 = p[0] >> 4 === 6;
    const dst = v6
      ? Array.from({ length: 8 }, (_, i) => ((p[24 + 2 * i] << 8) | p[25 + 2 * i]).toString(16)).join(':')
      : Array.from(p.subarray(16, 20)).join('.');
    return `${v6 ? 6 : 4} ${dst} ${Buffer.from(p).toString('hex')}\n`;
  });
  const r = nsExec(ns, 'python3', ['-c', SEND_PY], { input: lines.join(''), timeoutMs: 120000 });
  return Number(r.stdout.trim());
}

/** Prints "tag length ok" per datagram received on `port` of the given addresses; "listening" once bound. */
const SINK_JS = `
const dgram = require('node:dgram');
const [port, ...addrs] = process.argv.slice(1);
let bound = 0;
for (const a of addrs) {
  const s = dgram.createSocket({ type: a.includes(':') ? 'udp6' : 'udp4', ipv6Only: a.includes(':'), recvBufferSize: 8 << 20 });
  s.on('message', (m) => {
    const tag = m.length >= 4 ? m.readUInt32BE(0) : -1;
    let ok = m.length >= 4;
    for (let i = 4; ok && i < m.length; i++) if (m[i] !== ((tag + i) & 0xff)) ok = false;
    process.stdout.write(tag + ' ' + m.length + ' ' + (ok ? 1 : 0) + '\\n');
  });
  s.bind(Number(port), a, () => { if (++bound === addrs.length) process.stdout.write('listening\\n'); });
}
`;

export interface Received {
  tag: number;
  /** UDP payload bytes. */
  length: number;
  /** Every byte as the sender wrote it. */
  ok: boolean;
}

/** A UDP sink in one namespace. */
export class UdpSink {
  readonly received: Received[] = [];
  private buffered = '';
  private readonly ready: Promise<void>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    let listening: () => void;
    let failed: (err: Error) => void;
    this.ready = new Promise((resolve, reject) => {
      listening = resolve;
      failed = reject;
    });
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      this.buffered += d;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        if (line === 'listening') listening();
        else {
          const [tag, length, ok] = line.split(' ').map(Number);
          this.received.push({ tag, length, ok: ok === 1 });
        }
      }
    });
    child.once('exit', (code) => failed(new Error(`UDP sink ${name} exited (${code})`)));
  }

  /** Resolves once bound. */
  listening(): Promise<void> {
    return this.ready;
  }
}

/** Where a tagged datagram arrived (sink names, one per copy), and whether every copy was whole. */
export interface Arrival {
  targets: string[];
  whole: boolean;
}

/** Every tag the sinks received so far, with where it arrived. */
export function arrivalsAt(sinks: readonly UdpSink[]): Map<number, Arrival> {
  const m = new Map<number, Arrival>();
  for (const s of sinks) {
    for (const r of s.received) {
      const e = m.get(r.tag) ?? { targets: [], whole: true };
      e.targets.push(s.name);
      e.whole &&= r.ok;
      m.set(r.tag, e);
    }
  }
  return m;
}

/** Starts a UDP sink in `ns` (registered: cleanupAll kills it) on `port` of `addrs`; resolves once it listens. */
export async function startUdpSink(name: string, ns: string, port: number, addrs: string[]): Promise<UdpSink> {
  const sink = new UdpSink(name, spawnInNs(ns, process.execPath, ['-e', SINK_JS, `${port}`, ...addrs]));
  await sink.listening();
  return sink;
}

/** `nfqlb stats --ft_shm=name` of the original (NFQLB_ORIGINAL) or of ours (bin/nfqlb): exit code and text. */
export function nfqlbStats(impl: 'original' | 'ours', name: string): { rc: number; stdout: string } {
  const argv = impl === 'original' ? [ORIGINAL, 'stats', `--ft_shm=${name}`] : [process.execPath, NFQLB_BIN, 'stats', `--ft_shm=${name}`];
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'latin1', timeout: 20000 });
  return { rc: r.status ?? -1, stdout: r.stdout };
}
