/**
 * The trace server (in-process, on a private abstract socket and a private
 * trace shm), nfqlb's per-packet trace texts on hand-made packets, and the
 * `trace` / `loglevel` commands through main().
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { parseAddress } from '../../../../src/services/control';
import { NfqlbError } from '../../../../src/base/errors';
import { flowCmdFromArgs } from '../../../../src/flows/fields';
import { FlowSet } from '../../../../src/flows/flowset';
import { MaglevTable } from '../../../../src/tables/maglev';
import { Pipeline, REASON_FRAGMENT_HIT, REASON_FRAGMENT_LOST, REASON_FRAGMENT_STORED, REASON_NO_FLOW, REASON_NO_TARGET, REASON_TARGET, type PipelineOptions } from '../../../../src/datapath/pipeline';
import { closeTraceShm, openOrCreateTraceShm, type TraceShm } from '../../../../src/addon/shm';
import { connectTo } from '../../../../src/addon/sockets';
import { Target, TargetRegistry } from '../../../../src/tables/targets';
import {
  formatIcmp, formatPacketTrace, packetTraceText, MAX_TRACE_CLIENTS, parseMask, parseSelection, refusedNotice, TraceServer,
  TRACE_FLOWS, TRACE_FLOW_CONF, TRACE_FRAG, TRACE_LOG, TRACE_PACKET, TRACE_PER_PACKET, TRACE_SCTP, TRACE_TARGET,
} from '../../../../src/services/trace';
import { runInProcess } from '../../../helpers/cli';
import { ipv4, ipv6, tcp, udp } from '../../../helpers/packets';
import { until } from '../../../helpers/wait';

const SHM = `nfqlbts-test-${process.pid}-trace`;
let addrSeq = 0;
/** A fresh abstract socket name per server, so tests never see each other's clients. */
const nextAddress = (): string => `unix:nfqlbts-${process.pid}-trace-${++addrSeq}`;

let shm: TraceShm;

beforeAll(() => {
  shm = openOrCreateTraceShm(SHM);
});

afterAll(() => {
  closeTraceShm(shm);
  fs.rmSync(`/dev/shm/${SHM}`, { force: true });
});

beforeEach(() => {
  shm.mask = 0;
  shm.level = 5;
});


/** A trace client that collects everything it receives. */
class Client {
  text = '';
  closed = false;
  private constructor(readonly sock: net.Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (s: string) => {
      this.text += s;
    });
    sock.on('close', () => {
      this.closed = true;
    });
    sock.on('error', () => undefined);
  }

  static async connect(address: string): Promise<Client> {
    return new Client(await connectTo(parseAddress(address), 5000));
  }

  waitFor(s: string, timeoutMs = 5000): Promise<void> {
    return until(() => this.text.includes(s), JSON.stringify(s), timeoutMs);
  }

  end(): void {
    this.sock.destroy();
  }
}

