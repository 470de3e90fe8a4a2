/**
 * The control socket in-process, on private abstract names (no root needed):
 * bound as nfqlb binds it, so clients nobody here wrote (socat, python3) reach
 * it; nfqlb's end-of-request rule (a final `eoc:` without newline counts at
 * EOF); names as bytes from the CLI through the daemon and back; the deadline
 * and the connection bound under floods of idle and slow clients; and the
 * CLI's error for a connection closed without a reply.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import {
  bytesToText, encodeRequest, parseAddress, RequestParser, sendRequest, startControlServer, textToBytes,
  type ControlReply, type ControlRequest, type ControlServer, type ControlServerEvents,
} from '../../../src/services/control';
import { Daemon } from '../../../src/daemon/daemon';
import { createLogger } from '../../../src/base/log';
import { native } from '../../../src/addon/native';
import { createTable, deleteTable } from '../../../src/tables/tablefile';
import { connectTo, listenAt } from '../../../src/addon/sockets';
import { runInProcess } from '../../helpers/cli';
import { until } from '../../helpers/wait';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-ctl`;
let seq = 0;
/** A fresh abstract name per server: tests run in parallel with other helpers' in the root namespace. */
const nextAddress = (): string => `unix:${PREFIX}-${++seq}`;

/** Runs a program without blocking this process's event loop (the server under test runs here). */
function run(file: string, args: string[], input = ''): Promise<{ code: number; stdout: Buffer }> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { encoding: 'buffer', timeout: 15000 }, (err, stdout) => {
      if (err !== null && typeof err.code !== 'number') reject(err);
      else resolve({ code: err === null ? 0 : Number(err.code), stdout });
    });
    child.stdin?.end(input, 'latin1');
  });
}

const hasProgram = (name: string): boolean =>
  (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && fs.existsSync(`${dir}/${name}`));

/**
 * A raw client in Python: connects to "\0NAME" (unpadded, as nfqlb), sends
 * argv[2] (latin1), half-closes when argv[3] == 'shut', prints the reply as hex.
 */
const PY_CLIENT = `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect('\\0' + sys.argv[1])
s.sendall(sys.argv[2].encode('latin1'))
if sys.argv[3] == 'shut':
    s.shutdown(socket.SHUT_WR)
s.settimeout(10)
out = b''
while True:
    d = s.recv(4096)
    if not d:
        break
    out += d
print(out.hex())
`;

async function python(name: string, request: string, shut = true): Promise<string> {
  const r = await run('python3', ['-c', PY_CLIENT, name, request, shut ? 'shut' : 'keep']);
  expect(r.code).toBe(0);
  return Buffer.from(r.stdout.toString().trim(), 'hex').toString('latin1');
}

/** A handler that shows what it got: `echo` answers `name=<bytes>`, list-names `[]\n`, list JSON or nothing. */
const echo: ControlServerEvents = {
  handle(req: ControlRequest): ControlReply {
    if (req.action === 'echo') return { text: `name=${req.name}` };
    if (req.action === 'list-names') return { json: '[]\n' };
    if (req.action === 'list') return { json: req.name === undefined ? '[]\n' : '' };
    return { text: 'FAIL: action unknown' };
  },
};

/** Waits for a socket's close; resolves with everything it received. */
function received(sock: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  sock.on('error', () => undefined);
  return new Promise((resolve) => sock.once('close', () => resolve(Buffer.concat(chunks))));
}

function withFlowAddress<T>(address: string, fn: () => Promise<T>): Promise<T> {
  const old = process.env.NFQLB_FLOW_ADDRESS;
  process.env.NFQLB_FLOW_ADDRESS = address;
  return fn().finally(() => {
    if (old === undefined) delete process.env.NFQLB_FLOW_ADDRESS;
    else process.env.NFQLB_FLOW_ADDRESS = old;
  });
}

function unixSocketLines(name: string): string[] {
  return fs.readFileSync('/proc/net/unix', 'utf8').split('\n').filter((l) => l.includes(`@${name}`));
}

