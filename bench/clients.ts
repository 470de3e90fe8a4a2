/**
 * Clients the comparison bench (bench/run.ts) runs in the LB namespace
 * (compiled: bench/dist/bench/clients.js),
 * beside a daemon. Two modes:
 *
 *   node clients.js flows --address=unix:NAME --count=N --target=SHM
 *        --dsts=CIDR[,CIDR] --dport-base=P --prio-base=B --prefix=NAME [--concurrency=64]
 *     Sets N flows (udp, dport P+i, priority B+i) through the control
 *     socket with raw requests (a Node.js CLI per flow would take minutes),
 *     then prints one JSON line: { count, failed, ms, firstError }.
 *
 *   node clients.js beside [--metrics-port=P --scrapers=3]
 *        [--trace=unix:NAME --trace-clients=16] [--control=unix:NAME --idle=1000]
 *     Until SIGTERM: `scrapers` clients GET /metrics one after the other
 *     without pause; `trace-clients` connections stay attached to the trace
 *     server (connected again when closed); `idle` connections to the control
 *     socket are kept open and send nothing (a server that closes them gets
 *     them back at once: nfqlb-ts closes a connection 2 s after accept).
 *     Prints `ready` once the connections are made (or after 5 s), and one
 *     JSON line of counts on SIGTERM.
 *
 * The trace mask is left alone (/dev/shm/nfqlb-trace is shared by every
 * daemon on the machine), so the trace clients receive nothing: they cost
 * what an attached client costs, not what tracing costs.
 */
import type { Socket } from 'node:net';
// nfqlb's abstract addresses are NUL + name with the exact length (Node's net pads them to 108 bytes): the project's own connect.
import { connectTo } from '../src/addon/sockets';
import { parseAddress } from '../src/services/control';

const [mode, ...rest] = process.argv.slice(2);
const opt: Record<string, string> = Object.fromEntries(
  rest.map((a) => /^--([a-z-]+)(?:=(.*))?$/.exec(a)).filter((m): m is RegExpExecArray => m !== null).map((m) => [m[1], m[2] ?? 'true']),
);

/** A connected socket to nfqlb's `unix:NAME` or `tcp:HOST:PORT` address (rejects when nobody listens). */
function connect(address: string): Promise<Socket> {
  return connectTo(parseAddress(address), 5000);
}

/** One control request (nfqlb's `key:value` lines, `eoc:`); resolves with the reply text. */
function request(address: string, fields: Record<string, string>): Promise<string> {
  return connect(address).then(
    (sock) =>
      new Promise<string>((resolve) => {
        const chunks: Buffer[] = [];
        sock.setTimeout(15000, () => sock.destroy(new Error('timeout')));
        sock.write(`${Object.entries(fields).map(([k, v]) => `${k}:${v}\n`).join('')}eoc:\n`);
        sock.on('data', (c: Buffer) => chunks.push(c));
        sock.on('error', (err: Error) => resolve(`error: ${err.message}`));
        sock.on('close', () => resolve(Buffer.concat(chunks).toString('latin1').replace(/\0$/, '')));
      }),
    (err: Error) => `error: ${err.message}`,
  );
}