describe('trace server', () => {
  let server: TraceServer;
  let address: string;
  const clients: Client[] = [];
  const connect = async (): Promise<Client> => {
    const c = await Client.connect(address);
    clients.push(c);
    await c.waitFor('\n');
    return c;
  };

  beforeEach(async () => {
    address = nextAddress();
    server = await TraceServer.start(address, shm, { bufferLimit: 256 * 1024 });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.end();
    await server.close();
  });

  it('greets with the shm mask, as nfqlb', async () => {
    shm.mask = 0x40;
    const c = await connect();
    expect(c.text).toBe('Trace active, mask=0x00000040\n');
    await until(() => server.clientCount === 1, 'client count');
    expect(server.perPacketMask).toBe(0x40);
  });

  it('sends the same lines to several clients', async () => {
    shm.mask = TRACE_LOG | TRACE_FLOWS;
    const a = await connect();
    const b = await connect();
    const c = await connect();
    await until(() => server.clientCount === 3, 'three clients');
    server.trace(TRACE_LOG, 'one\n');
    server.trace(TRACE_FLOWS, 'two\n');
    for (const x of [a, b, c]) await x.waitFor('two\n');
    for (const x of [a, b, c]) expect(x.text).toBe('Trace active, mask=0x00000041\none\ntwo\n');
  });

  it('sends only lines whose bit is in the mask', async () => {
    shm.mask = TRACE_FLOW_CONF | TRACE_LOG;
    const c = await connect();
    await until(() => server.clientCount === 1, 'client count');
    expect(server.enabled(TRACE_FLOW_CONF)).toBe(true);
    expect(server.enabled(TRACE_TARGET)).toBe(false);
    // Only per-packet bits make the daemon pick its traced batch handler.
    expect(server.perPacketMask).toBe(0);
    server.trace(TRACE_TARGET, 'target\n');
    server.trace(TRACE_FLOW_CONF, 'writeReply [OK]\n');
    server.trace(TRACE_PACKET, 'packet\n');
    server.logStream.write('{"msg":"log line"}\n');
    server.trace(TRACE_LOG, 'end\n');
    await c.waitFor('end\n');
    expect(c.text).toBe('Trace active, mask=0x00000009\nwriteReply [OK]\n{"msg":"log line"}\nend\n');
    shm.mask = TRACE_PACKET | TRACE_TARGET;
    expect(server.perPacketMask).toBe(TRACE_PACKET);
  });

  it('a client that does not read neither blocks the server nor other clients; it is told how many lines it lost', async () => {
    shm.mask = TRACE_LOG;
    const slow = await connect();
    const fast = await connect();
    await until(() => server.clientCount === 2, 'two clients');
    slow.sock.pause();
    const line = `${'x'.repeat(999)}\n`;
    const rounds = 80;
    const perRound = 100; // 100 KB per round, 8 MB in all: far beyond socket buffers and the 256 KiB limit.
    let sent = 0;
    for (let r = 0; r < rounds; r++) {
      // trace() is synchronous: it never waits for a client, and what the slow one cannot take is dropped and counted.
      for (let i = 0; i < perRound; i++) server.trace(TRACE_LOG, line);
      sent += perRound;
      server.flush();
      const expected = 'Trace active, mask=0x00000001\n'.length + sent * line.length;
      await until(() => fast.text.length >= expected, `fast client at round ${r}`);
    }
    expect(fast.text.length).toBe('Trace active, mask=0x00000001\n'.length + sent * line.length);
    expect(server.droppedLines).toBeGreaterThan(0);

    slow.sock.resume();
    await slow.waitFor('lines dropped', 10000);
    server.trace(TRACE_LOG, 'after\n');
    await slow.waitFor('after\n');
    // Every line either arrived or was counted in a notice.
    const notices = [...slow.text.matchAll(/^Trace: (\d+) lines dropped \(this client reads too slowly\)\n/gm)];
    expect(notices.length).toBeGreaterThan(0);
    const dropped = notices.reduce((n, m) => n + Number(m[1]), 0);
    const received = slow.text.split('\n').filter((l) => l === line.slice(0, -1)).length;
    expect(received + dropped).toBe(sent);
    expect(dropped).toBe(server.droppedLines);
  });

  it('per-packet tracing stops, and the shm mask is cleared, when the last client leaves', async () => {
    shm.mask = 0x7f;
    expect(server.perPacketMask).toBe(0); // Nobody listens yet.
    const a = await connect();
    const b = await connect();
    await until(() => server.clientCount === 2, 'two clients');
    expect(server.perPacketMask).toBe(TRACE_PER_PACKET);
    a.end();
    await until(() => server.clientCount === 1, 'one client');
    expect(server.perPacketMask).toBe(TRACE_PER_PACKET);
    expect(shm.mask).toBe(0x7f);
    b.end();
    await until(() => server.clientCount === 0, 'no client');
    expect(server.perPacketMask).toBe(0);
    expect(server.mask).toBe(0);
    expect(shm.mask).toBe(0);
  });

  it('a client that sends anything is disconnected (nfqlb: any input is a shutdown)', async () => {
    const c = await connect();
    c.sock.write('bye\n');
    await until(() => c.closed, 'close');
    await until(() => server.clientCount === 0, 'no client');
  });

  it('close() sends what is queued, and ends (cutting off) a client that never reads instead of waiting for it', async () => {
    shm.mask = TRACE_LOG;
    const reader = await connect();
    const stuck = await connect();
    await until(() => server.clientCount === 2, 'two clients');
    stuck.sock.pause();
    const line = `${'y'.repeat(999)}\n`;
    for (let i = 0; i < 3000; i++) server.trace(TRACE_LOG, line);
    server.trace(TRACE_LOG, 'last\n');
    // Resolving at all is the point: the stuck client never drains its queue.
    await server.close();
    expect(server.clientCount).toBe(0);
    expect(shm.mask).toBe(0);
    expect(server.perPacketMask).toBe(0);
    await until(() => reader.closed, 'reader closed');
    expect(reader.text.endsWith('last\n')).toBe(true);
  });

  it('refuses an address in use', async () => {
    await expect(TraceServer.start(address, shm)).rejects.toMatchObject({ code: 'NFQLB_ERR_TRACE_LISTEN' });
  });

  it('binds the abstract name without padding, as nfqlb (python3 reaches it as "\\0name")', async () => {
    const name = address.slice(5);
    const lines = fs.readFileSync('/proc/net/unix', 'utf8').split('\n');
    expect(lines.filter((l) => l.endsWith(` @${name}`))).toHaveLength(1);
    expect(lines.some((l) => l.includes(`@${name}@`))).toBe(false);
    // Asynchronously: the server runs in this process.
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile('python3', ['-c', PY_TRACE_CLIENT, name], { encoding: 'latin1', timeout: 10000 }, (err, out) => (err ? reject(err) : resolve(out)));
    });
    expect(stdout).toBe('Trace active, mask=0x00000000\n');
  });

  it(`tells client ${MAX_TRACE_CLIENTS + 1} in one line that there are too many, and closes it`, async () => {
    for (let i = 0; i < MAX_TRACE_CLIENTS; i++) await connect();
    expect(server.clientCount).toBe(MAX_TRACE_CLIENTS);
    const extra = await Client.connect(address);
    clients.push(extra);
    await until(() => extra.closed, 'the refused client to be closed');
    expect(extra.text).toBe(refusedNotice(MAX_TRACE_CLIENTS));
    expect(server.clientCount).toBe(MAX_TRACE_CLIENTS);
    // The others still get lines.
    shm.mask = TRACE_LOG;
    server.trace(TRACE_LOG, 'still here\n');
    await clients[0].waitFor('still here\n');
  });

  it('sends names as the bytes clients sent (latin1 binary strings) and log lines as UTF-8', async () => {
    shm.mask = TRACE_LOG | TRACE_FLOW_CONF;
    const c = await connect();
    const name = Buffer.from('café €', 'utf8').toString('latin1');
    server.trace(TRACE_FLOW_CONF, `writeReply [${name}]\n`);
    server.logStream.write('{"msg":"naïve ∑"}\n');
    await c.waitFor('}\n');
    const bytes = Buffer.from(c.text, 'latin1').toString('utf8');
    expect(bytes).toBe('Trace active, mask=0x00000009\nwriteReply [café €]\n{"msg":"naïve ∑"}\n');
  });
});

