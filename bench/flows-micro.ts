/**
 * Flow-matching microbenchmark (npm run bench:flows; no root, no network):
 * decision time per packet with 1, 100, 1,000 and 10,000 flows, where the
 * packets' flow is the last one in priority order — once with the flow index
 * (FlowSet.lookup, what the daemon runs) and once with nfqlb's linear walk
 * (FlowSet.lookupLinear), through the whole Pipeline.decide (classify, flow
 * lookup, hash, table lookup; the table is a stand-in that returns a fwmark
 * from the hash, the same cost at every flow count).
 *
 * Flow sets (the other flows never match the packets):
 *   vips   each flow has its own VIP (/32), udp, dports 1000-1999
 *   ports  one VIP, each flow one udp port of its own
 *   ranges one VIP, each flow a udp port range of its own (10 ports)
 * Packets: 256 UDP datagrams from random sources in 198.51.100.0/24 and
 * random ports to 192.0.2.1:5000.
 *
 * Control path: the time to set 10,000 flows one flow-set at a time, one
 * per event-loop turn (as the control server receives them), each answered
 * only when the flow index follows it — then to delete them again the same
 * way — through FlowSet.applySet/applyDelete; and the time to write a flows
 * file of 10,000 flows once (the daemon rewrites it after every change).
 * Then the same flow-sets through a live daemon's control socket: a Daemon
 * with no queues (nothing bound but its sockets, on private abstract names;
 * no root), one request at a time, as nfqlb's CLI sends them; and, for
 * BENCH_FILE_FLOWS (default 1,000) flows, the same with --flows_file.
 *
 * Environment: BENCH_FLOWS_MS (time per measurement, default 400),
 * BENCH_OUT (results directory, default bench/results). Prints a table and
 * writes <date>-flows-micro.json.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connectTo } from '../src/addon/sockets';
import { createLogger } from '../src/base/log';
import { Daemon } from '../src/daemon/daemon';
import { writeFlowsFile } from '../src/daemon/flowsfile';
import { Pipeline } from '../src/datapath/pipeline';
import type { FlowCmd } from '../src/flows/fields';
import { FlowSet } from '../src/flows/flowset';
import { parseAddress } from '../src/services/control';
import { createTable, deleteTable } from '../src/tables/tablefile';
import { Target, type LookupTable } from '../src/tables/targets';
import { ROOT } from '../testbed/processes';

const COUNTS = [1, 100, 1000, 10000];
const MS = Number(process.env.BENCH_FLOWS_MS || 400);
const OUT_DIR = process.env.BENCH_OUT ? path.resolve(process.env.BENCH_OUT) : path.join(ROOT, 'bench', 'results');
const STRIDE = 64;
const NPKT = 256;
const CONTROL_FLOWS = Number(process.env.BENCH_CONTROL_FLOWS || 10000);
const FILE_FLOWS = Number(process.env.BENCH_FILE_FLOWS || 1000);

/** A target as Pipeline wants it: a table that turns a hash into one of 4 fwmarks. */
const target = new Target<LookupTable>('bench', { fwmarkOf: (h) => 1 + (h & 3) });
target.refs = 1;
const targets = { acquire: (): Target => target, release: (): void => undefined };

type Bench = FlowSet<Target>;

