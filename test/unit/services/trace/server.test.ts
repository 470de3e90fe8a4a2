/**
 * The daemon's trace server (services/trace/server.ts), in-process on private
 * abstract sockets and a private trace shm: the greeting, the mask read from
 * the shm and reset when the last client leaves, lines to several clients,
 * slow and chatty clients, the client limit, close(), the log stream and the
 * client count callback.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { droppedNotice, greeting, MAX_TRACE_CLIENTS, refusedNotice, TraceServer, TRACE_REFUSED } from '../../../../src/services/trace/server';
import { TRACE_FLOWS, TRACE_FLOW_CONF, TRACE_LOG, TRACE_PACKET, TRACE_PER_PACKET, TRACE_TARGET } from '../../../../src/services/trace/selection';
import { TraceClient, traceFixture } from '../../../helpers/traceclient';
import { until } from '../../../helpers/wait';

const trace = traceFixture('traceserver');
const SHM = trace.name;
const nextAddress = trace.nextAddress;

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

describe('trace server', () => {
  let server: TraceServer;
  let address: string;
  const clients: TraceClient[] = [];
  const connect = async (): Promise<TraceClient> => {
    const c = await TraceClient.connect(address);
    clients.push(c);
    await c.waitFor('\n');
    return c;
  };

  beforeEach(async () => {
    address = nextAddress();
    server = await TraceServer.start(address, trace.shm, { bufferLimit: 256 * 1024 });
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.end();
    await server.close();
  });

  it('greets with the shm mask, as nfqlb', async () => {
    trace.shm.mask = 0x40;
    const c = await connect();
    expect(c.text).toBe('Trace active, mask=0x00000040\n');
    await until(() => server.clientCount === 1, 'client count');
    expect(server.perPacketMask).toBe(0x40);
  });

  it('sends the same lines to several clients', async () => {
    trace.shm.mask = TRACE_LOG | TRACE_FLOWS;
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
    trace.shm.mask = TRACE_FLOW_CONF | TRACE_LOG;
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
    trace.shm.mask = TRACE_PACKET | TRACE_TARGET;
    expect(server.perPacketMask).toBe(TRACE_PACKET);
  });

  it('a client that does not read neither blocks the server nor other clients; it is told how many lines it lost', async () => {
    trace.shm.mask = TRACE_LOG;
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
    trace.shm.mask = 0x7f;
    expect(server.perPacketMask).toBe(0); // Nobody listens yet.
    const a = await connect();
    const b = await connect();
    await until(() => server.clientCount === 2, 'two clients');
    expect(server.perPacketMask).toBe(TRACE_PER_PACKET);
    a.end();
    await until(() => server.clientCount === 1, 'one client');
    expect(server.perPacketMask).toBe(TRACE_PER_PACKET);
    expect(trace.shm.mask).toBe(0x7f);
    b.end();
    await until(() => server.clientCount === 0, 'no client');
    expect(server.perPacketMask).toBe(0);
    expect(server.mask).toBe(0);
    expect(trace.shm.mask).toBe(0);
  });

  it('a client that sends anything is disconnected (nfqlb: any input is a shutdown)', async () => {
    const c = await connect();
    c.sock.write('bye\n');
    await until(() => c.closed, 'close');
    await until(() => server.clientCount === 0, 'no client');
  });

  it('close() sends what is queued, and ends (cutting off) a client that never reads instead of waiting for it', async () => {
    trace.shm.mask = TRACE_LOG;
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
    expect(trace.shm.mask).toBe(0);
    expect(server.perPacketMask).toBe(0);
    await until(() => reader.closed, 'reader closed');
    expect(reader.text.endsWith('last\n')).toBe(true);
  });

  it('refuses an address in use', async () => {
    await expect(TraceServer.start(address, trace.shm)).rejects.toMatchObject({ code: 'NFQLB_ERR_TRACE_LISTEN' });
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
    const extra = await TraceClient.connect(address);
    clients.push(extra);
    await until(() => extra.closed, 'the refused client to be closed');
    expect(extra.text).toBe(refusedNotice(MAX_TRACE_CLIENTS));
    expect(server.clientCount).toBe(MAX_TRACE_CLIENTS);
    // The others still get lines.
    trace.shm.mask = TRACE_LOG;
    server.trace(TRACE_LOG, 'still here\n');
    await clients[0].waitFor('still here\n');
  });

  it('sends names as the bytes clients sent (latin1 binary strings) and log lines as UTF-8', async () => {
    trace.shm.mask = TRACE_LOG | TRACE_FLOW_CONF;
    const c = await connect();
    const name = Buffer.from('café €', 'utf8').toString('latin1');
    server.trace(TRACE_FLOW_CONF, `writeReply [${name}]\n`);
    server.logStream.write('{"msg":"naïve ∑"}\n');
    await c.waitFor('}\n');
    const bytes = Buffer.from(c.text, 'latin1').toString('utf8');
    expect(bytes).toBe('Trace active, mask=0x00000009\nwriteReply [café €]\n{"msg":"naïve ∑"}\n');
  });

  it('the mask and the per-packet mask are 0 with no client, whatever the shm says', async () => {
    trace.shm.mask = TRACE_LOG | TRACE_PACKET;
    expect([server.mask, server.perPacketMask, server.enabled(TRACE_LOG)]).toEqual([0, 0, false]);
    const c = await connect();
    expect([server.mask, server.perPacketMask, server.enabled(TRACE_LOG)]).toEqual([TRACE_LOG | TRACE_PACKET, TRACE_PACKET & TRACE_PER_PACKET, true]);
    c.end();
    await until(() => server.clientCount === 0, 'the server to see the close');
    expect(server.mask).toBe(0);
  });

  it('traceLines sends whole lines whatever the mask (the packet thread selected them), only while a client listens', async () => {
    trace.shm.mask = TRACE_LOG;
    server.traceLines('nobody hears this\n');
    const c = await connect();
    server.traceLines('per-packet line\n');
    server.trace(TRACE_LOG, 'end\n');
    await c.waitFor('end\n');
    expect(c.text).toBe(`${greeting(TRACE_LOG)}per-packet line\nend\n`);
  });

  it('logStream forwards log lines only with TRACE_LOG in the mask, non-ASCII text as its UTF-8 bytes', async () => {
    trace.shm.mask = TRACE_FLOWS;
    const c = await connect();
    server.logStream.write('not forwarded\n');
    trace.shm.mask = TRACE_LOG;
    server.logStream.write('{"msg":"café"}\n');
    server.trace(TRACE_LOG, 'end\n');
    await c.waitFor('end\n');
    expect(c.text).toBe(`${greeting(TRACE_FLOWS)}${Buffer.from('{"msg":"café"}\n', 'utf8').toString('latin1')}end\n`);
  });

  it('tells onClients the count after each connect and disconnect, and 0 at close', async () => {
    const counts: number[] = [];
    const own = await TraceServer.start(nextAddress(), trace.shm, { onClients: (n) => counts.push(n) });
    try {
      const a = await TraceClient.connect(own.address);
      await a.waitFor('\n');
      const b = await TraceClient.connect(own.address);
      await b.waitFor('\n');
      a.end();
      await until(() => own.clientCount === 1, 'one client left');
      await own.close();
      b.end();
      expect(counts).toEqual([1, 2, 1, 0]);
    } finally {
      await own.close();
    }
  });

  it("its one-line texts: nfqlb's greeting, the refusal TRACE_REFUSED starts, the dropped-lines notice", () => {
    expect(greeting(0x41)).toBe('Trace active, mask=0x00000041\n');
    expect(greeting(0xffffffff)).toBe('Trace active, mask=0xffffffff\n');
    expect(refusedNotice(64).startsWith(`${TRACE_REFUSED} 64 `)).toBe(true);
    expect(refusedNotice(64).endsWith('\n')).toBe(true);
    expect(refusedNotice(64).split('\n')).toHaveLength(2);
    expect(droppedNotice(3)).toBe('Trace: 3 lines dropped (this client reads too slowly)\n');
  });
});
