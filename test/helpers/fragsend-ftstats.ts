/**
 * Fragmented UDP for the end-to-end tests: a sender of hand-cut IPv4/IPv6
 * fragments (raw sockets, python3, run in the gateway namespace) and a UDP
 * sink for the target namespaces that reports every datagram it receives,
 * checked byte for byte. Every datagram's UDP payload is its 8-byte sequence
 * number followed by bytes (seq + i) & 0xff, so a datagram put together from
 * the wrong pieces cannot pass.
 */
import type { ChildProcess } from 'node:child_process';
import { nsExec, spawnInNs } from '../../testbed/testbed';

/** One thing to send. */
export type FragItem =
  /** A whole UDP datagram cut into fragments of `fragData` bytes, sent in order; `size` = UDP payload bytes (≥ 8). */
  | { kind: 'whole'; sport: number; dport: number; id: number; seq: number; size: number }
  /** Only the first fragment of such a datagram (MF set): it never completes. */
  | { kind: 'first'; sport: number; dport: number; id: number; seq: number; size: number }
  /** A later fragment (offset `offset`, MF set, `size` zero bytes) of a datagram whose first fragment never comes. */
  | { kind: 'later'; id: number; offset: number; size: number };

export interface FragSendSpec {
  family: 4 | 6;
  src: string;
  dst: string;
  /** Bytes of datagram per fragment (multiple of 8); default 1200. */
  fragData?: number;
  items: FragItem[];
}

/** UDP payload bytes for a datagram of `n` fragments of `fragData` bytes (the UDP header rides in the first). */
export function payloadForFragments(n: number, fragData = 1200): number {
  return (n - 1) * fragData + 300 - 8;
}

const FRAGSEND_PY = `
import errno, json, socket, struct, sys, time
spec = json.load(sys.stdin)
v6 = spec['family'] == 6
src, dst = spec['src'], spec['dst']
FRAG = spec.get('fragData', 1200)
def csum(b):
    if len(b) % 2: b += b'\\0'
    x = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while x >> 16: x = (x & 0xffff) + (x >> 16)
    return (~x) & 0xffff
fam = socket.AF_INET6 if v6 else socket.AF_INET
s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
sa = socket.inet_pton(fam, src)
da = socket.inet_pton(fam, dst)
sent = 0
def send(pkt):
    global sent
    while True:
        try:
            s.sendto(pkt, (dst, 0))
            sent += 1
            return
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.EAGAIN):
                time.sleep(0.001)
                continue
            raise
def datagram(sport, dport, seq, size):
    payload = struct.pack('!Q', seq) + bytes(((seq + i) & 0xff) for i in range(size - 8))
    ulen = 8 + len(payload)
    hdr = struct.pack('!HHHH', sport, dport, ulen, 0)
    pseudo = sa + da + (struct.pack('!I3xB', ulen, 17) if v6 else struct.pack('!xBH', 17, ulen))
    c = csum(pseudo + hdr + payload) or 0xffff
    return struct.pack('!HHHH', sport, dport, ulen, c) + payload
def fragment(ident, off, data, more):
    if v6:
        fh = struct.pack('!BBHI', 17, 0, (off & 0xfff8) | (1 if more else 0), ident)
        return struct.pack('!IHBB', 0x60000000, 8 + len(data), 44, 64) + sa + da + fh + data
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(data), ident & 0xffff, (0x2000 if more else 0) | (off >> 3), 64, 17, 0, sa, da)
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + data
for it in spec['items']:
    if it['kind'] == 'later':
        send(fragment(it['id'], it['offset'], bytes(it['size']), True))
        continue
    d = datagram(it['sport'], it['dport'], it['seq'], it['size'])
    chunks = [d[i:i + FRAG] for i in range(0, len(d), FRAG)]
    if it['kind'] == 'first':
        send(fragment(it['id'], 0, chunks[0], True))
        continue
    for k, c in enumerate(chunks):
        send(fragment(it['id'], k * FRAG, c, k < len(chunks) - 1))
print(json.dumps({'sent': sent}))
`;

/** Sends the spec's fragments from namespace `ns` (raw sockets: root); returns the packets sent. */
export function sendFragments(ns: string, spec: FragSendSpec): number {
  const r = nsExec(ns, 'python3', ['-c', FRAGSEND_PY], { input: JSON.stringify(spec), timeoutMs: 120000 });
  return (JSON.parse(r.stdout) as { sent: number }).sent;
}

/** One datagram a sink received. */
export interface Received {
  family: 4 | 6;
  seq: number;
  len: number;
  /** Every byte as the sender wrote it. */
  ok: boolean;
}

const SINK_JS = `
const dgram = require('node:dgram');
const [vip4, vip6, port] = process.argv.slice(1);
let bound = 0;
for (const [type, addr] of [['udp4', vip4], ['udp6', vip6]]) {
  const s = dgram.createSocket({ type, recvBufferSize: 8 << 20 });
  s.on('message', (m) => {
    let seq = -1, ok = m.length >= 8;
    if (ok) {
      seq = Number(m.readBigUInt64BE(0));
      for (let i = 8; i < m.length; i++) if (m[i] !== ((seq + i - 8) & 0xff)) { ok = false; break; }
    }
    process.stdout.write(JSON.stringify({ family: type === 'udp4' ? 4 : 6, seq, len: m.length, ok }) + '\\n');
  });
  s.bind(Number(port), addr, () => { if (++bound === 2) process.stdout.write('listening\\n'); });
}
`;

/** A UDP sink on vip4:port and vip6:port inside a target namespace. */
export class UdpSink {
  readonly received: Received[] = [];
  private buffered = '';
  private listening = false;

  private constructor(readonly name: string, readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      this.buffered += d;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        if (line === 'listening') this.listening = true;
        else if (line !== '') this.received.push(JSON.parse(line) as Received);
      }
    });
  }

  /** Starts the sink in `ns` (registered: cleanupAll kills it) and waits until both sockets are bound. */
  static async start(name: string, ns: string, vip4: string, vip6: string, port: number): Promise<UdpSink> {
    const sink = new UdpSink(name, spawnInNs(ns, process.execPath, ['-e', SINK_JS, vip4, vip6, `${port}`]));
    const end = Date.now() + 15000;
    while (!sink.listening) {
      if (sink.child.exitCode !== null || Date.now() > end) throw new Error(`UDP sink in ${ns} did not start`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return sink;
  }
}