describe('addresses and sockets as nfqlb binds and connects them', () => {
  it('parses unix:NAME into the name bytes (UTF-8), at most 107 of them, and tcp:HOST:PORT', () => {
    expect(parseAddress('unix:nfqlb')).toEqual({ unix: Buffer.from('nfqlb') });
    expect(parseAddress('unix:café')).toEqual({ unix: Buffer.from('café', 'utf8') });
    expect(parseAddress(`unix:${'x'.repeat(107)}`)).toEqual({ unix: Buffer.from('x'.repeat(107)) });
    expect(() => parseAddress(`unix:${'é'.repeat(54)}`)).toThrow(/1-107 bytes/);
    expect(() => parseAddress('unix:')).toThrow(/Failed to parse address \[unix:\]/);
    expect(parseAddress('tcp:127.0.0.1:7000')).toEqual({ host: '127.0.0.1', port: 7000 });
    expect(parseAddress('tcp:[::1]:7000')).toEqual({ host: '::1', port: 7000 });
    expect(parseAddress('tcp:[192.0.2.1]:7000')).toEqual({ host: '192.0.2.1', port: 7000 });
    // IP addresses only, as nfqlb (AI_NUMERICHOST).
    expect(() => parseAddress('tcp:localhost:7000')).toThrow(/^Failed to parse address \[tcp:localhost:7000\]: use tcp:IPv4:PORT or tcp:\[IPv6\]:PORT$/);
    expect(() => parseAddress('tcp:127.0.0.1:65536')).toThrow(/Failed to parse address/);
    expect(() => parseAddress('garbage')).toThrow(/^Failed to parse address \[garbage\]/);
  });

  it('answers a handler\'s promise when it settles (packet threads ack first); a rejection is FAIL: internal error', async () => {
    const address = nextAddress();
    const refused: string[] = [];
    let release: () => void = () => {};
    const acked = new Promise<void>((resolve) => (release = resolve));
    const server = await startControlServer(address, {
      handle: async (req) => {
        if (req.action === 'boom') throw new Error('thread gone');
        await acked;
        return { text: 'OK' };
      },
      refused: (why) => refused.push(why),
    });
    try {
      const reply = sendRequest(address, { action: 'set', name: 'a' });
      release();
      expect((await reply).toString()).toBe('OK\0');
      expect((await sendRequest(address, { action: 'boom' })).toString()).toBe('FAIL: internal error\0');
      expect(refused).toEqual(['internal error: thread gone']);
    } finally {
      await server.close();
    }
  });

  it('binds the abstract name without NUL padding; close() releases the descriptor once and the name', async () => {
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    const address = nextAddress();
    const name = address.slice(5);
    const server = await startControlServer(address, echo);
    // /proc/net/unix shows an abstract name as '@' + the name, each NUL of a padded one as '@'.
    expect(unixSocketLines(name).map((l) => l.split(' ').pop())).toEqual([`@${name}`]);
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fdsBefore + 1);
    // Client and accepted sockets are closed once they are done (Node owns their descriptors).
    for (let i = 0; i < 5; i++) expect((await sendRequest(address, { action: 'list-names' })).toString()).toBe('[]\n');
    await until(() => server.connections === 0 && fs.readdirSync('/proc/self/fd').length === fdsBefore + 1, 'the descriptors to close');
    await server.close();
    await server.close();
    expect(unixSocketLines(name)).toEqual([]);
    expect(fs.readdirSync('/proc/self/fd').length).toBe(fdsBefore);
    await expect(sendRequest(address, { action: 'list-names' })).rejects.toMatchObject({
      code: 'NFQLB_ERR_CONNECT', message: 'Connect failed. Connection refused', errnoName: 'ECONNREFUSED',
    });
  });

  it('retries a connect while the listen backlog is full (EAGAIN), then fails with the errno and syscall', async () => {
    const name = Buffer.from(nextAddress().slice(5));
    // A listener nobody accepts on, with the smallest backlog.
    const listener = (native() as unknown as { unixListen(n: Buffer, b: number): { fd: number } }).unixListen(name, 0);
    const held: net.Socket[] = [];
    try {
      held.push(await connectTo({ unix: name }, 1000));
      await expect(connectTo({ unix: name }, 100)).rejects.toMatchObject({
        code: 'NFQLB_ERR_SOCKET', errnoName: 'EAGAIN', syscall: 'connect', message: 'connect: Resource temporarily unavailable',
      });
    } finally {
      for (const s of held) s.destroy();
      fs.closeSync(listener.fd);
    }
  });

  it('says in one line when the name is taken', async () => {
    const address = nextAddress();
    const server = await startControlServer(address, echo);
    try {
      await expect(startControlServer(address, echo)).rejects.toMatchObject({
        code: 'NFQLB_ERR_CONTROL_LISTEN',
        errnoName: 'EADDRINUSE',
        message: `control socket ${address} is in use: another nfqlb daemon runs in this network namespace; stop it or set NFQLB_FLOW_ADDRESS`,
      });
    } finally {
      await server.close();
    }
  });

  it('serves tcp: addresses through Node as before', async () => {
    const probe = net.createServer();
    await listenAt(probe, { host: '127.0.0.1', port: 0 }, 16);
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const server = await startControlServer(`tcp:127.0.0.1:${port}`, echo);
    try {
      expect((await sendRequest(`tcp:127.0.0.1:${port}`, { action: 'echo', name: 'over-tcp' })).toString()).toBe('name=over-tcp\0');
    } finally {
      await server.close();
    }
  });
});