const SETS: Record<string, (i: number) => Omit<FlowCmd, 'name' | 'target'>> = {
  vips: (i) => ({ dsts: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`, protocols: 'udp', dports: '1000-1999' }),
  ports: (i) => ({ dsts: '192.0.2.1/32', protocols: 'udp', dports: `${10000 + i}` }),
  ranges: (i) => ({ dsts: '192.0.2.1/32', protocols: 'udp', dports: `${10000 + 5 * i}-${10000 + 5 * i + 4}` }),
};

function flowSet(kind: string, n: number): Bench {
  const set: Bench = new FlowSet({ targetName: (t) => t.name });
  // Higher priority first: the packets' flow has the lowest, so the linear walk checks it last.
  for (let i = 0; i < n - 1; i++) {
    const reply = set.applySet({ name: `f${i}`, target: 'bench', priority: n - i, ...SETS[kind](i) }, targets);
    if (reply !== 'OK') throw new Error(`flow-set f${i}: ${reply}`);
  }
  const reply = set.applySet({ name: 'last', target: 'bench', priority: 0, dsts: '192.0.2.1/32', protocols: 'udp', dports: '5000' }, targets);
  if (reply !== 'OK') throw new Error(`flow-set last: ${reply}`);
  return set;
}

function packets(): Uint8Array {
  const buf = new Uint8Array(NPKT * STRIDE);
  let seed = 12345;
  const rnd = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed >>> 8;
  };
  for (let p = 0; p < NPKT; p++) {
    const o = p * STRIDE;
    const sport = 1024 + (rnd() % 60000);
    buf.set([0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, rnd() & 255, 192, 0, 2, 1], o);
    buf.set([sport >> 8, sport & 255, 5000 >> 8, 5000 & 255, 0, 12, 0, 0, 1, 2, 3, 4], o + 20);
  }
  return buf;
}

/** ns per decision, best of 3 runs of MS each (best: least disturbed by the other processes on the machine). */
function measure(pipeline: Pipeline, buf: Uint8Array): number {
  let best = Infinity;
  for (let run = 0; run < 3; run++) {
    let n = 0;
    const t0 = process.hrtime.bigint();
    const until = t0 + BigInt(MS) * 1000000n;
    let t = t0;
    while (t < until) {
      for (let p = 0; p < NPKT; p++) {
        if (pipeline.decide(buf, p * STRIDE, 32, 0) < 0) throw new Error('packet not decided by a target');
      }
      n += NPKT;
      t = process.hrtime.bigint();
    }
    best = Math.min(best, Number(t - t0) / n);
  }
  return best;
}

/** ms to set (then delete) CONTROL_FLOWS flows one per event-loop turn. */
interface ControlResult {
  flows: number;
  setMs: number;
  deleteMs: number;
  flowsFileWriteMs: number | null;
  daemonSetMs?: number;
  fileFlows?: number;
  daemonSetWithFileMs?: number;
}

async function controlPath(): Promise<ControlResult> {
  const set: Bench = new FlowSet({ targetName: (t) => t.name });
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CONTROL_FLOWS; i++) {
    // Spread priorities with ties, and the udpencap pair of flows now and then.
    const encap = i % 50 === 0;
    const cmd: FlowCmd = { name: `c${i}`, target: 'bench', priority: i % 100, dsts: `10.${(i >> 8) & 255}.${i & 255}.0/24`, protocols: encap ? 'sctp' : 'udp' };
    const reply = set.applySet(encap ? { ...cmd, udpencap: 9899 } : { ...cmd, dports: `${1000 + (i % 5000)}` }, targets);
    if (reply !== 'OK') throw new Error(`flow-set c${i}: ${reply}`);
    await turn();
  }
  const t1 = process.hrtime.bigint();
  for (let i = 0; i < CONTROL_FLOWS; i++) {
    set.applyDelete(`c${(i * 7919) % CONTROL_FLOWS}`, targets);
    await turn();
  }
  const t2 = process.hrtime.bigint();
  if (set.size !== 0) throw new Error(`${set.size} flows left after deleting them all`);
  let fileMs: number | null = null;
  try {
    const flows = Array.from({ length: CONTROL_FLOWS }, (_, i) => ({ name: `c${i}`, target: 'bench', priority: `${i % 100}`, dsts: `10.${(i >> 8) & 255}.${i & 255}.0/24`, protocols: 'udp', dports: `${1000 + (i % 5000)}` }));
    const file = path.join(os.tmpdir(), `bench-flows-${process.pid}-${Math.random().toString(36).slice(2)}.json`);
    const t3 = process.hrtime.bigint();
    writeFlowsFile(file, { flows, traceFlows: [] });
    fileMs = Number(process.hrtime.bigint() - t3) / 1e6;
    fs.unlinkSync(file);
  } catch (err) {
    process.stdout.write(`flows file write not measured: ${(err as Error).message}\n`);
  }
  return { flows: CONTROL_FLOWS, setMs: Number(t1 - t0) / 1e6, deleteMs: Number(t2 - t1) / 1e6, flowsFileWriteMs: fileMs };
}

/** ms for `count` flow-sets one request at a time over a no-queue daemon's control socket (flowsFile: with --flows_file). */
async function liveDaemon(count: number, withFile: boolean): Promise<number> {
  const prefix = `nfqlbts-bench-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const table = `${prefix}-tshm`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  createTable(table, 997, 32, 0);
  const log = createLogger(0, { write: () => undefined });
  const daemon = new Daemon(
    {
      mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false, pipeline: {},
      flowAddress: `unix:${prefix}-flow`, traceAddress: `unix:${prefix}-trace`, metricsAddress: null, tableCheckMs: 0,
      ...(withFile ? { flowsFile: path.join(dir, 'flows.json') } : {}),
    },
    log,
  );
  const address = parseAddress(`unix:${prefix}-flow`);
  const send = async (text: string): Promise<string> => {
    const sock = await connectTo(address, 10000);
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    sock.end(text, 'latin1');
    await closed;
    return Buffer.concat(chunks).toString('latin1');
  };
  await daemon.start();
  try {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      const reply = await send(`action:set\nname:c${i}\ntarget:${table}\npriority:${i % 100}\nprotocols:udp\ndsts:10.${(i >> 8) & 255}.${i & 255}.0/24\ndports:${1000 + (i % 5000)}\neoc:\n`);
      if (reply !== 'OK\0') throw new Error(`flow-set c${i}: ${JSON.stringify(reply)}`);
    }
    return Number(process.hrtime.bigint() - t0) / 1e6;
  } finally {
    await daemon.stop();
    deleteTable(table);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const buf = packets();
  const rows: Array<{ set: string; flows: number; nsIndex: number; nsLinear: number }> = [];
  const control = await controlPath();
  try {
    const daemonSetMs = await liveDaemon(CONTROL_FLOWS, false);
    control.daemonSetMs = daemonSetMs;
    control.fileFlows = FILE_FLOWS;
    const daemonSetWithFileMs = await liveDaemon(FILE_FLOWS, true);
    control.daemonSetWithFileMs = daemonSetWithFileMs;
    process.stdout.write(`daemon: ${CONTROL_FLOWS} flow-sets over the control socket ${daemonSetMs.toFixed(0)} ms; ${FILE_FLOWS} with --flows_file ${daemonSetWithFileMs.toFixed(0)} ms\n`);
  } catch (err) {
    process.stdout.write(`live daemon not measured: ${(err as Error).message}\n`);
  }
  process.stdout.write(`control: ${control.flows} flow-sets one per turn ${control.setMs.toFixed(0)} ms, ${control.flows} flow-deletes ${control.deleteMs.toFixed(0)} ms; one flows file write of ${control.flows} flows ${control.flowsFileWriteMs === null ? '-' : control.flowsFileWriteMs.toFixed(1)} ms\n`);
  for (const kind of Object.keys(SETS)) {
    for (const n of COUNTS) {
      const set = flowSet(kind, n);
      // Sets above FlowIndex's synchronous limit are indexed after the current turn.
      await new Promise<void>((resolve) => setImmediate(resolve));
      const indexed = new Pipeline(set, {});
      const nsIndex = measure(indexed, buf);
      if (set.get('last')?.matches === 0) throw new Error('the packets did not reach the last flow');
      const linearSet = flowSet(kind, n);
      linearSet.lookup = linearSet.lookupLinear; // the reference walk, for comparison
      const nsLinear = measure(new Pipeline(linearSet, {}), buf);
      rows.push({ set: kind, flows: n, nsIndex, nsLinear });
      process.stdout.write(`${kind.padEnd(7)} ${String(n).padStart(6)} flows: index ${nsIndex.toFixed(0).padStart(7)} ns/packet, linear ${nsLinear.toFixed(0).padStart(9)} ns/packet\n`);
    }
    const one = rows.find((r) => r.set === kind && r.flows === 1)?.nsIndex ?? NaN;
    const most = rows.find((r) => r.set === kind && r.flows === COUNTS[COUNTS.length - 1])?.nsIndex ?? NaN;
    process.stdout.write(`${kind.padEnd(7)} index: ${COUNTS[COUNTS.length - 1]} flows / 1 flow = ${(most / one).toFixed(2)}\n`);
  }
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 13);
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${stamp.slice(0, 4)}-${stamp.slice(4, 6)}-${stamp.slice(6, 8)}-${stamp.slice(9)}-flows-micro.json`);
  fs.writeFileSync(file, `${JSON.stringify({ node: process.version, msPerRun: MS, packets: NPKT, control, rows }, null, 2)}\n`);
  process.stdout.write(`results: ${path.relative(ROOT, file)}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`bench:flows: ${err.stack || err}\n`);
  process.exit(1);
});
