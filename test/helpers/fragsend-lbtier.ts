/**
 * Fragmented UDP datagrams made by hand (IPv4 and IPv6, valid checksums) and
 * a frame sender that puts each fragment out of the interface the test picks,
 * one at a time and in the order asked: the LB-tier e2e sprays the fragments
 * of one datagram over two load balancers.
 *
 * Node has no packet sockets, so the sender is a few lines of Python 3
 * (AF_PACKET; python3 is installed by scripts/setup.sh) running inside the
 * client namespace and fed one frame per line on stdin; it answers "ok" once
 * the frame is handed to the kernel, so the caller knows the order it left in.
 */
import type { ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import { KEY_LEN } from '../../src/packet/hashkey';
import { spawnInNs } from '../../testbed/testbed';

/** An address as 4 (IPv4) or 16 (IPv6) bytes. */
export function addrBytes(a: string): number[] {
  if (!a.includes(':')) return a.split('.').map(Number);
  const [head, tail] = a.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t].map((g) => parseInt(g, 16));
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

/** The 40-byte key of a UDP 5-tuple as nfqlb builds it: what decides its target. */
export function udpKey(src: string, dst: string, sport: number, dport: number): Uint8Array {
  const key = new Uint8Array(KEY_LEN);
  const mapped = (a: string): number[] => (a.includes(':') ? addrBytes(a) : [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...addrBytes(a)]);
  key.set(mapped(src), 0);
  key.set(mapped(dst), 16);
  key.set([17, 0, sport >> 8, sport & 0xff, dport >> 8, dport & 0xff], 34);
  return key;
}

/** Internet checksum (ones' complement sum of 16-bit words) of the concatenated parts. */
function inetChecksum(...parts: ArrayLike<number>[]): number {
  let sum = 0;
  let odd = -1;
  for (const p of parts) {
    for (let i = 0; i < p.length; i++) {
      if (odd < 0) odd = p[i];
      else {
        sum += (odd << 8) | p[i];
        odd = -1;
      }
    }
  }
  if (odd >= 0) sum += odd << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface Datagram {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  payload: Uint8Array;
  /** IPv4 id (16 bits) or IPv6 fragment ident (32 bits). */
  id: number;
  /** Fragment data bytes (a multiple of 8) of every fragment but the last. */
  chunk: number;
}

/** The UDP datagram (header with checksum, then payload) that `d` carries. */
function udpBytes(d: Datagram): Uint8Array {
  const v6 = d.src.includes(':');
  const len = 8 + d.payload.length;
  const udp = new Uint8Array(len);
  udp.set([d.sport >> 8, d.sport & 0xff, d.dport >> 8, d.dport & 0xff, len >> 8, len & 0xff, 0, 0]);
  udp.set(d.payload, 8);
  const pseudo = v6
    ? [...addrBytes(d.src), ...addrBytes(d.dst), 0, 0, len >> 8, len & 0xff, 0, 0, 0, 17]
    : [...addrBytes(d.src), ...addrBytes(d.dst), 0, 17, len >> 8, len & 0xff];
  let sum = inetChecksum(pseudo, udp);
  if (sum === 0) sum = 0xffff;
  udp[6] = sum >> 8;
  udp[7] = sum & 0xff;
  return udp;
}

/** The IP packets (fragments, in order) of datagram `d`. */
export function fragments(d: Datagram): Uint8Array[] {
  if (d.chunk % 8 !== 0 || d.chunk <= 0) throw new Error(`fragment chunk ${d.chunk} is not a positive multiple of 8`);
  const udp = udpBytes(d);
  const v6 = d.src.includes(':');
  const out: Uint8Array[] = [];
  for (let off = 0; off < udp.length; off += d.chunk) {
    const data = udp.subarray(off, Math.min(udp.length, off + d.chunk));
    const more = off + d.chunk < udp.length;
    if (v6) {
      const hdr = [
        0x60, 0, 0, 0, (8 + data.length) >> 8, (8 + data.length) & 0xff, 44, 64,
        ...addrBytes(d.src), ...addrBytes(d.dst),
        // Fragment header: next header UDP, offset in 8-byte units, M flag, 32-bit ident.
        17, 0, (off >> 8) & 0xff, (off & 0xf8) | (more ? 1 : 0),
        (d.id >>> 24) & 0xff, (d.id >>> 16) & 0xff, (d.id >>> 8) & 0xff, d.id & 0xff,
      ];
      out.push(Uint8Array.from([...hdr, ...data]));
    } else {
      const total = 20 + data.length;
      const frag = (more ? 0x2000 : 0) | (off >> 3);
      const hdr = [
        0x45, 0, total >> 8, total & 0xff, (d.id >> 8) & 0xff, d.id & 0xff, frag >> 8, frag & 0xff, 64, 17, 0, 0,
        ...addrBytes(d.src), ...addrBytes(d.dst),
      ];
      const sum = inetChecksum(hdr);
      hdr[10] = sum >> 8;
      hdr[11] = sum & 0xff;
      out.push(Uint8Array.from([...hdr, ...data]));
    }
  }
  return out;
}

const SENDER = `
import socket, sys
socks = {}
for line in sys.stdin:
    ifname, frame = line.split()
    s = socks.get(ifname)
    if s is None:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((ifname, 0))
        socks[ifname] = s
    s.send(bytes.fromhex(frame))
    sys.stdout.write('ok\\n')
    sys.stdout.flush()
`;

function macBytes(mac: string): number[] {
  return mac.split(':').map((b) => parseInt(b, 16));
}

/** Sends IP packets as Ethernet frames out of named interfaces of one namespace, in call order. */
export class FrameSender {
  private readonly child: ChildProcess;
  private readonly waiting: Array<() => void> = [];
  private failure: Error | null = null;
  private stderr = '';

  constructor(readonly ns: string) {
    this.child = spawnInNs(ns, 'python3', ['-u', '-c', SENDER], { stdio: ['pipe', 'pipe', 'pipe'] });
    readline.createInterface({ input: this.child.stdout! }).on('line', () => this.waiting.shift()?.());
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.child.once('exit', (code) => {
      this.failure = new Error(`the frame sender in ${ns} exited (${code}): ${this.stderr.trim()}`);
      for (const w of this.waiting.splice(0)) w();
    });
  }

  /** Sends `ip` out of `ifname` (from `srcMac` to `dstMac`); resolves once the kernel has it. */
  send(ifname: string, srcMac: string, dstMac: string, ip: Uint8Array): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    const type = (ip[0] >> 4) === 6 ? [0x86, 0xdd] : [0x08, 0x00];
    const frame = Buffer.from([...macBytes(dstMac), ...macBytes(srcMac), ...type, ...ip]);
    return new Promise<void>((resolve, reject) => {
      this.waiting.push(() => (this.failure === null ? resolve() : reject(this.failure)));
      this.child.stdin!.write(`${ifname} ${frame.toString('hex')}\n`);
    });
  }

  close(): void {
    this.child.stdin?.end();
  }
}