describe('clients nobody here wrote', () => {
  let server: ControlServer;
  let name: string;

  beforeAll(async () => {
    const address = nextAddress();
    name = address.slice(5);
    server = await startControlServer(address, echo);
  });

  afterAll(() => server.close());

  it('python3 connect("\\0NAME") gets nfqlb bytes', async () => {
    expect(await python(name, 'action:list-names\neoc:\n')).toBe('[]\n');
    expect(await python(name, 'action:echo\nname:x\neoc:\n', false)).toBe('name=x\0');
  });

  const socat = hasProgram('socat') ? it : it.skip;
  if (!hasProgram('socat')) process.stdout.write('control.test: socat not installed; its check is skipped\n');
  socat('socat - ABSTRACT-CONNECT:NAME gets nfqlb bytes', async () => {
    const r = await run('socat', ['-', `ABSTRACT-CONNECT:${name}`], 'action:echo\nname:via-socat\neoc:\n');
    expect(r.code).toBe(0);
    expect(r.stdout.toString('latin1')).toBe('name=via-socat\0');
  });

  it('a final eoc: without newline is answered once the client half-closes, as nfqlb (fgets at EOF)', async () => {
    expect(await python(name, 'action:echo\nname:x\neoc:')).toBe('name=x\0');
    expect(await python(name, 'action:list-names\neoc:whatever')).toBe('[]\n');
    // Cut off before eoc: no reply, as nfqlb.
    expect(await python(name, 'action:echo\nname:x\n')).toBe('');
    expect(await python(name, 'action:echo\nname:x')).toBe('');
    expect(await python(name, '')).toBe('');
    // A last line without ':' is refused like any such line.
    expect(await python(name, 'action:echo\neo')).toBe('FAIL: invalid param [eo]\0');
  });

  it('keeps request bytes 1:1 (latin1 in, latin1 out)', async () => {
    const bytes = Buffer.from([0x63, 0x61, 0x66, 0xc3, 0xa9, 0xff, 0x80, 0x01]).toString('latin1');
    expect(await python(name, `action:echo\nname:${bytes}\neoc:\n`)).toBe(`name=${bytes}\0`);
  });
});

