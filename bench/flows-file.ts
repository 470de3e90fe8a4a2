/**
 * The cost of --flows_file per change (npm run bench:flows-file; no root):
 * a live Daemon with no queues (only its sockets, on private abstract names)
 * and --flows_file in a temporary directory of BENCH_DIR (default os.tmpdir();
 * give a directory on the disk you care about — tmpfs makes fsync free),
 * preloaded with 10 and with 10,000 flows (a flows file in nfqlb-ts-flows/1,
 * the single-document format, which the daemon reads at start), then
 * BENCH_SETS (default 500) flow-sets one request at a time as nfqlb's CLI
 * sends them, each re-setting a random existing flow with other ports. Time
 * per flow-set is from connect to the daemon closing after its reply (the
 * reply comes after the change is on disk). Also: how long the start took
 * (reading and restoring the file). BENCH_NO_FILE=1: the same, but nothing
 * is written per change after the start (the baseline without the file).
 *
 * BENCH_FILL=N first sets N new flows one at a time on an empty file and
 * prints the total time and that of the last 45% (the "last 4,500 of
 * 10,000").
 *
 * Prints median and p99 per flow count and writes
 * <date>-flows-file.json to BENCH_OUT (default bench/results).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connectTo } from '../src/addon/sockets';
import { createLogger } from '../src/base/log';
import { Daemon, type DaemonOptions } from '../src/daemon/daemon';
import { parseAddress } from '../src/services/control';
import { createTable, deleteTable } from '../src/tables/tablefile';
import { ROOT } from '../testbed/processes';

const COUNTS = (process.env.BENCH_COUNTS || '10,10000').split(',').map(Number);
const SETS = Number(process.env.BENCH_SETS || 500);
const BASE = process.env.BENCH_DIR || os.tmpdir();
const OUT_DIR = process.env.BENCH_OUT ? path.resolve(process.env.BENCH_OUT) : path.join(ROOT, 'bench', 'results');
const PREFIX = `nfqlbts-bench-${process.pid}`;
const TABLE = `${PREFIX}-t`;

async function request(address: string, text: string): Promise<string> {
  const sock = await connectTo(parseAddress(address), 10000);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', reject);
    sock.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    sock.end(text, 'latin1');
  });
}

const flowFields = (i: number, port: number): { name: string; target: string; protocols: string; dsts: string; dports: string } => ({ name: `f${i}`, target: TABLE, protocols: 'tcp', dsts: '192.0.2.1/32', dports: `${port}` });

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function measure(count: number): Promise<Record<string, number>> {
  const dir = fs.mkdtempSync(path.join(BASE, `${PREFIX}-`));
  const file = path.join(dir, 'flows.json');
  const flows: Array<ReturnType<typeof flowFields>> = [];
  for (let i = 0; i < count; i++) flows.push(flowFields(i, 1000 + (i % 60000)));
  fs.writeFileSync(file, JSON.stringify({ format: 'nfqlb-ts-flows/1', flows, traceFlows: [] }));
  const log = createLogger(0, { write: () => undefined });
  const options: DaemonOptions = {
    mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false,
    pipeline: {}, flowAddress: `unix:${PREFIX}-c${count}`, traceAddress: `unix:${PREFIX}-tr${count}`, metricsAddress: null, tableCheckMs: 0,
    flowsFile: file,
  };
  const daemon = new Daemon(options, log);
  const t0 = process.hrtime.bigint();
  await daemon.start();
  const startMs = Number(process.hrtime.bigint() - t0) / 1e6;
  // BENCH_NO_FILE=1: the same daemon and flows, nothing written per change (the baseline).
  if (process.env.BENCH_NO_FILE === '1') daemon.flowsJournal = null;
  const times: number[] = [];
  let failed = 0;
  try {
    for (let k = 0; k < SETS; k++) {
      const f = flowFields(Math.floor(Math.random() * count), 2000 + k);
      const text = `action:set\nname:${f.name}\ntarget:${f.target}\nprotocols:${f.protocols}\ndsts:${f.dsts}\ndports:${f.dports}\neoc:\n`;
      const s = process.hrtime.bigint();
      const reply = await request(options.flowAddress, text);
      times.push(Number(process.hrtime.bigint() - s) / 1e6);
      if (reply !== 'OK\0') failed++;
    }
  } finally {
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  times.sort((a, b) => a - b);
  return { flows: count, sets: SETS, failed, medianMs: quantile(times, 0.5), p99Ms: quantile(times, 0.99), maxMs: times[times.length - 1], startMs, errors: daemon.flowsFileErrors };
}

/** From an empty file, BENCH_FILL new flows one flow-set at a time: the total, and the time of the last 45%. */
async function fill(count: number): Promise<{ flows: number; totalS: number; lastS: number; last: number }> {
  const dir = fs.mkdtempSync(path.join(BASE, `${PREFIX}-`));
  const file = path.join(dir, 'flows.json');
  const log = createLogger(0, { write: () => undefined });
  const options: DaemonOptions = {
    mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false,
    pipeline: {}, flowAddress: `unix:${PREFIX}-fill`, traceAddress: `unix:${PREFIX}-filltr`, metricsAddress: null, tableCheckMs: 0,
    flowsFile: file,
  };
  const daemon = new Daemon(options, log);
  await daemon.start();
  const tail = Math.floor(count * 0.55);
  let tailStart = 0n;
  const t0 = process.hrtime.bigint();
  try {
    for (let i = 0; i < count; i++) {
      if (i === tail) tailStart = process.hrtime.bigint();
      const f = flowFields(i, 1000 + (i % 60000));
      const reply = await request(options.flowAddress, `action:set\nname:${f.name}\ntarget:${f.target}\nprotocols:${f.protocols}\ndsts:${f.dsts}\ndports:${f.dports}\neoc:\n`);
      if (reply !== 'OK\0') throw new Error(`flow-set ${i}: ${reply}`);
    }
  } finally {
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const end = process.hrtime.bigint();
  return { flows: count, totalS: Number(end - t0) / 1e9, lastS: Number(end - tailStart) / 1e9, last: count - tail };
}

async function main(): Promise<void> {
  createTable(TABLE, 997, 32, 0);
  const results: Array<Record<string, number>> = [];
  try {
    const fillCount = Number(process.env.BENCH_FILL || 0);
    if (fillCount > 0) {
      const r = await fill(fillCount);
      results.push(r);
      process.stdout.write(`fill: ${r.flows} new flows one flow-set at a time from an empty file: ${r.totalS.toFixed(1)} s, the last ${r.last}: ${r.lastS.toFixed(1)} s\n`);
    }
    for (const count of COUNTS) {
      const r = await measure(count);
      results.push(r);
      process.stdout.write(
        `${String(r.flows).padStart(6)} flows: flow-set median ${r.medianMs.toFixed(3)} ms, p99 ${r.p99Ms.toFixed(3)} ms, max ${r.maxMs.toFixed(1)} ms` +
          ` (${r.sets} sets, ${r.failed} failed, ${r.errors} write errors); start ${r.startMs.toFixed(0)} ms\n`,
      );
    }
  } finally {
    deleteTable(TABLE);
  }
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const stamp = new Date().toISOString().slice(0, 16).replace('T', '-').replace(':', '');
  const out = path.join(OUT_DIR, `${stamp}-flows-file.json`);
  fs.writeFileSync(out, `${JSON.stringify({ dir: BASE, node: process.version, results }, null, 1)}\n`);
  process.stdout.write(`written: ${path.relative(process.cwd(), out)}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`bench:flows-file: ${err.stack}\n`);
  process.exit(1);
});