async function flows(): Promise<void> {
  const count = Number(opt.count);
  const base = Number(opt['dport-base']);
  const prio = Number(opt['prio-base']);
  const concurrency = Number(opt.concurrency ?? 64);
  let next = 0;
  let failed = 0;
  let firstError: string | null = null;
  const t0 = Date.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const reply = await request(opt.address, {
        action: 'set',
        name: `${opt.prefix}${i}`,
        target: opt.target,
        priority: String(prio + i),
        protocols: 'udp',
        dsts: opt.dsts,
        dports: String(base + i),
      });
      if (!reply.startsWith('OK')) {
        failed++;
        firstError = firstError ?? reply;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  process.stdout.write(`${JSON.stringify({ count, failed, ms: Date.now() - t0, firstError })}\n`);
}

async function beside(): Promise<void> {
  let stopping = false;
  const stats = {
    scrapes: 0,
    scrapeFailures: 0,
    scrapeBytes: 0,
    scrapeMs: [] as number[],
    traceConnects: 0,
    traceCloses: 0,
    traceBytes: 0,
    traceOpen: 0,
    idleConnects: 0,
    idleCloses: 0,
    idleErrors: 0,
    idleOpen: 0,
  };
  const pending: Array<Promise<void>> = [];
  // Scrapers: each one GET after the other, no pause.
  const scrapers = Number(opt['metrics-port'] ? opt.scrapers ?? 3 : 0);
  const scraper = async (): Promise<void> => {
    while (!stopping) {
      const t0 = Date.now();
      try {
        const r = await fetch(`http://127.0.0.1:${opt['metrics-port']}/metrics`);
        const text = await r.text();
        if (r.status === 200) {
          stats.scrapes++;
          stats.scrapeBytes += text.length;
          if (stats.scrapeMs.length < 10000) stats.scrapeMs.push(Date.now() - t0);
        } else stats.scrapeFailures++;
      } catch {
        stats.scrapeFailures++;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  // A connection kept open: made again when it closes (after a short pause on errors, so a refusing server is not hammered).
  const keep = (address: string, onOpen: () => void, onData: (n: number) => void, onClose: () => void, onError: () => void): void => {
    let first = true;
    let firstDone: () => void = () => undefined;
    pending.push(new Promise<void>((r) => (firstDone = r)));
    const settleFirst = (): void => {
      if (first) {
        first = false;
        firstDone();
      }
    };
    const again = (): void => {
      if (stopping) return;
      connect(address).then(
        (sock) => {
          onOpen();
          settleFirst();
          sock.on('data', (c: Buffer) => onData(c.length));
          sock.on('error', () => onError());
          sock.on('close', () => {
            onClose();
            setImmediate(again);
          });
          if (stopping) sock.destroy();
        },
        () => {
          onError();
          settleFirst();
          setTimeout(again, 100);
        },
      );
    };
    again();
  };
  const traceClients = opt.trace ? Number(opt['trace-clients'] ?? 16) : 0;
  for (let i = 0; i < traceClients; i++) {
    keep(
      opt.trace,
      () => {
        stats.traceConnects++;
        stats.traceOpen++;
      },
      (n) => (stats.traceBytes += n),
      () => {
        stats.traceCloses++;
        stats.traceOpen--;
      },
      () => undefined,
    );
  }
  const idle = opt.control ? Number(opt.idle ?? 1000) : 0;
  for (let i = 0; i < idle; i++) {
    keep(
      opt.control,
      () => {
        stats.idleConnects++;
        stats.idleOpen++;
      },
      () => undefined,
      () => {
        stats.idleCloses++;
        stats.idleOpen--;
      },
      () => stats.idleErrors++,
    );
  }
  const running = Array.from({ length: scrapers }, scraper);
  await Promise.race([Promise.all(pending), new Promise((r) => setTimeout(r, 5000))]);
  process.stdout.write('ready\n');
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  stopping = true;
  const openAtEnd = { trace: stats.traceOpen, idle: stats.idleOpen };
  await Promise.race([Promise.all(running), new Promise((r) => setTimeout(r, 2000))]);
  const ms = stats.scrapeMs.sort((a, b) => a - b);
  const out = { ...stats, scrapeMs: undefined, scrapeMsMedian: ms.length ? ms[Math.floor(ms.length / 2)] : null, scrapeMsMax: ms.length ? ms[ms.length - 1] : null, openAtEnd };
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0));
}

if (mode === 'flows') {
  flows().catch((err: Error) => {
    process.stderr.write(`clients.js flows: ${err.stack}\n`);
    process.exit(1);
  });
} else if (mode === 'beside') {
  beside().catch((err: Error) => {
    process.stderr.write(`clients.js beside: ${err.stack}\n`);
    process.exit(1);
  });
} else {
  process.stderr.write('usage: node clients.js flows|beside --option=value ...\n');
  process.exit(2);
}