describe('RequestParser', () => {
  /** Feeds `text` in pieces of `size` bytes; returns the parser once it is done or the input ends. */
  const parse = (text: string, size = text.length): RequestParser => {
    const p = new RequestParser();
    for (let i = 0; i < text.length && !p.push(text.slice(i, i + size)); i += size);
    return p;
  };

  it("reads nfqlb's keys up to eoc:, first value wins except priority and udpencap (last wins); unknown keys are ignored", () => {
    const p = parse('action:set\nname:a\nname:b\npriority:1\npriority:7\nudpencap:1\nudpencap:9899\nbogus:x\ntarget:t:with:colons\neoc:\nname:after\n');
    expect([p.done, p.error]).toEqual([true, null]);
    expect(p.request).toEqual({ action: 'set', name: 'a', priority: '7', udpencap: '9899', target: 't:with:colons' });
  });

  it('gives the same request whatever the chunking, down to one byte at a time', () => {
    const text = `${encodeRequest({ action: 'set', name: 'café', target: 't', protocols: 'tcp', dports: '80,443' })}`;
    const whole = parse(text).request;
    for (const size of [1, 2, 3, 7]) expect(parse(text, size).request).toEqual(whole);
  });

  it("encodeRequest writes the keys in the order of nfqlb's CLI and ends with eoc:", () => {
    expect(encodeRequest({ udpencap: '1', name: 'n', action: 'set', priority: '5' })).toBe('action:set\nname:n\npriority:5\nudpencap:1\neoc:\n');
  });

  it("refuses a line of 1024 bytes (nfqlb's 1024-byte buffer) but takes 1023, also before its newline arrives", () => {
    expect(parse(`name:${'x'.repeat(1018)}\neoc:\n`).error).toBeNull();
    expect(parse(`name:${'x'.repeat(1019)}\neoc:\n`).error).toBe('FAIL: line longer than 1023 bytes');
    const p = new RequestParser();
    expect(p.push(`name:${'x'.repeat(1100)}`)).toBe(true);
    expect(p.error).toBe('FAIL: line longer than 1023 bytes');
  });

  it('refuses a request past 16 KiB and a line without a colon (shown, cut to 64 bytes)', () => {
    const big = parse(`${'name:x\n'.repeat(3000)}eoc:\n`, 512);
    expect(big.error).toBe('FAIL: request larger than 16384 bytes');
    expect(parse(`${'z'.repeat(100)}\n`).error).toBe(`FAIL: invalid param [${'z'.repeat(64)}]`);
  });

  it('finish(): a buffered last line counts at EOF; an empty buffer or a key line is no request', () => {
    let p = new RequestParser();
    expect(p.push('action:list\neoc:')).toBe(false);
    expect(p.finish()).toBe(true);
    expect([p.error, p.request]).toEqual([null, { action: 'list' }]);
    p = new RequestParser();
    expect(p.push('action:list\n')).toBe(false);
    expect(p.finish()).toBe(false);
    p = new RequestParser();
    expect(p.push('action:list\nname:a')).toBe(false);
    expect(p.finish()).toBe(false);
    expect(p.request).toEqual({ action: 'list', name: 'a' });
  });
});