/** A trace client nobody here wrote: Python's socket module, "\\0name" unpadded. */
const PY_TRACE_CLIENT = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect('\\0' + sys.argv[1])
s.settimeout(5)
buf = b''
while not buf.endswith(b'\\n'):
    d = s.recv(100)
    if not d: break
    buf += d
sys.stdout.write(buf.decode('latin1'))
`;

// ---------------------------------------------------------------- texts

const VIP = '192.0.2.1';
const CLIENT = '198.51.100.2';

function sctpHeader(sport: number, dport: number): number[] {
  return [sport >> 8, sport & 0xff, dport >> 8, dport & 0xff, 0, 0, 0, 1, 0, 0, 0, 0];
}

function icmpEchoPing(id: number, seq: number, dataLen: number): number[] {
  return [8, 0, 0, 0, id >> 8, id & 0xff, seq >> 8, seq & 0xff, ...new Array<number>(dataLen).fill(0)];
}

function setup(extra: Partial<PipelineOptions<MaglevTable>> = {}) {
  const tables = new Map<string, MaglevTable>([
    ['tshm-a', MaglevTable.create(97, 4, 0, 'tshm-a')],
    ['nfqlb', MaglevTable.create(97, 4, 0, 'nfqlb')],
    ['empty', MaglevTable.create(97, 4, 0, 'empty')],
  ]);
  tables.get('tshm-a')!.activate([4]);
  tables.get('nfqlb')!.activate([102]);
  const registry = new TargetRegistry<MaglevTable>({ open: (n) => tables.get(n) ?? null, close: () => undefined });
  const flows = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
  const set = (args: Record<string, string>): void => {
    expect(flows.applySet(flowCmdFromArgs(args), registry)).toBe('OK');
  };
  set({ name: 'a', target: 'tshm-a', prio: '10', protocols: 'tcp,udp', dsts: `${VIP}/32,2001:db8::1/128`, dports: '80,4000' });
  set({ name: 'sctp', target: 'tshm-a', prio: '10', protocols: 'sctp', dsts: `${VIP}/32`, udpencap: '9899' });
  set({ name: 'dead', target: 'empty', prio: '5', protocols: 'tcp', dports: '81' });
  set({ name: 'ping', target: 'nfqlb', prio: '1', dsts: '10.0.0.0/32,2001:db8::99/128' });
  const pipeline = new Pipeline<MaglevTable>(flows, { hashMode: 1, nolbFwmark: 8888, notargetsFwmark: 7777, ...extra });
  // Trace-flows as the daemon keeps them: the target is the flow's own name.
  const traceFlows = new FlowSet<string>({ promiscuousPing: true });
  expect(traceFlows.define({ name: 'tf', target: 'tf', protocols: 'udp,tcp,sctp', dsts: `${VIP}/32` })).toBeNull();
  const decide = (pkt: Uint8Array): number => pipeline.decide(pkt, 0, pkt.length, 0);
  /** packetTraceText for a packet that matched trace-flow `name` (the lookup already made). */
  const flowTrace = (pkt: Uint8Array, name = 'tf'): string => {
    decide(pkt);
    return packetTraceText(
      { info: pipeline.info, pkt, off: 0, len: pkt.length, decision: pipeline.last, nolbFwmark: 8888, notargetsFwmark: 7777 },
      { mask: TRACE_FLOWS, traceFlows: null, matchedFlow: name },
    );
  };
  const packetTrace = (mask: number, pkt: Uint8Array): string => {
    decide(pkt);
    return formatPacketTrace(mask, traceFlows, pipeline.info, pkt, 0, pkt.length, pipeline.last);
  };
  return { pipeline, traceFlows, decide, flowTrace, packetTrace };
}

describe('per-packet trace texts (nfqlb cmdFlowLb.c)', () => {
  it('UDP over IPv4', () => {
    const { flowTrace } = setup();
    expect(flowTrace(ipv4(CLIENT, VIP, 17, udp(33527, 4000, [0x41])))).toBe(
      '\nMatch for trace-flow: tf\n' +
      'proto=udp, len=29, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n' +
      'target=tshm-a, fwmark=4\n',
    );
  });

  it('TCP over IPv4 and IPv6', () => {
    const { flowTrace } = setup();
    expect(flowTrace(ipv4(CLIENT, VIP, 6, tcp(40000, 80)))).toBe(
      '\nMatch for trace-flow: tf\nproto=tcp, len=40, ::ffff:198.51.100.2 40000 -> ::ffff:192.0.2.1 80\ntarget=tshm-a, fwmark=4\n',
    );
    expect(flowTrace(ipv6('2001:db8:100::7', '2001:db8::1', 6, tcp(40000, 80)))).toBe(
      '\nMatch for trace-flow: tf\nproto=tcp, len=60, 2001:db8:100::7 40000 -> 2001:db8::1 80\ntarget=tshm-a, fwmark=4\n',
    );
  });

  it('ICMP echo (the example of the nfqlb trace format) and ICMPv6 echo', () => {
    const { flowTrace } = setup();
    expect(flowTrace(ipv4('20.0.0.0', '10.0.0.0', 1, icmpEchoPing(58880, 0, 56)), 'from-test-server')).toBe(
      '\nMatch for trace-flow: from-test-server\n' +
      'ICMP_ECHO: id=58880, seq=0\n' +
      'proto=icmp, len=84, ::ffff:20.0.0.0 0 -> ::ffff:10.0.0.0 0\n' +
      'target=nfqlb, fwmark=102\n',
    );
    const echo6 = [128, 0, 0, 0, 0x12, 0x34, 0, 5, 1, 2, 3, 4];
    expect(flowTrace(ipv6('2001:db8:100::7', '2001:db8::99', 58, echo6))).toBe(
      '\nMatch for trace-flow: tf\n' +
      'ICMP6_ECHO_REQUEST: id=4660, seq=5\n' +
      'proto=icmp6, len=52, 2001:db8:100::7 0 -> 2001:db8::99 0\n' +
      'target=nfqlb, fwmark=102\n',
    );
  });

  it('NO target when no flow matches, NO servers when the table has no target', () => {
    const { flowTrace, pipeline } = setup();
    expect(flowTrace(ipv4(CLIENT, '203.0.113.9', 6, tcp(40000, 22)))).toBe(
      '\nMatch for trace-flow: tf\nproto=tcp, len=40, ::ffff:198.51.100.2 40000 -> ::ffff:203.0.113.9 22\nNO target, fwmark=8888\n',
    );
    expect(pipeline.last.reason).toBe(REASON_NO_FLOW);
    expect(flowTrace(ipv4(CLIENT, VIP, 6, tcp(40000, 81)))).toBe(
      '\nMatch for trace-flow: tf\nproto=tcp, len=40, ::ffff:198.51.100.2 40000 -> ::ffff:192.0.2.1 81\nNO servers, target=empty, fwmark=7777\n',
    );
    expect(pipeline.last.reason).toBe(REASON_NO_TARGET);
  });

  it('ICMP error: printIcmp line, and the key of the embedded packet', () => {
    const { flowTrace } = setup();
    // The router tells the VIP that its UDP reply to the client needs a smaller MTU.
    const inner = Array.from(ipv4(VIP, CLIENT, 17, udp(4000, 33527, [0x41])));
    const fragNeeded = [3, 4, 0, 0, 0, 0, 1400 >> 8, 1400 & 0xff, ...inner];
    const pkt = ipv4('203.0.113.1', VIP, 1, fragNeeded);
    expect(flowTrace(pkt)).toBe(
      '\nMatch for trace-flow: tf\n' +
      'ICMP_DEST_UNREACH/FRAG_NEEDED: mtu=1400\n' +
      `proto=udp, len=${pkt.length}, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n` +
      'target=tshm-a, fwmark=4\n',
    );
  });

  it('SCTP over UDP: the outer UDP key, udpencap=P, then the SCTP decision', () => {
    const { flowTrace, packetTrace, pipeline } = setup();
    const pkt = ipv4(CLIENT, VIP, 17, udp(5000, 9899, sctpHeader(7000, 38412)));
    expect(flowTrace(pkt)).toBe(
      '\nMatch for trace-flow: tf\n' +
      `proto=udp, len=${pkt.length}, ::ffff:198.51.100.2 5000 -> ::ffff:192.0.2.1 9899\n` +
      'udpencap=9899\n' +
      'target=tshm-a, fwmark=4\n',
    );
    expect(pipeline.info.proto).toBe(132);
    expect(packetTrace(TRACE_SCTP, pkt)).toBe(
      'Udp encapsulated sctp packet on port 9899\nUsing LB; tshm-a\n' + `Packet; proto=132, len=${pkt.length}, fwmark=4\n`,
    );
  });

  it('formatPacketTrace: trace-flow lookup, bits in nfqlb order, fragments', () => {
    const { packetTrace, traceFlows, pipeline } = setup();
    const pkt = ipv4(CLIENT, VIP, 17, udp(33527, 4000, [0x41]));
    expect(packetTrace(TRACE_FLOWS | TRACE_PACKET, pkt)).toBe(
      '\nMatch for trace-flow: tf\nproto=udp, len=29, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\ntarget=tshm-a, fwmark=4\n' +
      'Using LB; tshm-a\nPacket; proto=17, len=29, fwmark=4\n',
    );
    expect(traceFlows.list('tf')).toContain('"matches_count": 1');
    // No trace-flow matches (not to the VIP): only the PACKET lines.
    const other = ipv4(CLIENT, '203.0.113.9', 6, tcp(40000, 22));
    expect(packetTrace(TRACE_FLOWS, other)).toBe('');
    expect(packetTrace(TRACE_FLOWS | TRACE_PACKET, other)).toBe('Failed flowLookup\n');
    // A first fragment, then a later one.
    const first = ipv4(CLIENT, VIP, 17, udp(33527, 4000, new Array<number>(16).fill(7)), { id: 77, moreFragments: true });
    expect(packetTrace(TRACE_FLOWS | TRACE_FRAG, first)).toBe(
      `\nMatch for trace-flow: tf\nproto=udp, len=${first.length}, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n` +
      'target=tshm-a, fwmark=4\nFirst fragment\n',
    );
    const later = ipv4(CLIENT, VIP, 17, [1, 2, 3, 4, 5, 6, 7, 8], { id: 77, fragOffset: 3 });
    expect(packetTrace(TRACE_FLOWS | TRACE_FRAG, later)).toBe('Handle non-first frag locally fwmark=4\n');
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_HIT);
    // An invalid packet: nothing (nfqlb only logs a warning).
    expect(packetTrace(TRACE_PER_PACKET, pkt.subarray(0, 10))).toBe('');
    expect(pipeline.last.reason).not.toBe(REASON_TARGET);
  });

  it('with a fragment store (--tun): stored, dropped when the datagram is lost, and its first fragment refused', () => {
    const { packetTrace, pipeline } = setup({ fragmentStoreSlots: 1 });
    const later = (id: number): Uint8Array => ipv4(CLIENT, VIP, 17, [1, 2, 3, 4, 5, 6, 7, 8], { id, fragOffset: 3 });
    expect(packetTrace(TRACE_FRAG, later(80))).toBe('Fragment stored\n');
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_STORED);
    // The one slot is taken: datagram 81 loses this fragment and is given up.
    expect(packetTrace(TRACE_FRAG, later(81))).toBe('Fragment dropped\n');
    expect(pipeline.last.reason).toBe(REASON_FRAGMENT_LOST);
    const first = ipv4(CLIENT, VIP, 17, udp(33527, 4000, new Array<number>(16).fill(7)), { id: 81, moreFragments: true });
    expect(packetTrace(TRACE_FLOWS | TRACE_FRAG, first)).toBe(
      `\nMatch for trace-flow: tf\nproto=udp, len=${first.length}, ::ffff:198.51.100.2 33527 -> ::ffff:192.0.2.1 4000\n` +
      'target=tshm-a, fwmark=4\nFirst fragment\nFAILED: Handle first fragment\nFAILED: Handle first fragment\n',
    );
  });

  it('formatIcmp: the other printIcmp forms, and never past the end', () => {
    expect(formatIcmp(ipv4(CLIENT, VIP, 1, [3, 1, 0, 0, 0, 0, 0, 0]), 0, 28)).toBe('ICMP_DEST_UNREACH: code=1\n');
    expect(formatIcmp(ipv4(CLIENT, VIP, 1, [0, 0, 0, 0, 0, 1, 0, 2]), 0, 28)).toBe('ICMP 0, 0\n');
    expect(formatIcmp(ipv6('2001:db8::1', '2001:db8::2', 58, [2, 0, 0, 0, 0, 0, 5, 0]), 0, 48)).toBe('ICMP6_PACKET_TOO_BIG: mtu=1280\n');
    expect(formatIcmp(ipv6('2001:db8::1', '2001:db8::2', 58, [129, 0, 0, 0, 0, 1, 0, 1]), 0, 48)).toBe('ICMP6 129, 0\n');
    // Hop-by-hop options (8 bytes, hdrlen 0) before the ICMPv6 header.
    expect(formatIcmp(ipv6('2001:db8::1', '2001:db8::2', 0, [58, 0, 1, 4, 0, 0, 0, 0, 128, 0, 0, 0, 0, 9, 0, 1]), 0, 56)).toBe(
      'ICMP6_ECHO_REQUEST: id=9, seq=1\n',
    );
    expect(formatIcmp(ipv4(CLIENT, VIP, 6, tcp(1, 2)), 0, 40)).toBe('');
    const echo = ipv4(CLIENT, VIP, 1, [8, 0, 0, 0, 0, 1, 0, 2]);
    expect(formatIcmp(echo, 0, 24)).toBe('ICMP 8, 0\n');
    expect(formatIcmp(echo, 0, 21)).toBe('');
  });
});

describe('parseSelection / parseMask', () => {
  it('maps names to bits', () => {
    expect(parseSelection('flows')).toBe(0x40);
    expect(parseSelection('log,packet,frag,flow-conf,sctp,target,flows')).toBe(0x7f);
    expect(parseSelection('log,,packet,')).toBe(3);
    expect(parseSelection('')).toBe(0);
  });

  it('refuses unknown names with a clear message', () => {
    expect(() => parseSelection('log,bogus')).toThrow(NfqlbError);
    expect(() => parseSelection('log,bogus')).toThrow(
      'Unknown trace selection [bogus]; use a comma separated list of log,packet,frag,flow-conf,sctp,target,flows',
    );
    expect(() => parseSelection('__proto__')).toThrow(/Unknown trace selection/);
    expect(() => parseSelection('Log')).toThrow(/Unknown trace selection \[Log\]/);
  });

  it('reads --mask as strtol(s, NULL, 0) into a uint32', () => {
    expect(parseMask('0x40')).toBe(0x40);
    expect(parseMask('64')).toBe(64);
    expect(parseMask('0100')).toBe(64);
    expect(parseMask(' 0X7f')).toBe(0x7f);
    expect(parseMask('-1')).toBe(0xffffffff);
    expect(parseMask('0x1zz')).toBe(1);
    expect(parseMask('abc')).toBe(0);
    expect(parseMask('0x')).toBe(0);
    expect(parseMask('0x1ffffffff')).toBe(0xffffffff);
  });
});

// ---------------------------------------------------------------- commands

describe('nfqlb trace', () => {
  const shmOpt = `--trace_shm=${SHM}`;

  it('prints the mask, sets it in shm and streams until the server closes', async () => {
    const address = nextAddress();
    const server = await TraceServer.start(address, shm);
    try {
      const run = runInProcess(['trace', '--selection=flows,log', `--trace_address=${address}`, shmOpt]);
      await until(() => server.clientCount === 1, 'the CLI to connect');
      expect(shm.mask).toBe(0x41);
      server.trace(TRACE_FLOWS, '\nMatch for trace-flow: tf\n');
      server.trace(TRACE_PACKET, 'not selected\n');
      server.trace(TRACE_LOG, 'last\n');
      await server.close();
      const r = await run;
      expect(r).toEqual({
        rc: 0,
        stdout: 'Mask=0x00000041\nTrace active, mask=0x00000041\n\nMatch for trace-flow: tf\nlast\n',
        stderr: '',
      });
      expect(shm.mask).toBe(0); // Cleared by the server when its client went.
    } finally {
      await server.close();
    }
  });

  it('SIGINT ends it with exit 0; the daemon clears the mask', async () => {
    const address = nextAddress();
    const server = await TraceServer.start(address, shm);
    const before = new Set(process.listeners('SIGINT'));
    try {
      const run = runInProcess(['trace', '--mask=0x56', `--trace_address=${address}`, shmOpt]);
      await until(() => server.clientCount === 1, 'the CLI to connect');
      expect(server.perPacketMask).toBe(0x56);
      // The signal comes once the CLI has printed the greeting (runInProcess has process.stdout.write mocked).
      const printed = process.stdout.write as unknown as jest.Mock;
      await until(() => printed.mock.calls.some((c: unknown[]) => String(c[0]).includes('Trace active')), 'the CLI to print the greeting');
      const added = process.listeners('SIGINT').filter((l) => !before.has(l));
      expect(added).toHaveLength(1);
      (added[0] as () => void)();
      const r = await run;
      expect(r.rc).toBe(0);
      expect(r.stdout).toBe('Mask=0x00000056\nTrace active, mask=0x00000056\n');
      expect(process.listeners('SIGINT').filter((l) => !before.has(l))).toHaveLength(0);
      await until(() => server.clientCount === 0, 'the server to see the close');
      expect(shm.mask).toBe(0);
    } finally {
      await server.close();
    }
  });

  it(`exits 1 with the server's line on stderr when it refuses the client (${MAX_TRACE_CLIENTS} connected)`, async () => {
    const address = nextAddress();
    const server = await TraceServer.start(address, shm);
    const held: Client[] = [];
    try {
      for (let i = 0; i < MAX_TRACE_CLIENTS; i++) held.push(await Client.connect(address));
      await until(() => server.clientCount === MAX_TRACE_CLIENTS, 'all clients');
      const r = await runInProcess(['trace', '--mask=0x1', `--trace_address=${address}`, shmOpt]);
      expect(r).toEqual({ rc: 1, stdout: 'Mask=0x00000001\n', stderr: refusedNotice(MAX_TRACE_CLIENTS) });
    } finally {
      for (const c of held) c.end();
      await server.close();
    }
  });

  it('wants exactly one of --mask and --selection (nfqlb wording)', async () => {
    expect(await runInProcess(['trace', shmOpt])).toEqual({ rc: 1, stdout: '', stderr: 'Specify any of --mask or --selection\n' });
    expect(await runInProcess(['trace', '--mask=1', '--selection=log', shmOpt])).toEqual({
      rc: 1, stdout: '', stderr: 'Specify any ONE of --mask or --selection\n',
    });
    const r = await runInProcess(['trace', '--selection=log,nope', shmOpt]);
    expect(r.rc).toBe(1);
    expect(r.stderr).toMatch(/^Unknown trace selection \[nope\]; .*\n$/);
  });

  it('says so in one line when no daemon listens or there is no trace shm', async () => {
    const address = nextAddress();
    const r = await runInProcess(['trace', '--selection=flows', `--trace_address=${address}`, shmOpt]);
    expect(r).toEqual({ rc: 1, stdout: 'Mask=0x00000040\n', stderr: `Trace client connect to ${address}: Connection refused\n` });
    // As nfqlb's logConfigShm, trace creates the shm when no daemon has (and sets the mask in it).
    const missing = `${SHM}-missing`;
    try {
      const m = await runInProcess(['trace', '--selection=flows', `--trace_address=${address}`, `--trace_shm=${missing}`]);
      expect(m).toEqual({ rc: 1, stdout: 'Mask=0x00000040\n', stderr: `Trace client connect to ${address}: Connection refused\n` });
      expect([...fs.readFileSync(`/dev/shm/${missing}`)]).toEqual([5, 0, 0, 0, 0x40, 0, 0, 0]);
    } finally {
      fs.rmSync(`/dev/shm/${missing}`, { force: true });
    }
    const bad = await runInProcess(['trace', '--selection=flows', '--trace_address=nowhere', shmOpt]);
    expect(bad.rc).toBe(1);
    expect(bad.stderr).toMatch(/^Failed to parse address \[nowhere\]/);
  });
});

