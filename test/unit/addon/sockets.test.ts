/**
 * Stream sockets at nfqlb's addresses (src/addon/sockets.ts) on private abstract
 * names in the root namespace (no root needed): an abstract name is bound as
 * its bytes exactly (no NUL padding), bytes pass both ways, and each failure
 * (nobody listens, the name or port is taken) is a SocketError naming the
 * call and glibc's words for the errno. TCP goes through Node as is.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { NfqlbError } from '../../../src/base/errors';
import { addressText, connectTo, listenAt, SocketError, strerror, type SocketAddress } from '../../../src/addon/sockets';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-sock`;
let seq = 0;
const nextUnix = (suffix = ''): { unix: Buffer } => ({ unix: Buffer.from(`${PREFIX}-${++seq}${suffix}`, 'utf8') });

const closeServer = (server: net.Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

/** /proc/net/unix names of listening sockets with this prefix ('@' + name for an abstract one). */
const abstractNames = (): string[] =>
  fs.readFileSync('/proc/net/unix', 'utf8').split('\n').map((l) => l.trim().split(/\s+/).pop() ?? '').filter((n) => n.startsWith(`@${PREFIX}`));

/** A server that answers each connection with `reply:` and what it received, once the client half-closes. */
function echoServer(): net.Server {
  return net.createServer({ allowHalfOpen: true }, (sock) => {
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('end', () => sock.end(Buffer.concat([Buffer.from('reply:'), ...chunks])));
  });
}

async function exchange(where: SocketAddress, bytes: Buffer): Promise<Buffer> {
  const sock = await connectTo(where, 5000);
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.end(bytes);
  await closed;
  return Buffer.concat(chunks);
}

/** A TCP port on 127.0.0.1 that nobody listens on (just released). */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  await listenAt(probe, { host: '127.0.0.1', port: 0 }, 1);
  const port = (probe.address() as net.AddressInfo).port;
  await closeServer(probe);
  return port;
}

describe('strerror and addressText', () => {
  it("strerror speaks glibc's words for an errno, positive or negative", () => {
    expect(strerror(111)).toBe('Connection refused');
    expect(strerror(-111)).toBe('Connection refused');
    expect(strerror(98)).toBe('Address already in use');
    expect(strerror(11)).toBe('Resource temporarily unavailable');
    expect(strerror(99999)).toBe('Unknown error 99999');
  });

  it('writes unix names as UTF-8 text and IPv6 hosts in brackets', () => {
    expect(addressText({ unix: Buffer.from('café', 'utf8') })).toBe('unix:café');
    expect(addressText({ host: '192.0.2.1', port: 80 })).toBe('192.0.2.1:80');
    expect(addressText({ host: '2001:db8::1', port: 80 })).toBe('[2001:db8::1]:80');
  });
});

describe('abstract unix sockets', () => {
  it('listen at exactly the name bytes (no NUL padding), carry any bytes both ways, and are released at close', async () => {
    const where = nextUnix('-é');
    const server = echoServer();
    await listenAt(server, where, 16);
    try {
      expect(abstractNames()).toEqual([`@${where.unix.toString('utf8')}`]);
      const bytes = Buffer.from([0, 1, 0xff, 0x80, 0x0a, 0xc3, 0xa9]);
      expect(await exchange(where, bytes)).toEqual(Buffer.concat([Buffer.from('reply:'), bytes]));
    } finally {
      await closeServer(server);
    }
    expect(abstractNames()).toEqual([]);
  });

  it('a name that differs only by trailing NUL padding is another address', async () => {
    const where = nextUnix();
    const server = echoServer();
    await listenAt(server, where, 16);
    try {
      await expect(connectTo({ unix: Buffer.concat([where.unix, Buffer.alloc(4)]) }, 100)).rejects.toMatchObject({ syscall: 'connect', errnoName: 'ECONNREFUSED' });
    } finally {
      await closeServer(server);
    }
  });

  it('nobody listening: SocketError "connect: Connection refused" at once', async () => {
    const err = await connectTo(nextUnix(), 5000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SocketError);
    expect(err).toBeInstanceOf(NfqlbError);
    expect(err).toMatchObject({ code: 'NFQLB_ERR_SOCKET', syscall: 'connect', errnoName: 'ECONNREFUSED', message: 'connect: Connection refused', reason: 'Connection refused' });
  });

  it('a name already taken: SocketError EADDRINUSE from bind, and the first server keeps serving', async () => {
    const where = nextUnix();
    const first = echoServer();
    await listenAt(first, where, 16);
    const second = echoServer();
    try {
      await expect(listenAt(second, where, 16)).rejects.toMatchObject({
        code: 'NFQLB_ERR_SOCKET', syscall: 'bind', errnoName: 'EADDRINUSE', message: 'bind: Address already in use',
      });
      expect((await exchange(where, Buffer.from('x'))).toString()).toBe('reply:x');
    } finally {
      await closeServer(first);
    }
    expect(second.listening).toBe(false);
  });
});

describe('tcp addresses', () => {
  it('listen and connect through Node', async () => {
    const server = echoServer();
    await listenAt(server, { host: '127.0.0.1', port: 0 }, 16);
    try {
      const port = (server.address() as net.AddressInfo).port;
      expect((await exchange({ host: '127.0.0.1', port }, Buffer.from('over tcp'))).toString()).toBe('reply:over tcp');
    } finally {
      await closeServer(server);
    }
  });

  it('nobody listening: SocketError ECONNREFUSED with the same words as for unix', async () => {
    const port = await freePort();
    await expect(connectTo({ host: '127.0.0.1', port }, 5000)).rejects.toMatchObject({
      code: 'NFQLB_ERR_SOCKET', syscall: 'connect', errnoName: 'ECONNREFUSED', message: 'connect: Connection refused',
    });
  });

  it('a port already taken: SocketError EADDRINUSE', async () => {
    const first = net.createServer();
    await listenAt(first, { host: '127.0.0.1', port: 0 }, 16);
    try {
      const port = (first.address() as net.AddressInfo).port;
      await expect(listenAt(net.createServer(), { host: '127.0.0.1', port }, 16)).rejects.toMatchObject({
        code: 'NFQLB_ERR_SOCKET', errnoName: 'EADDRINUSE', message: 'listen: Address already in use',
      });
    } finally {
      await closeServer(first);
    }
  });
});

describe('SocketError.fromNode', () => {
  it('takes the errno of a Node error (negative) and its syscall; without an errno keeps the message', () => {
    const withErrno = Object.assign(new Error('connect ECONNREFUSED'), { errno: -111, code: 'ECONNREFUSED', syscall: 'connect' });
    expect(SocketError.fromNode(withErrno, 'listen')).toMatchObject({ syscall: 'connect', errnoName: 'ECONNREFUSED', message: 'connect: Connection refused' });
    const bare = Object.assign(new Error('weird'), { code: 'ERR_SOMETHING' });
    const e = SocketError.fromNode(bare, 'listen');
    expect(e).not.toBeInstanceOf(SocketError);
    expect(e).toMatchObject({ code: 'NFQLB_ERR_SOCKET', message: 'listen: weird' });
  });
});