describe('names as bytes, CLI to daemon and back', () => {
  const table = `${PREFIX}-t`;
  const tableUtf8 = `${PREFIX}-tê`;
  let daemon: Daemon;
  let server: ControlServer;
  let address: string;

  beforeAll(async () => {
    createTable(table, 997, 10, 0);
    createTable(tableUtf8, 997, 10, 0);
    address = nextAddress();
    // The daemon's request handling without queues: nothing is bound but the control socket.
    daemon = new Daemon(
      {
        mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false,
        pipeline: {}, flowAddress: address, traceAddress: nextAddress(), metricsAddress: null,
      },
      createLogger(0, { write: () => undefined } as unknown as Parameters<typeof createLogger>[1]),
    );
    server = await startControlServer(address, { handle: (req) => daemon.handleControl(req) });
  });

  afterAll(async () => {
    await server.close();
    await daemon.stop();
    deleteTable(table);
    deleteTable(tableUtf8);
  });

  const cli = (words: string[]): ReturnType<typeof runInProcess> => withFlowAddress(address, () => runInProcess(words));

  it('x€ and x¬ are two flows (the CLI sends UTF-8, not latin1); café comes back as the same UTF-8 bytes', async () => {
    expect(await cli(['flow-set', '--name=x€', `--target=${table}`])).toEqual({ rc: 0, stdout: 'OK\n', stderr: '' });
    expect(await cli(['flow-set', '--name=x¬', `--target=${table}`])).toEqual({ rc: 0, stdout: 'OK\n', stderr: '' });
    expect(await cli(['flow-set', '--name=café', `--target=${tableUtf8}`])).toEqual({ rc: 0, stdout: 'OK\n', stderr: '' });
    // Held as the bytes that came: the UTF-8 of each name, one character per byte.
    expect(daemon.flows.flows.map((f) => f.name).sort()).toEqual(['x€', 'x¬', 'café'].map(textToBytes).sort());
    const names = await sendRequest(address, { action: 'list-names' });
    expect(names.includes(Buffer.from('"x€"'))).toBe(true);
    expect(names.includes(Buffer.from('"x¬"'))).toBe(true);
    expect(names.includes(Buffer.from('"café"'))).toBe(true);
    const one = await cli(['flow-list', '--name=café']);
    expect(one.rc).toBe(0);
    expect(JSON.parse(one.stdout)).toMatchObject({ name: 'café', user_ref: tableUtf8 });
    // The target's shm was opened by its UTF-8 name.
    expect(daemon.targets.list().map((t) => bytesToText(t.name)).sort()).toEqual([table, tableUtf8].sort());
    for (const n of ['x€', 'x¬', 'café']) expect(await cli(['flow-delete', `--name=${n}`])).toEqual({ rc: 0, stdout: 'OK\n', stderr: '' });
    expect((await cli(['flow-list'])).stdout).toBe('[]\n');
  });

  it('a reply with non-ASCII bytes reaches stdout as those bytes', async () => {
    const r = await cli(['flow-set', '--name=bad€', '--target=nope-€']);
    expect(r.rc).toBe(255);
    expect(r.stdout).toBe("FAIL: Couldn't create load-balancer\n");
  });
});

