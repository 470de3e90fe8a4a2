/**
 * The helper programs the test bed runs inside namespaces (TCP server, TCP
 * client, UDP sender, raw control-socket client): the command line of the
 * compiled test bed, `node testbed/dist/testbed/testbed.js <server|client|udp|raw> ...`
 * (TESTBED_JS), so they need `npx tsc -p testbed` (done by scripts/setup.sh).
 */
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { sleep } from './netns';
import type { ConnectResult } from './topology';

function options(argv: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (const a of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (m !== null) o[m[1]] = m[2] ?? 'true';
  }
  return o;
}

/** "20000-20003,35000" -> [20000, 20001, 20002, 20003, 35000] */
function portList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    if (part === '') continue;
    const [a, b] = part.split('-').map(Number);
    for (let p = a; p <= (b ?? a); p++) out.push(p);
  }
  return out;
}

/** server NAME PORT: answers every connection with NAME\n and closes (server closes first: no TIME_WAIT at the client). */
function serverMain(name: string, port: number): void {
  const server = net.createServer((sock) => {
    sock.on('error', () => sock.destroy());
    sock.end(`${name}\n`);
  });
  server.listen({ host: '::', port, ipv6Only: false }, () => process.stdout.write(`listening ${name} ${port}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

function connectOnce(dst: string, port: number, src: string | undefined, sport: number, timeoutMs: number): Promise<ConnectResult> {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const sock = net.connect({ host: dst, port, localAddress: src, localPort: sport });
    const finish = (target: string | null, error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(error === undefined ? { sport, target } : { sport, target, error });
    };
    const timer = setTimeout(() => finish(null, 'timeout'), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      data += d;
    });
    sock.on('end', () => {
      const name = data.trim();
      finish(name === '' ? null : name, name === '' ? 'empty' : undefined);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(null, e.code ?? e.message));
  });
}

/** client --dst --port --sports=LIST [--src] [--concurrency] [--timeout]: prints a JSON array of ConnectResult. */
async function clientMain(o: Record<string, string>): Promise<void> {
  const sports = portList(o.sports ?? '');
  const results: ConnectResult[] = new Array(sports.length);
  const concurrency = Math.max(1, Number(o.concurrency ?? 32));
  const timeoutMs = Number(o.timeout ?? 4000);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < sports.length) {
      const i = next++;
      results[i] = await connectOnce(o.dst, Number(o.port), o.src, sports[i], timeoutMs);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, sports.length) }, worker));
  process.stdout.write(JSON.stringify(results));
}

/** udp --dst --port --count [--src] [--sport]: sends count datagrams, 1 ms apart. */
async function udpMain(o: Record<string, string>): Promise<void> {
  const v6 = o.dst.includes(':');
  const sock = dgram.createSocket(v6 ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => sock.bind({ address: o.src, port: Number(o.sport ?? 0) }, () => resolve()));
  const count = Number(o.count ?? 1);
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve, reject) => sock.send(`datagram ${i}\n`, Number(o.port), o.dst, (err) => (err ? reject(err) : resolve())));
    await sleep(1);
  }
  sock.close();
}

/**
 * raw --address=unix:NAME|tcp:H:P [--chunk=N --delay=MS] [--leave] [--wait=MS]:
 * a control-socket client that sends stdin byte for byte (in chunks of N
 * bytes, MS apart), never half-closes, and prints {"reply": hex, "text",
 * "ms", "closed", "closedAt"} once the server closes (or after --wait ms,
 * closed=false); closedAt is the wall-clock time of the close (ms).
 * --leave: close right after sending.
 */
async function rawMain(o: Record<string, string>): Promise<void> {
  const input = fs.readFileSync(0);
  const addr = o.address ?? 'unix:nfqlb';
  let where: { unix: Buffer } | { host: string; port: number };
  if (addr.startsWith('unix:')) where = { unix: Buffer.from(addr.slice(5)) };
  else {
    const m = /^tcp:(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(addr);
    if (m === null) throw new Error(`bad address ${addr}`);
    where = { host: m[1] ?? m[2], port: Number(m[3]) };
  }
  const chunk = Number(o.chunk ?? input.length) || 1;
  const delay = Number(o.delay ?? 0);
  const waitMs = Number(o.wait ?? 15000);
  const t0 = Date.now();
  // Connected as nfqlb does (unpadded abstract name; src/addon/sockets.ts, loaded only here: it
  // loads the native addon); a full listen backlog (EAGAIN) is retried for up to 5 s, never the request.
  const { connectTo } = await import('../src/addon/sockets');
  const sock = await connectTo(where, 5000);
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  let closedAt = 0;
  const closed = new Promise<boolean>((resolve) => {
    sock.on('close', () => {
      closedAt = Date.now();
      resolve(true);
    });
    sock.on('error', () => undefined);
    setTimeout(() => resolve(false), waitMs).unref();
  });
  for (let off = 0; off < input.length; off += chunk) {
    sock.write(input.subarray(off, off + chunk));
    if (delay > 0) await sleep(delay);
  }
  if (o.leave === 'true') {
    sock.destroy();
    process.stdout.write(JSON.stringify({ left: true }));
    return;
  }
  const wasClosed = await closed;
  const reply = Buffer.concat(chunks);
  process.stdout.write(JSON.stringify({ reply: reply.toString('hex'), text: reply.toString('latin1'), ms: Date.now() - t0, closed: wasClosed, closedAt }));
  sock.destroy();
}

/** Runs the helper program named by argv[0] with the options that follow. */
export async function helperMain(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const o = options(rest);
  switch (cmd) {
    case 'server':
      serverMain(rest[0], Number(rest[1] ?? 4000));
      return;
    case 'client':
      return clientMain(o);
    case 'udp':
      return udpMain(o);
    case 'raw':
      return rawMain(o);
    default:
      process.stderr.write('usage: testbed.js server NAME PORT | client --dst --port --sports | udp --dst --port --count | raw --address\n');
      process.exitCode = 2;
  }
}