describe('nfqlb loglevel', () => {
  const shmOpt = `--trace_shm=${SHM}`;

  it('reads and sets the level in shm, printing the level in effect', async () => {
    expect(await runInProcess(['loglevel', shmOpt])).toEqual({ rc: 0, stdout: 'loglevel=5\n', stderr: '' });
    expect(await runInProcess(['loglevel', shmOpt, '7'])).toEqual({ rc: 0, stdout: 'loglevel=7\n', stderr: '' });
    expect(shm.level).toBe(7);
    expect(await runInProcess(['loglevel', shmOpt])).toEqual({ rc: 0, stdout: 'loglevel=7\n', stderr: '' });
    // atoi, as nfqlb.
    expect(await runInProcess(['loglevel', shmOpt, '6x'])).toEqual({ rc: 0, stdout: 'loglevel=6\n', stderr: '' });
  });

  it('without a daemon creates the shm as nfqlb does: 8 bytes {5, 0}, mode 0600, and prints loglevel=5', async () => {
    const missing = `${SHM}-missing`;
    const file = `/dev/shm/${missing}`;
    try {
      expect(await runInProcess(['loglevel', `--trace_shm=${missing}`])).toEqual({ rc: 0, stdout: 'loglevel=5\n', stderr: '' });
      const st = fs.statSync(file);
      expect({ size: st.size, mode: (st.mode & 0o777).toString(8) }).toEqual({ size: 8, mode: '600' });
      expect([...fs.readFileSync(file)]).toEqual([5, 0, 0, 0, 0, 0, 0, 0]);
      expect(await runInProcess(['loglevel', `--trace_shm=${missing}`, '7'])).toEqual({ rc: 0, stdout: 'loglevel=7\n', stderr: '' });
      expect([...fs.readFileSync(file)]).toEqual([7, 0, 0, 0, 0, 0, 0, 0]);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});