describe('a control socket that cannot be locked out', () => {
  it('serves a good client while 1,000 idle and 70 slow (1 byte/s) clients are connected', async () => {
    const address = nextAddress();
    const where = parseAddress(address);
    // A long deadline here: this is about the connection bound, not the deadline.
    const server = await startControlServer(address, echo, { timeoutMs: 120000 });
    const idle: net.Socket[] = [];
    const slow: net.Socket[] = [];
    let closedEarly = 0;
    let ticker: NodeJS.Timeout | null = null;
    try {
      for (let i = 0; i < 1000; i++) {
        const s = await connectTo(where, 10000);
        s.on('error', () => undefined);
        s.on('close', () => closedEarly++);
        idle.push(s);
      }
      const request = 'action:list-names\neoc:\n';
      for (let i = 0; i < 70; i++) {
        const s = await connectTo(where, 10000);
        s.on('error', () => undefined);
        s.on('close', () => closedEarly++);
        slow.push(s);
      }
      let sent = 0;
      const tick = (): void => {
        for (const s of slow) s.write(request[sent % request.length]);
        sent++;
      };
      tick();
      ticker = setInterval(tick, 1000);
      const set = await withFlowAddress(address, () => runInProcess(['flow-list']));
      expect(set).toEqual({ rc: 0, stdout: '[]\n', stderr: '' });
      const echoed = await sendRequest(address, { action: 'echo', name: 'good' });
      expect(echoed.toString()).toBe('name=good\0');
      // They were all still there while the good client was served.
      expect(closedEarly).toBe(0);
      expect(server.connections).toBeGreaterThanOrEqual(1070);
      expect(server.evicted).toBe(0);
    } finally {
      if (ticker !== null) clearInterval(ticker);
      for (const s of [...idle, ...slow]) s.destroy();
      await server.close();
    }
  });

  it('past the bound, closes the oldest unfinished connection instead of refusing the new one', async () => {
    const address = nextAddress();
    const where = parseAddress(address);
    const server = await startControlServer(address, echo, { timeoutMs: 120000, maxConnections: 20 });
    const idle: net.Socket[] = [];
    try {
      const closed: Array<Promise<Buffer>> = [];
      for (let i = 0; i < 30; i++) {
        const s = await connectTo(where, 10000);
        closed.push(received(s));
        idle.push(s);
      }
      // The first ten went to make room, without a reply.
      const firstTen = await Promise.all(closed.slice(0, 10));
      expect(firstTen.every((b) => b.length === 0)).toBe(true);
      expect((await sendRequest(address, { action: 'echo', name: 'good' })).toString()).toBe('name=good\0');
      expect(server.evicted).toBe(11);
      expect(server.connections).toBeLessThanOrEqual(20);
    } finally {
      for (const s of idle) s.destroy();
      await server.close();
    }
  });

  it('closes a connection at its deadline whatever it sends (the deadline is for the whole request)', async () => {
    const address = nextAddress();
    const where = parseAddress(address);
    const refused: string[] = [];
    const server = await startControlServer(address, { ...echo, refused: (why) => refused.push(why) }, { timeoutMs: 300 });
    try {
      const quiet = await connectTo(where, 10000);
      const trickler = await connectTo(where, 10000);
      const quietDone = received(quiet);
      const tricklerDone = received(trickler);
      let stop = false;
      const trickle = (): void => {
        if (stop || trickler.destroyed) return;
        trickler.write('x');
        setTimeout(trickle, 20);
      };
      trickle();
      expect((await quietDone).length).toBe(0);
      expect((await tricklerDone).length).toBe(0);
      stop = true;
      expect(refused).toEqual(['timeout: no complete request', 'timeout: no complete request']);
      await until(() => server.connections === 0, 'the server to drop both');
    } finally {
      await server.close();
    }
  });
});

describe('the CLI and a connection closed without a reply', () => {
  let address: string;
  let mute: net.Server;

  beforeAll(async () => {
    address = nextAddress();
    // Accepts, then closes without a word (a daemon stopping, overloaded, or timing the request out).
    mute = net.createServer((sock) => sock.destroy());
    await listenAt(mute, parseAddress(address), 16);
  });

  afterAll(() => new Promise<void>((r) => mute.close(() => r())));

  const noReply = (): string => `No reply from the load balancer at ${address}: it closed the connection; check that it runs and its log\n`;

  it.each([
    [['flow-list']],
    [['flow-list-names']],
    [['flow-list', '--name=x']],
    [['flow-set', '--name=x', '--target=t']],
    [['flow-delete', '--name=x']],
    [['trace-flow-list']],
    [['trace-flow-list-names']],
    [['trace-flow-list', '--name=x']],
    [['trace-flow-set', '--name=x']],
    [['trace-flow-delete', '--name=x']],
  ])('%j exits 255 with one line on stderr', async (words) => {
    const r = await withFlowAddress(address, () => runInProcess(words));
    const expected = words[0] === 'trace-flow-set'
      ? `No reply from the load balancer at ${address}: it closed the connection; an nfqlb 1.2.0 daemon never answers trace-flow-set although it sets the trace-flow (see trace-flow-list)\n`
      : noReply();
    expect(r).toEqual({ rc: 255, stdout: '', stderr: expected });
  });

  it('a named list of a name that does not exist still prints nothing and exits 0 (nfqlb: empty reply)', async () => {
    const live = nextAddress();
    const server = await startControlServer(live, echo);
    try {
      expect(await withFlowAddress(live, () => runInProcess(['flow-list', '--name=nope']))).toEqual({ rc: 0, stdout: '', stderr: '' });
    } finally {
      await server.close();
    }
  });
});
