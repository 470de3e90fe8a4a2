/**
 * TCP helper programs of the bench, run inside the test bed's namespaces
 * (bench/run.ts starts the compiled bench/dist/bench/tcp.js with `ip netns exec`):
 *
 *   node tcp.js echo PORT
 *       Echo server on [::]:PORT (IPv4 too): writes back what it reads.
 *   node tcp.js cps --dst=VIP --port=P --seconds=S [--concurrency=C] [--src=ADDR]
 *       New connections per second: C loops that connect, read until the
 *       server closes (the test bed's servers answer their name and close),
 *       and connect again, for S seconds. Prints JSON
 *       {completed, failed, seconds, cps, p50Ms, p99Ms} (per-connection time).
 *   node tcp.js rtt --dst=VIP --port=P --count=N [--conns=K] [--src=ADDR]
 *       Round-trip latency: K connections one after the other to an echo
 *       server, N/K one-byte ping-pongs on each (Nagle off), after 20
 *       warm-up ones. Prints JSON {samples, failed, p50Us, p90Us, p99Us, maxUs, meanUs}.
 */
import * as net from 'node:net';

type Options = Record<string, string>;

function options(argv: string[]): Options {
  const o: Options = {};
  for (const a of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (m !== null) o[m[1]] = m[2] === undefined ? 'true' : m[2];
  }
  return o;
}

/** The q-quantile of an ascending array (nearest rank). */
function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function echoMain(port: number): void {
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    sock.on('error', () => sock.destroy());
    sock.on('data', (d) => sock.write(d));
    sock.on('end', () => sock.end());
  });
  server.listen({ host: '::', port, ipv6Only: false }, () => process.stdout.write(`listening echo ${port}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

/** One connection: connect, read to the end; resolves {ok, ms}. */
function connectOnce(o: Options, timeoutMs: number): Promise<{ ok: boolean; ms: number }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let got = 0;
    let done = false;
    const sock = net.connect({ host: o.dst, port: Number(o.port), localAddress: o.src });
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ok, ms: Number(process.hrtime.bigint() - t0) / 1e6 });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('data', (d: Buffer) => {
      got += d.length;
    });
    sock.on('end', () => finish(got > 0));
    sock.on('error', () => finish(false));
  });
}

async function cpsMain(o: Options): Promise<void> {
  const seconds = Number(o.seconds || 5);
  const concurrency = Number(o.concurrency || 16);
  const end = Date.now() + seconds * 1000;
  const times: number[] = [];
  let failed = 0;
  const t0 = process.hrtime.bigint();
  const loop = async (): Promise<void> => {
    while (Date.now() < end) {
      const r = await connectOnce(o, 3000);
      if (r.ok) times.push(r.ms);
      else failed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const took = Number(process.hrtime.bigint() - t0) / 1e9;
  times.sort((a, b) => a - b);
  process.stdout.write(
    JSON.stringify({ completed: times.length, failed, seconds: took, cps: times.length / took, p50Ms: quantile(times, 0.5), p99Ms: quantile(times, 0.99) }),
  );
}

/** Ping-pongs on one connection; pushes round-trip times (µs) to `out`. */
function pingPong(o: Options, rounds: number, warmup: number, out: number[]): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: o.dst, port: Number(o.port), localAddress: o.src });
    sock.setNoDelay(true);
    let i = 0;
    let t0 = 0n;
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(false);
    }, 30000);
    const ping = (): void => {
      t0 = process.hrtime.bigint();
      sock.write('x');
    };
    sock.on('connect', ping);
    sock.on('data', () => {
      const us = Number(process.hrtime.bigint() - t0) / 1e3;
      if (i >= warmup) out.push(us);
      i++;
      if (i < rounds + warmup) ping();
      else {
        clearTimeout(timer);
        sock.end();
        resolve(true);
      }
    });
    sock.on('error', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(false);
    });
  });
}

async function rttMain(o: Options): Promise<void> {
  const count = Number(o.count || 2000);
  const conns = Number(o.conns || 8);
  const samples: number[] = [];
  let failed = 0;
  for (let c = 0; c < conns; c++) {
    if (!(await pingPong(o, Math.ceil(count / conns), 20, samples))) failed++;
  }
  const sorted = samples.slice().sort((a, b) => a - b);
  const mean = sorted.reduce((s, x) => s + x, 0) / (sorted.length || 1);
  process.stdout.write(
    JSON.stringify({
      samples: sorted.length,
      failed,
      p50Us: quantile(sorted, 0.5),
      p90Us: quantile(sorted, 0.9),
      p99Us: quantile(sorted, 0.99),
      maxUs: sorted[sorted.length - 1],
      meanUs: mean,
    }),
  );
}

const [cmd, ...rest] = process.argv.slice(2);
const o = options(rest);
switch (cmd) {
  case 'echo':
    echoMain(Number(rest[0] || 4001));
    break;
  case 'cps':
    cpsMain(o).catch((err: Error) => {
      process.stderr.write(`tcp cps: ${err.message}\n`);
      process.exitCode = 1;
    });
    break;
  case 'rtt':
    rttMain(o).catch((err: Error) => {
      process.stderr.write(`tcp rtt: ${err.message}\n`);
      process.exitCode = 1;
    });
    break;
  default:
    process.stderr.write('usage: tcp.js echo PORT | cps --dst --port --seconds | rtt --dst --port --count\n');
    process.exitCode = 2;
}
