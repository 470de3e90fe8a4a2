/**
 * seqload: UDP load whose every datagram carries a sequence number, for
 * test/e2e/config-under-load.test.ts. Runs in the gateway namespace:
 *
 *   node testbed/dist/testbed/seqload.js --dst=192.0.2.1 --port=5002 \
 *     --srcs=198.51.100.10-41 --sports=40000-40007 --rate=50000
 *
 * One connected UDP socket per (source address, source port); datagrams go
 * round-robin over them, so they spread over the queues of a
 * `--queue-balance` (the kernel hashes the addresses) and over the targets
 * (the daemon hashes the 5-tuple). Payload: "NQSQ", then the sequence number
 * (u32, big endian), from 0 up. Paced to --rate on a 1 ms timer: at most a
 * millisecond's worth of datagrams back to back.
 *
 * stdin, one command a line:
 *   seq   prints "seq N": N is the last sequence number handed to the kernel
 *         (-1 before the first). Asked after a change was acknowledged, every
 *         datagram numbered above N left after the acknowledgement.
 *   stop  stops, prints {"sent","seconds","pps","sendErrors"} and exits.
 * Prints "ready" once its sockets are bound and the first datagram is sent.
 */
import * as dgram from 'node:dgram';
import * as readline from 'node:readline';

export const SEQ_MAGIC = 0x4e515351; // "NQSQ"
export const SEQ_PAYLOAD_BYTES = 8;

function range(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let v = a; v <= (b ?? a); v++) out.push(v);
  }
  return out;
}

/** "198.51.100.10-41" -> 198.51.100.10 ... 198.51.100.41 (last octet ranges only). */
function addresses(text: string): string[] {
  const m = /^(\d+\.\d+\.\d+\.)(.+)$/.exec(text);
  if (m === null) throw new Error(`--srcs: expected A.B.C.X-Y, got ${text}`);
  return range(m[2]).map((x) => `${m[1]}${x}`);
}

async function main(): Promise<void> {
  const o: Record<string, string> = {};
  for (const a of process.argv.slice(2)) {
    const m = /^--([a-z]+)=(.*)$/.exec(a);
    if (m !== null) o[m[1]] = m[2];
  }
  const rate = Number(o.rate ?? 50000);
  const port = Number(o.port);
  const socks: dgram.Socket[] = [];
  for (const src of addresses(o.srcs)) {
    for (const sport of range(o.sports)) {
      const s = dgram.createSocket('udp4');
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind({ address: src, port: sport }, () => s.connect(port, o.dst, () => resolve()));
      });
      socks.push(s);
    }
  }
  let seq = 0;
  let sendErrors = 0;
  const onSent = (err: Error | null): void => {
    if (err !== null) sendErrors++;
  };
  const sendOne = (): void => {
    const b = Buffer.allocUnsafe(SEQ_PAYLOAD_BYTES);
    b.writeUInt32BE(SEQ_MAGIC, 0);
    b.writeUInt32BE(seq, 4);
    socks[seq % socks.length].send(b, onSent);
    seq++;
  };
  const t0 = process.hrtime.bigint();
  const elapsed = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = (): void => {
    if (stopped) return;
    // After a stall of this process the debt is paid at most 5 ms worth per tick, not in one long burst.
    const due = Math.min(Math.floor(elapsed() * rate), seq + Math.ceil(rate / 200));
    while (seq < due) sendOne();
    timer = setTimeout(tick, 1);
  };
  sendOne();
  process.stdout.write('ready\n');
  tick();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line === 'seq') process.stdout.write(`seq ${seq - 1}\n`);
    else if (line === 'stop') {
      stopped = true;
      clearTimeout(timer);
      const seconds = elapsed();
      process.stdout.write(`${JSON.stringify({ sent: seq, seconds, pps: seq / seconds, sendErrors })}\n`);
      for (const s of socks) s.close();
      rl.close();
    }
  });
}

if (require.main === module) {
  main().catch((err: Error) => {
    process.stderr.write(`seqload: ${err.message}\n`);
    process.exitCode = 1;
  });
}
